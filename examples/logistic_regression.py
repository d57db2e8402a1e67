"""Bayesian logistic regression with an esh_kernels NumPyro kernel.

Simulated data: ``N`` rows, ``D`` features with correlation 0.6 between neighbours, known
true weights. Correlated features make the posterior a correlated ellipse: a dense
preconditioner (``dense_mass=True``) learns that shape in warmup. The script prints the
posterior summary and how far the posterior means are from the true weights.

    python examples/logistic_regression.py                        # TunedHMC, dense mass
    python examples/logistic_regression.py --kernel AdjustedESH   # or ESH
    python examples/logistic_regression.py --diag                 # diagonal preconditioner
    python examples/logistic_regression.py --quick                # small budgets (CI)

Writes ``OUT/logistic_regression_summary.csv`` (``--out``, default ``example_output``).
"""

import argparse
import time
from pathlib import Path

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import esh_kernels
import esh_kernels.numpyro as ek


def simulate(n, d, seed=0):
    rng = np.random.default_rng(seed)
    cov = 0.6 ** np.abs(np.subtract.outer(np.arange(d), np.arange(d)))
    x = rng.multivariate_normal(np.zeros(d), cov, size=n)
    w = rng.normal(0.0, 1.0, d)
    b = 0.5
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-(x @ w + b)))
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), w, b


def logistic_regression(x, y=None):
    d = x.shape[1]
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([d]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


QUICK_NOTE = ("--quick: a smoke run with small budgets; these numbers are not converged "
              "(run without --quick for real results)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="TunedHMC", choices=["ESH", "AdjustedESH", "TunedHMC"])
    parser.add_argument("--diag", action="store_true", help="diagonal instead of dense preconditioner")
    parser.add_argument("--quick", action="store_true", help="small budgets (CI smoke run)")
    parser.add_argument("--out", default="example_output", help="directory for the output files")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n, d = (200, 5) if args.quick else (1000, 10)
    warmup, draws, chains = (200, 100, 2) if args.quick else (1000, 1000, 4)
    x, y, w_true, b_true = simulate(n, d)

    kernel = getattr(ek, args.kernel)(logistic_regression, dense_mass=not args.diag)
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="vectorized", progress_bar=not args.quick)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(0), x, y=y, extra_fields=esh_kernels.sample_stats_fields(mcmc))
    seconds = time.perf_counter() - start

    data = esh_kernels.to_arviz(mcmc, dims={"w": ["feature"]})
    summary = az.summary(data, var_names=["w", "b"])
    print(summary)
    path = out / "logistic_regression_summary.csv"
    summary.to_csv(path)

    post = data["posterior"]
    w_mean = post["w"].mean(("chain", "draw")).values
    w_sd = post["w"].std(("chain", "draw")).values
    z = np.abs(w_mean - w_true) / w_sd
    stats = data["sample_stats"]
    grads = int(stats["n_steps"].sum())
    print(f"\n{args.kernel} ({'diagonal' if args.diag else 'dense'} preconditioner), "
          f"{n} rows x {d} features, {chains} chains x {draws} draws, {seconds:.1f} s "
          "(with compilation)")
    print(f"true weights within 3 posterior sd: {int(np.sum(z < 3))} of {d} "
          f"(largest |mean - truth| / sd = {z.max():.2f})")
    print(f"{grads} gradient evaluations, {int(stats['diverging'].sum())} divergences, "
          f"min bulk ESS {float(np.min(summary['ess_bulk'])):.0f}, "
          f"{1000 * float(np.min(summary['ess_bulk'])) / grads:.1f} per 1000 gradients")
    print(f"wrote {path}")
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
