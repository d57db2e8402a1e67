"""Eight schools with an esh_kernels NumPyro kernel, diagnostics in ArviZ.

Eight schools (Rubin 1981) in its non-centred form: the classic small hierarchical model.
The only change from a NUTS script is the kernel; ``esh_kernels.to_arviz`` gives ArviZ
the draws and the sampler statistics (divergences, acceptance, step size, gradients).

    python examples/eight_schools_numpyro.py                     # AdjustedESH, ~30 s
    python examples/eight_schools_numpyro.py --kernel TunedHMC   # or ESH
    python examples/eight_schools_numpyro.py --quick             # small budgets (CI)

Writes ``OUT/eight_schools_numpyro_summary.csv`` (``--out``, default ``example_output``).
"""

import argparse
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

SCHOOLS = ["Choate", "Deerfield", "Phillips Andover", "Phillips Exeter", "Hotchkiss",
           "Lawrenceville", "St. Paul's", "Mt. Hermon"]
Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


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
    warmup, draws, chains = (150, 100, 2) if args.quick else (1000, 1000, 4)

    kernel = getattr(ek, args.kernel)(eight_schools)
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="vectorized", progress_bar=not args.quick)
    # collect the statistics ArviZ shows (lp, acceptance_rate, step_size, n_steps, ...)
    mcmc.run(jax.random.PRNGKey(0), SIGMA, y=Y, extra_fields=esh_kernels.sample_stats_fields(mcmc))
    mcmc.print_summary()

    data = esh_kernels.to_arviz(mcmc, coords={"school": SCHOOLS})  # plate "school" -> dim
    summary = az.summary(data, var_names=["mu", "tau", "theta"])
    print(summary)
    path = out / "eight_schools_numpyro_summary.csv"
    summary.to_csv(path)

    stats = data["sample_stats"]
    grads = int(stats["n_steps"].sum())
    print(f"\n{args.kernel}: {chains} chains x {draws} draws, {grads} gradient evaluations, "
          f"{int(stats['diverging'].sum())} divergences, step size "
          f"{float(stats['step_size'].mean()):.3g}")
    if "acceptance_rate" in stats:
        print(f"mean acceptance probability {float(stats['acceptance_rate'].mean()):.2f}")
    print(f"min bulk ESS per 1000 gradients: "
          f"{1000 * float(np.min(summary['ess_bulk'])) / grads:.1f}")
    print(f"wrote {path}")
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
