"""``dense_mass=True`` on a rotated Gaussian, with per-window warmup diagnostics
(issue 14 case 2, ``docs/esh_math.md`` §7.3).

Target: ``d``-D Gaussian, covariance ``Q diag(logspace(-2, 2, d)) Q^T`` with ``Q`` a random
rotation; 4 vectorized chains, float64. For each metric window (Stan's schedule for the
whole warmup; ``ESH`` fits its metric in the first 75% of it, so its rows are approximate)
and each chain it prints the relative eigenvalues of that window's regularised dense
estimate against the truth (``eig(S^-1/2 Σ̂ S^-1/2)``: far below 1 is a direction the
window never saw), the mean step size, trajectory length (``ESH``: of its adjusted phase),
acceptance (``ESH``: energy error) and gradients per draw; then split R-hat, ESS and the
variances along the eigenvectors over the sampling draws.

    python benchmarks/dense_metric.py adjusted 100
    python benchmarks/dense_metric.py esh 50 --warmup 2000
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from esh_kernels.core.adaptation import window_schedule  # noqa: E402
from esh_kernels.numpyro import ESH, AdjustedESH, TunedHMC  # noqa: E402

KERNELS = {"adjusted": AdjustedESH, "esh": ESH, "tuned": TunedHMC, "nuts": NUTS}
FIELDS = {  # name -> NumPyro extra field
    "adjusted": dict(eps="adapt_state.step_size", L="adapt_state.trajectory_length",
                     acc="accept_prob", grads="n_steps"),
    "tuned": dict(eps="adapt_state.step_size", L="adapt_state.trajectory_length",
                  acc="accept_prob", grads="n_steps"),
    "esh": dict(eps="adapt_state.step_size", L="adapt_state.adjusted.trajectory_length",
                acc="energy_error", grads="n_steps"),
    "nuts": dict(eps="adapt_state.step_size", acc="accept_prob", grads="num_steps"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kernel", choices=sorted(KERNELS))
    parser.add_argument("dim", type=int)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    d, fields = args.dim, FIELDS[args.kernel]

    rng = np.random.default_rng(args.seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eigs = np.logspace(-2, 2, d)
    scale_tril = np.linalg.cholesky((q * eigs) @ q.T)

    def model():
        numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(d), scale_tril=jnp.asarray(scale_tril)))

    mcmc = MCMC(KERNELS[args.kernel](model, dense_mass=True), num_warmup=args.warmup,
                num_samples=args.samples, num_chains=4, chain_method="vectorized", progress_bar=False)
    start = time.time()
    key = jax.random.PRNGKey(args.seed)
    mcmc.warmup(key, extra_fields=tuple(fields.values()), collect_warmup=True)
    warm_x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    warm = {k: np.asarray(mcmc.get_extra_fields(group_by_chain=True)[f]) for k, f in fields.items()}
    mcmc.run(jax.random.PRNGKey(args.seed + 1), extra_fields=tuple(fields.values()))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    draws = {k: np.asarray(mcmc.get_extra_fields(group_by_chain=True)[f]) for k, f in fields.items()}
    print(f"{args.kernel} d={d} warmup={args.warmup}: {time.time() - start:.0f} s")

    white = np.linalg.inv(scale_tril)
    ends, first, _ = window_schedule(args.warmup)
    for lo, hi in zip([first] + [e + 1 for e in ends[:-1]], ends):
        row = [f"window {lo:4d}-{hi:4d}"]
        for c in range(x.shape[0]):
            n = hi + 1 - lo
            est = n / (n + 5) * np.cov(warm_x[c, lo:hi + 1].T) + 5e-3 / (n + 5) * np.eye(d)
            rel = np.linalg.eigvalsh(white @ est @ white.T)
            part = {k: v[c, lo:hi + 1].mean() for k, v in warm.items()}
            row.append(f"c{c}: rel [{rel.min():.1e}, {rel.max():.1e}] eps {part['eps']:.2e}"
                       + (f" L {part['L']:.1f}" if "L" in part else "")
                       + f" acc {part['acc']:.2f} grads {part['grads']:.0f}")
        print(" | ".join(row))

    z = x @ q  # coordinates along the eigenvectors
    ess = effective_sample_size(z)
    f = z**2
    se = f.std(axis=(0, 1)) / np.sqrt(effective_sample_size(f))
    ratio = f.mean(axis=(0, 1)) / eigs
    print(f"sampling: final step sizes {draws['eps'][:, -1]}, gradients per draw "
          f"{draws['grads'].mean():.1f}, mean acceptance {draws['acc'].mean():.2f}")
    print(f"max split R-hat {split_gelman_rubin(z).max():.3f}, min ESS {ess.min():.0f}, "
          f"median ESS {np.median(ess):.0f}")
    print(f"variance / truth along eigenvectors: min {ratio.min():.3f} max {ratio.max():.3f}, "
          f"largest error {np.max(np.abs(f.mean(axis=(0, 1)) - eigs) / se):.1f} MC standard errors")


if __name__ == "__main__":
    main()
