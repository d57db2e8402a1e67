"""Eight schools with an esh_kernels Pyro kernel, diagnostics in ArviZ.

The Pyro twin of ``eight_schools_numpyro.py``. By default the chains run as one batch in
one process (:class:`esh_kernels.pyro.BatchedMCMC`) with ``jit_compile=True``: about 15 s
for 4 chains of 1000 + 1000 on 2 CPU cores. ``--mcmc`` runs the same kernel through
``pyro.infer.MCMC``, the drop-in replacement of ``NUTS``; Pyro then runs the chains in
separate processes only if it has a spare CPU for each (else it warns "num_chains=4 is
more than available_cpu=..." and draws them one after another). ``--no-jit`` runs eager
torch, where a transition of a model this small is mostly Python overhead.

    python examples/eight_schools_pyro.py                      # AdjustedESH, BatchedMCMC
    python examples/eight_schools_pyro.py --chains 32
    python examples/eight_schools_pyro.py --mcmc               # pyro.infer.MCMC
    python examples/eight_schools_pyro.py --kernel ESH --quick # smoke run (not converged)

Writes ``OUT/eight_schools_pyro_summary.csv`` (``--out``, default ``example_output``).
"""

import argparse
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC

import esh_kernels
import esh_kernels.pyro as ep

SCHOOLS = ["Choate", "Deerfield", "Phillips Andover", "Phillips Exeter", "Hotchkiss",
           "Lawrenceville", "St. Paul's", "Mt. Hermon"]
Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", sigma.shape[0]):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)


QUICK_NOTE = ("--quick: a smoke run with small budgets; these numbers are not converged "
              "(run without --quick for real results)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kernels = [k for k in ("ESH", "AdjustedESH", "TunedHMC") if hasattr(ep, k)]
    parser.add_argument("--kernel", default="AdjustedESH", choices=kernels)
    parser.add_argument("--chains", type=int, default=None, help="number of chains")
    parser.add_argument("--mcmc", action="store_true",
                        help="run the chains through pyro.infer.MCMC instead of BatchedMCMC")
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=True,
                        help="record one step as a TorchScript graph (jit_compile=True)")
    parser.add_argument("--quick", action="store_true", help="small budgets (CI smoke run)")
    parser.add_argument("--out", default="example_output", help="directory for the output files")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warmup, draws, chains = (80, 60, 2) if args.quick else (1000, 1000, 4)
    chains = args.chains or chains
    pyro.set_rng_seed(0)
    torch.set_num_threads(1)  # tensors this small gain nothing from more threads

    kernel = getattr(ep, args.kernel)(eight_schools, jit_compile=args.jit)
    if not args.mcmc:
        mcmc = ep.BatchedMCMC(kernel, num_samples=draws, warmup_steps=warmup, num_chains=chains,
                              disable_progbar=args.quick)
    else:
        # Pyro runs chains in processes when it has spare CPUs, else one after another
        # (and warns about it).
        warnings.filterwarnings("ignore", message=".*Chains will be drawn sequentially.*")
        mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, num_chains=chains,
                    disable_progbar=args.quick)
    start = time.perf_counter()
    mcmc.run(SIGMA, y=Y)
    seconds = time.perf_counter() - start
    mcmc.summary()

    # divergences, acceptance, step size, lp, n_steps, energy_error come from the kernel
    data = esh_kernels.to_arviz(mcmc, coords={"school": SCHOOLS})
    summary = az.summary(data, var_names=["mu", "tau", "theta_tilde"])
    print(summary)
    path = out / "eight_schools_pyro_summary.csv"
    summary.to_csv(path)

    stats = data["sample_stats"]
    grads = int(stats["n_steps"].sum())
    print(f"\n{args.kernel} ({'pyro MCMC' if args.mcmc else 'BatchedMCMC'}, jit_compile="
          f"{args.jit}): {chains} chains x {warmup} warmup + {draws} draws in {seconds:.1f} s; "
          f"{grads} gradient evaluations after warmup, {int(stats['diverging'].sum())} "
          f"divergences, step size {float(stats['step_size'].mean()):.3g}")
    print(f"min bulk ESS per 1000 gradients: {1000 * float(np.min(summary['ess_bulk'])) / grads:.1f}")
    print(f"wrote {path}")
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
