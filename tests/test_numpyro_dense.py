"""``dense_mass=True`` in high dimension (issue 14, case 2; ``esh_math.md`` §7.4).

The target is a 100-D Gaussian with a random rotation and eigenvalues ``logspace(-2, 2)``.
Before the dense metric kept its diagonal below ``2d`` window draws, the first windows'
estimates were rank-deficient, the whitened frame was 1000 times too wide in the unseen
directions and the isokinetic kernels never crossed them: AdjustedESH R-hat 3.2, ESH 6.5
(4 chains, 1000 + 1000), and TunedHMC ran at about 410 gradients per draw. The test runs
1000 warmup iterations (enough for a 200-draw window, 2d) and 500 draws, 1000 for ``ESH``:
its min ESS is about 0.2 per draw here against 0.6 for the others, and with 500 draws its
max R-hat over the 100 directions was 1.03.

Checks, on the coordinates along the eigenvectors: split R-hat below 1.05, every variance
within ``N_SE`` Monte Carlo standard errors of its eigenvalue (ESS of ``z^2`` over the
chains; ``ESH`` gets its documented discretisation allowance on second moments), and for
``TunedHMC`` fewer than 100 gradients per sampling draw (NumPyro's NUTS takes about 14).
"""

import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

from esh_kernels.numpyro import ESH, AdjustedESH, TunedHMC

D = 100
N_SE = 5.0
ESH_VAR_BIAS = 0.03  # relative, on second moments (as in test_numpyro_statistics.py)
MAX_GRADIENTS_PER_DRAW = 100.0


@pytest.mark.slow
@pytest.mark.parametrize("kernel_cls, num_samples", [(AdjustedESH, 500), (ESH, 1000), (TunedHMC, 500)],
                         ids=["AdjustedESH", "ESH", "TunedHMC"])
def test_dense_metric_rotated_gaussian_100d(jax_x64, kernel_cls, num_samples):
    import numpyro
    import numpyro.distributions as dist
    from jax import random
    from numpyro.infer import MCMC

    jnp = jax_x64
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    eigs = np.logspace(-2, 2, D)
    scale_tril = np.linalg.cholesky((q * eigs) @ q.T)

    def model():
        numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(D), scale_tril=jnp.asarray(scale_tril)))

    mcmc = MCMC(kernel_cls(model, dense_mass=True), num_warmup=1000, num_samples=num_samples,
                num_chains=4, chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(0), extra_fields=("n_steps",))
    z = np.asarray(mcmc.get_samples(group_by_chain=True)["x"]) @ q  # (chains, draws, D)

    rhat = split_gelman_rubin(z)
    assert rhat.max() < 1.05, f"max split R-hat {rhat.max():.3f}"
    f = z**2
    estimate = f.mean(axis=(0, 1))
    se = f.std(axis=(0, 1)) / np.sqrt(effective_sample_size(f))
    bias = ESH_VAR_BIAS * eigs if kernel_cls is ESH else 0.0
    excess = np.abs(estimate - eigs) - (N_SE * se + bias)
    worst = int(np.argmax(excess))
    assert excess[worst] <= 0, (
        f"variance along eigenvector {worst}: {estimate[worst]:.4g} against {eigs[worst]:.4g} "
        f"(MC se {se[worst]:.2g})"
    )
    if kernel_cls is TunedHMC:
        grads = np.asarray(mcmc.get_extra_fields()["n_steps"]).mean()
        assert grads < MAX_GRADIENTS_PER_DRAW, f"{grads:.0f} gradients per draw"
