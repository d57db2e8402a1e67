"""Many chains at once: vectorized chains in NumPyro and batched chains in Pyro.

Running hundreds of short chains in one vectorised computation is how these kernels use a
GPU (and a CPU's SIMD units): every transition of all chains is one batched gradient.

* NumPyro: ``MCMC(..., num_chains=C, chain_method="vectorized")``. ``TunedHMC`` with
  ``cross_chain=True`` (an opt-in that couples the chains) tunes across them (one step size, one trajectory length by ChEES, one mass matrix
  pooled over all chains' draws), so warmup can be short.
* Pyro: :class:`esh_kernels.pyro.BatchedMCMC` runs ``C`` chains as one ``(C, d)`` batch
  in one process (``pyro.infer.MCMC`` would run them one by one or in separate processes).

The target is a ``D``-dimensional Gaussian with standard deviations from 0.1 to 1. The
script prints, per backend, the time, the smallest bulk ESS over coordinates and the worst
relative error of the estimated variances, and writes them to a JSON file.

    python examples/many_chains.py                      # both backends (Pyro if installed)
    python examples/many_chains.py --backend numpyro --chains 1024   # e.g. on a GPU
    python examples/many_chains.py --quick              # small budgets (CI)

Writes ``OUT/many_chains.json`` (``--out``, default ``example_output``).
"""

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np


def min_bulk_ess(draws):
    """Smallest ArviZ bulk ESS over coordinates of a (chains, draws, D) array."""
    import warnings

    import arviz as az

    if int(az.__version__.split(".")[0]) >= 1:  # ArviZ 1.x takes arrays with axis numbers
        ess = az.ess(draws, chain_axis=0, draw_axis=1)
    else:
        with warnings.catch_warnings():  # "more chains than draws" is intended here
            warnings.simplefilter("ignore", UserWarning)
            ess = az.ess(az.convert_to_dataset({"x": draws}))["x"].values
    return float(np.min(ess))


def summarise(name, draws, sd, seconds, grads):
    """draws: (chains, draws, D) numpy array."""
    ess = min_bulk_ess(draws)
    var = draws.reshape(-1, draws.shape[-1]).var(axis=0)
    row = {
        "backend": name,
        "chains": draws.shape[0],
        "draws_per_chain": draws.shape[1],
        "seconds_with_compilation": round(seconds, 2),
        "gradient_evaluations": int(grads),
        "min_bulk_ess": round(ess, 1),
        "max_relative_variance_error": round(float(np.max(np.abs(var / sd**2 - 1))), 4),
    }
    print(f"{name:<8} {row['chains']:>6} chains x {row['draws_per_chain']} draws: "
          f"{seconds:6.1f} s, min bulk ESS {ess:8.0f}, "
          f"max |var/true - 1| {row['max_relative_variance_error']:.3f}")
    return row


def run_numpyro(dim, chains, warmup, draws):
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC

    from esh_kernels.numpyro import TunedHMC

    sd = np.logspace(-1, 0, dim)

    def model():
        numpyro.sample("x", dist.Normal(0.0, sd).to_event(1))

    mcmc = MCMC(TunedHMC(model, cross_chain=True), num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(0), extra_fields=("n_steps",))
    x = np.asarray(jax.block_until_ready(mcmc.get_samples(group_by_chain=True)["x"]))
    seconds = time.perf_counter() - start
    grads = np.sum(mcmc.get_extra_fields()["n_steps"])
    return summarise("numpyro", x, sd, seconds, grads)


def run_pyro(dim, chains, warmup, draws):
    import pyro
    import pyro.distributions as dist
    import torch

    from esh_kernels.pyro import AdjustedESH, BatchedMCMC

    sd = np.logspace(-1, 0, dim)
    sd_t = torch.tensor(sd)

    def model():
        pyro.sample("x", dist.Normal(0.0, sd_t).to_event(1))

    pyro.set_rng_seed(0)
    mcmc = BatchedMCMC(AdjustedESH(model), num_samples=draws, warmup_steps=warmup,
                       num_chains=chains, disable_progbar=True)
    start = time.perf_counter()
    mcmc.run()
    seconds = time.perf_counter() - start
    x = mcmc.get_samples(group_by_chain=True)["x"].numpy()
    grads = sum(d["gradient evaluations (sampling)"] for d in mcmc._diagnostics)
    return summarise("pyro", x, sd, seconds, grads)


QUICK_NOTE = ("--quick: a smoke run with small budgets; these numbers are not converged "
              "(run without --quick for real results)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="both", choices=["numpyro", "pyro", "both"])
    parser.add_argument("--chains", type=int, default=None)
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="small budgets (CI smoke run)")
    parser.add_argument("--out", default="example_output", help="directory for the output files")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        dim, chains, warmup, draws = args.dim or 10, args.chains or 32, 100, 50
    else:
        dim, chains, warmup, draws = args.dim or 50, args.chains or 128, 500, 200

    rows = []
    if args.backend in ("numpyro", "both"):
        rows.append(run_numpyro(dim, chains, warmup, draws))
    if args.backend in ("pyro", "both"):
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("pyro") is None:
            print("pyro: torch or pyro-ppl is not installed, skipped")
        else:
            rows.append(run_pyro(dim, chains, warmup, draws))
    path = out / "many_chains.json"
    path.write_text(json.dumps({"dim": dim, "warmup": warmup, "results": rows}, indent=2))
    print(f"wrote {path}")
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
