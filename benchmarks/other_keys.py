#!/usr/bin/env python
"""Our kernels on posteriordb_dev posteriors from keys other than the benchmark's: a pass
in ``run_posteriordb.py`` can be the luck of its one key (TunedHMC on ``arma11`` passed there
while it failed from six other keys, ``docs/benchmarks.md``, "Notes on TunedHMC on steep
walls").

    python benchmarks/other_keys.py --kernels TunedHMC --posteriors arma-arma11 \\
        --seeds 0 1 2 3 4 5 6 7 8 9 10 11 --num-samples 500

Each run is ``MCMC(Kernel(model), num_warmup=1000, num_samples=..., num_chains=4,
chain_method="vectorized")`` at the kernel's defaults, float64, from the key
``fold_in(fold_in(PRNGKey(seed), posterior index), kernel index)`` (unsplit; the indices of
``posteriordb.POSTERIORS`` and of ``run_posteriordb.SAMPLER_ORDER``, so seed 0 is not the
benchmark's own key, which ``run_numpyro`` splits). One line per run: the verdict against
the reference draws (``pdb_judge``), the max split R-hat over the reference parameters, each
chain's median potential energy (a chain left far up a wall shows there) and the
self-check's findings. Each run has a process of its own (``runner.run_in_process``: one
process ran out of XLA's code mappings after 50 runs) and a time limit. Prints only; nothing
is written.
"""

import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import posteriordb as pdb  # noqa: E402
from pdb_judge import judge  # noqa: E402
import runner  # noqa: E402
from run_posteriordb import SAMPLER_ORDER  # noqa: E402

KERNELS = {"AdjustedESH": "adjusted_esh", "ESH": "esh", "TunedHMC": "tuned_hmc"}


def run_one(name, kernel, seed, num_samples):
    """One run (module level: it runs in a spawned process); its record holds the line."""
    import jax
    import numpyro
    from numpyro.diagnostics import split_gelman_rubin
    from numpyro.infer import MCMC

    import esh_kernels.numpyro as ek

    numpyro.enable_x64()

    model = pdb.model_module(name).numpyro_model(pdb.load_data(name))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), pdb.POSTERIORS.index(name)),
                             SAMPLER_ORDER.index(KERNELS[kernel]))
    mcmc = MCMC(getattr(ek, kernel)(model), num_warmup=1000, num_samples=num_samples, num_chains=4,
                chain_method="vectorized", progress_bar=False)
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the findings are read below
        mcmc.run(key, extra_fields=("potential_energy",))
    reference = pdb.load_reference(name)
    draws = pdb.flat_draws(mcmc.get_samples(group_by_chain=True), list(reference))
    verdict = judge(draws, reference)
    rhat = max(float(split_gelman_rubin(np.asarray(x))) for x in draws.values())
    potential = np.median(np.asarray(mcmc.get_extra_fields(group_by_chain=True)["potential_energy"]), axis=1)
    found = runner.findings(mcmc)
    failed = "" if verdict["verdict"] == "pass" else f" {verdict['failed'][:2]}"
    return {"status": "ok", "line": (
        f"{name} {kernel} seed {seed}: {verdict['verdict']}{failed}; max R-hat {rhat:.3f}; "
        f"chains' median potential {np.array2string(potential, precision=3)}; findings {found} "
        f"[{time.time() - start:.0f} s]")}


def main(argv=None):
    p = runner.runs_parser(__doc__, sorted(KERNELS), ["TunedHMC"])
    p.add_argument("--posteriors", nargs="+", choices=pdb.POSTERIORS, required=True)
    p.add_argument("--num-samples", type=int, default=1000)
    args = p.parse_args(argv)
    runner.print_runs(run_one, [(name, kernel, seed, args.num_samples) for name in args.posteriors
                                for kernel in args.kernels for seed in args.seeds], args.time_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
