"""Regression tests for TunedHMC's robustness fixes (issues 13 and 14): the initial
step-size search, the step-collapse guard and the untuned ``num_warmup=0`` run, in both
backends. Mean checks use ``|mean - truth| < 5 sd / sqrt(ess)`` as ``test_tuned_hmc.py``.
"""

import warnings

import numpy as np
import pytest

N_SE = 5.0


def _assert_mean(draws, truth, sd):
    from numpyro.diagnostics import effective_sample_size

    draws = np.asarray(draws, np.float64)
    ess = np.asarray(effective_sample_size(draws))
    assert np.all(ess > 50), ess
    err = np.abs(draws.mean((0, 1)) - truth)
    assert np.all(err < N_SE * sd / np.sqrt(ess)), (err, ess)


def test_numpyro_binomial_stable_float32():
    """NumPyro's ``test_binomial_stable`` (200 + 200, one chain; its default precision,
    float32), with its tolerance. Before: the first trajectory overshot from the uniform
    init into the far tail (p ~ 1e-19) and dual averaging, facing float32 rounding noise in
    the potential, drove the step to 1e-7 with 511 gradients per draw: frozen there on
    every seed. Seed 1 also stayed frozen (at 0.58 x the truth) with the step search alone;
    the collapse guard frees it."""
    import jax
    import numpyro
    import numpyro.distributions as dist
    from jax import random
    from jax.scipy.special import logit
    from numpyro.infer import MCMC

    from esh_kernels.numpyro import TunedHMC

    def model(n, k):
        p = numpyro.sample("p", dist.Beta(1.0, 1.0))
        numpyro.sample("obs", dist.Binomial(n, logits=logit(p)), obs=k)

    n, k = 5000000, 3849
    mcmc = MCMC(TunedHMC(model), num_warmup=200, num_samples=200, progress_bar=False)
    mcmc.run(random.PRNGKey(1), n, k, extra_fields=("n_steps",))
    p = np.asarray(mcmc.get_samples()["p"])
    assert p.dtype == np.float32 and not jax.config.jax_enable_x64
    np.testing.assert_allclose(p.mean(), k / n, rtol=0.05)
    assert np.asarray(mcmc.get_extra_fields()["n_steps"]).mean() < 100  # not at the cap


def _std_normal_numpyro(d):
    import numpyro
    import numpyro.distributions as dist

    def model():
        numpyro.sample("x", dist.Normal(0.0, 1.0).expand([d]).to_event(1))

    return model


def test_numpyro_num_warmup_zero_warns_and_samples():
    """``num_warmup=0``: a warning that nothing was tuned, and a usable untuned run (step
    from the search, ``T = pi/2``). Before: no warning, one step of 0.1 per draw, mean
    -0.77 on a standard normal, ESS ~2."""
    from jax import random
    from numpyro.infer import MCMC

    from esh_kernels.numpyro import TunedHMC

    mcmc = MCMC(TunedHMC(_std_normal_numpyro(3)), num_warmup=0, num_samples=500, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    with pytest.warns(UserWarning, match="num_warmup=0 tunes nothing"):
        mcmc.run(random.PRNGKey(0))
    _assert_mean(mcmc.get_samples(group_by_chain=True)["x"], 0.0, 1.0)
    # given both, nothing to warn about
    given = MCMC(TunedHMC(_std_normal_numpyro(3), step_size=0.5, trajectory_length=1.5),
                 num_warmup=0, num_samples=5, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        given.run(random.PRNGKey(0))


def test_pyro_num_warmup_zero_warns_and_samples():
    """The Pyro kernel, in ``BatchedMCMC``: same warning, same untuned defaults."""
    import pyro
    import pyro.distributions as pdist
    import torch

    from esh_kernels.pyro import BatchedMCMC, TunedHMC

    torch.set_num_threads(1)

    def model():
        pyro.sample("x", pdist.Normal(torch.zeros(3), 1.0).to_event(1))

    pyro.set_rng_seed(0)
    mcmc = BatchedMCMC(TunedHMC(model), num_samples=500, warmup_steps=0, num_chains=2,
                       disable_progbar=True)
    with pytest.warns(UserWarning, match="num_warmup=0 tunes nothing"):
        mcmc.run()
    _assert_mean(mcmc.get_samples(group_by_chain=True)["x"].numpy(), 0.0, 1.0)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_step_collapse_guard(backend):
    """The shared warmup update (``core/tuned_warmup.py``): once a metric exists, an
    averaged step below 1e-3 (whitened) restarts dual averaging at 0.1; before the first metric window,
    or above the threshold, the step is dual averaging's."""
    from esh_kernels.core.tuned_warmup import TunedWarmupConfig, tuned_chain_update, tuned_warmup_init
    from esh_kernels.core.warmup import COLLAPSED_STEP, RESTART_STEP

    if backend == "jax":
        import jax.numpy as xp

        arr = lambda v: xp.asarray(v, xp.float32)  # noqa: E731
    else:
        import torch as xp

        arr = lambda v: xp.tensor(v, dtype=xp.float32)  # noqa: E731
    config = TunedWarmupConfig(num_warmup=200, target_accept_prob=0.8, tune_step_size=True,
                               tune_metric=True, tune_length=True, dense=False, max_steps=1024,
                               learning_rate=0.025, uturn_factor=0.75)
    x = arr([[0.3, -0.2], [0.1, 0.4]])  # two chains
    adapt = tuned_warmup_init(x, arr([1e-6, 0.5]), arr([1e-6, 0.5]), False)
    # the first metric window ends at iteration 99 (Stan's schedule for 200)
    before = tuned_chain_update(adapt, 50, x, arr([0.0, 0.0]), arr([0.0, 0.0]), config)
    assert float(before.step_size[0]) < COLLAPSED_STEP
    after = tuned_chain_update(adapt, 120, x, arr([0.0, 0.0]), arr([0.0, 0.0]), config)
    assert float(after.step_size[0]) == pytest.approx(RESTART_STEP)
    assert float(after.dual.count[0]) == 0.0  # restarted
    assert float(after.step_size[1]) == pytest.approx(float(before.step_size[1]))
    # a chain where one step's kick eps |L^T g| is at least 1 is resolving a steep wall: spared
    # (``esh_math.md`` §7.3, "Steep walls"); the same step with a small gradient restarts
    wall = tuned_chain_update(adapt, 120, x, arr([0.0, 0.0]), arr([0.0, 0.0]), config,
                              grad=arr([[3e6, 0.0], [1.0, 1.0]]))
    assert float(wall.step_size[0]) < COLLAPSED_STEP
    assert float(wall.dual.count[0]) > 0.0  # not restarted
    flat = tuned_chain_update(adapt, 120, x, arr([0.0, 0.0]), arr([0.0, 0.0]), config,
                              grad=arr([[3.0, 0.0], [1.0, 1.0]]))
    assert float(flat.step_size[0]) == pytest.approx(RESTART_STEP)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_adaptation_reads_rounding_as_no_error_only_on_a_steep_wall(backend):
    """``core.hmc.finish``'s ``adapt_accept_prob`` (``esh_math.md`` §7.3, "Steep walls"): an
    energy error within the floating-point resolution of ``H`` reads as accepted where the
    gradient is far above a typical set's (here ``|g| = 1e20`` at ``|x| = 1``: in float32 a
    resolution of about 2e14), and as it is in a typical set; the Metropolis test reads it as it is
    in both."""
    from esh_kernels.core import hmc
    from esh_kernels.core.integrators import IntegratorState

    if backend == "jax":
        import jax.numpy as xp

        arr = lambda v: xp.asarray(v, xp.float32)  # noqa: E731
    else:
        import torch as xp

        arr = lambda v: xp.tensor(v, dtype=xp.float32)  # noqa: E731

    def finished(grad, energy_error):
        x0 = arr([[1.0, 1.0]])
        start = IntegratorState(x0, 0.0 * x0, arr([0.0]), arr([5.0]), arr(grad))
        end = start._replace(x=x0 + 1e-3, energy=start.energy + energy_error)
        carry = hmc.Carry(arr([1.0]), end, end, arr([0.0]), arr([0.0]))
        return hmc.finish(carry, start, 0.0 * x0, arr([1.0]), 0.1, arr([0.5]), arr([0.0]) > 1.0,
                          1000.0, arr([1.0, 1.0]))

    wall = finished([[1e20, 0.0]], 50.0)
    assert float(wall.adapt_accept_prob[0]) == 1.0
    assert float(wall.accept_prob[0]) == pytest.approx(np.exp(-50.0))
    typical = finished([[1.0, -0.5]], 2.0)
    assert float(typical.adapt_accept_prob[0]) == pytest.approx(np.exp(-2.0))
    beyond = finished([[1e20, 0.0]], 1e16)
    assert float(beyond.adapt_accept_prob[0]) == 0.0
