"""A hierarchical (varying-intercept) regression with ArviZ plots saved to files.

Radon-style simulated data: ``J`` groups (counties) with their own intercept ``a_j ~
Normal(mu_a, sigma_a)``, a shared slope ``b`` for a 0/1 predictor (floor), Gaussian noise.
The model is written non-centred (``a = mu_a + sigma_a * a_raw``), the form that keeps
the posterior free of a funnel. The script checks convergence with ArviZ and saves a
trace plot, a rank plot, a forest plot of the group intercepts and a pair plot of the
hyper-parameters (divergent draws, if any, are marked) as PNG files. It works with
ArviZ 0.x and 1.x (1.x plots through ``arviz_plots`` with the matplotlib backend).

    python examples/hierarchical.py                        # AdjustedESH
    python examples/hierarchical.py --kernel TunedHMC      # or ESH
    python examples/hierarchical.py --quick                # small budgets (CI)

Writes ``OUT/hierarchical_{trace,rank,forest,pair}.png`` and
``OUT/hierarchical_summary.csv`` (``--out``, default ``example_output``).
"""

import argparse
from pathlib import Path

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC  # noqa: E402

import esh_kernels  # noqa: E402
import esh_kernels.numpyro as ek  # noqa: E402

HYPER = ["mu_a", "sigma_a", "b", "sigma_y"]


def simulate(num_groups, num_rows, seed=0):
    rng = np.random.default_rng(seed)
    mu_a, sigma_a, b, sigma_y = 1.5, 0.4, -0.6, 0.7
    a = rng.normal(mu_a, sigma_a, num_groups)
    group = rng.integers(0, num_groups, num_rows)
    floor = (rng.random(num_rows) < 0.3).astype(np.float32)
    y = a[group] + b * floor + rng.normal(0.0, sigma_y, num_rows)
    return jnp.asarray(group), jnp.asarray(floor), jnp.asarray(y, jnp.float32)


def model(group, floor, num_groups, y=None):
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 5.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(2.0))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(2.0))
    with numpyro.plate("county", num_groups):
        a_raw = numpyro.sample("a_raw", dist.Normal(0.0, 1.0))
        a = numpyro.deterministic("a", mu_a + sigma_a * a_raw)
    with numpyro.plate("house", group.shape[0]):
        numpyro.sample("y", dist.Normal(a[group] + b * floor, sigma_y), obs=y)


def save_plots(data, out):
    """Trace, rank, forest and pair plots as PNG files, with either ArviZ generation."""
    paths = {name: out / f"hierarchical_{name}.png" for name in ("trace", "rank", "forest", "pair")}
    if int(az.__version__.split(".")[0]) >= 1:  # ArviZ 1.x: arviz_plots, PlotCollection
        az.plot_trace_dist(data, var_names=HYPER, backend="matplotlib").savefig(paths["trace"])
        az.plot_rank(data, var_names=HYPER, backend="matplotlib").savefig(paths["rank"])
        az.plot_forest(data, var_names=["a"], backend="matplotlib").savefig(paths["forest"])
        az.plot_pair(data, var_names=["mu_a", "sigma_a"], backend="matplotlib").savefig(paths["pair"])
    else:  # ArviZ 0.x: matplotlib axes
        az.plot_trace(data, var_names=HYPER, divergences="bottom")
        plt.gcf().savefig(paths["trace"], bbox_inches="tight")
        az.plot_rank(data, var_names=HYPER)
        plt.gcf().savefig(paths["rank"], bbox_inches="tight")
        az.plot_forest(data, var_names=["a"], combined=True)
        plt.gcf().savefig(paths["forest"], bbox_inches="tight")
        az.plot_pair(data, var_names=["mu_a", "sigma_a"], divergences=True)
        plt.gcf().savefig(paths["pair"], bbox_inches="tight")
    plt.close("all")
    return list(paths.values())


QUICK_NOTE = ("--quick: a smoke run with small budgets; these numbers are not converged "
              "(run without --quick for real results)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="AdjustedESH", choices=["ESH", "AdjustedESH", "TunedHMC"])
    parser.add_argument("--quick", action="store_true", help="small budgets (CI smoke run)")
    parser.add_argument("--out", default="example_output", help="directory for the output files")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    num_groups, num_rows = (8, 150) if args.quick else (20, 600)
    warmup, draws, chains = (150, 100, 2) if args.quick else (1000, 1000, 4)
    group, floor, y = simulate(num_groups, num_rows)

    kernel = getattr(ek, args.kernel)(model)
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="vectorized", progress_bar=not args.quick)
    mcmc.run(jax.random.PRNGKey(0), group, floor, num_groups, y=y,
             extra_fields=esh_kernels.sample_stats_fields(mcmc))

    counties = [f"county {j}" for j in range(num_groups)]
    data = esh_kernels.to_arviz(mcmc, coords={"county": counties})
    summary = az.summary(data, var_names=HYPER + ["a"])
    print(summary)
    summary.to_csv(out / "hierarchical_summary.csv")

    rhat = float(summary["r_hat"].max())
    divergences = int(data["sample_stats"]["diverging"].sum())
    print(f"\nmax R-hat {rhat:.3f} ({'ok' if rhat < 1.01 else 'run longer'}), "
          f"min bulk ESS {float(summary['ess_bulk'].min()):.0f}, {divergences} divergences")
    for path in save_plots(data, out):
        print(f"wrote {path}")
    print(f"wrote {out / 'hierarchical_summary.csv'}")
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
