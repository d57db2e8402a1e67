#!/usr/bin/env python
"""The longest run of repeated draws of each chain (the statistic behind the self-check's
``sticky`` symptom, ``esh_kernels/core/self_check.py``), and the share of its draws that
stepped beyond the leapfrog's stability limit (``step_curvature``, ``esh_math.md`` §7.9), read
on any target the benchmarks know (``docs/benchmarks.md``, "Notes on sticky chains" and "Notes
on unstable steps").

    python benchmarks/repeat_runs.py --kernels AdjustedESH TunedHMC \\
        --targets eight_schools-eight_schools_centered garch-garch11 horseshoe --seeds 1 2

A target is a posteriordb_dev posterior (``posteriordb.POSTERIORS``), one of the ten without
references (``pdb_check.POSTERIORS``), a model of ``model_zoo.MODELS`` or a target of
``targets.make_targets()``. Each run is ``MCMC(Kernel(model), num_warmup=1000,
num_samples=1000, num_chains=4, chain_method="vectorized")`` at the kernel's defaults,
float64, from ``PRNGKey(seed)`` (unsplit), in a process of its own
(``runner.run_in_process``). One line per run: per chain the longest run of sampling draws
that repeat the previous draw (every coordinate of the flattened draw equal; a run still
going on at the end counts, where ``sticky`` leaves it to ``frozen``) and the fraction of
draws that do; for the kernels that record ``step_curvature`` (``AdjustedESH``, ``TunedHMC``),
per chain the share of sampling draws whose proposal had a step above
``core.hmc.LEAPFROG_STABILITY_LIMIT``, and the median and largest ``step_curvature``; and the
self-check's ``disagree`` statistics replayed on the draws at 200, 400, 800 and 1000 draws
(:func:`checkpoint_statistics`; ``docs/benchmarks.md``, "Notes on the self-check's thresholds in
sampling"); and the self-check's findings. Prints only; nothing is written.
"""

import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import runner  # noqa: E402

KERNELS = ("AdjustedESH", "ESH", "TunedHMC")


def load_model(name):
    """The NumPyro model of ``name``, from whichever benchmark defines it."""
    import model_zoo
    import pdb_check
    import posteriordb as pdb
    import targets

    if name in pdb.POSTERIORS:
        return pdb.model_module(name).numpyro_model(pdb.load_data(name))
    if name in pdb_check.POSTERIORS:
        return pdb_check.load_model(name)
    if name in model_zoo.MODELS:
        return model_zoo.MODELS[name][0]
    found = targets.make_targets()
    if name in found:
        return found[name].model
    raise SystemExit(f"unknown target {name!r}: not in posteriordb_dev, pdb_check, the model zoo "
                     "or targets.make_targets()")


def longest_runs(repeated):
    """Per row of the boolean ``(chains, draws)`` array: the longest run of ``True``."""
    out = []
    for row in repeated:
        best = run = 0
        for r in row:
            run = run + 1 if r else 0
            best = max(best, run)
        out.append(best)
    return out


#: sampling draws after which :func:`checkpoint_statistics` reads the self-check's statistics
CHECKPOINTS = (200, 400, 800, 1000)


def checkpoint_statistics(draws):
    """The self-check's ``disagree`` statistics (``core.self_check.rhat``, the non-split R-hat
    over coordinates, and ``spread_ratio``) over the first 200, 400, 800 and 1000 draws of
    ``draws`` (``(chains, draws, d)``, in the sampler's unconstrained space, where the kernels
    keep them): what the NumPyro kernels look at during sampling (their checkpoints are after
    100, 200, 400, 800 draws), replayed on the stored draws."""
    from esh_kernels.core import self_check

    chains = draws.shape[0]
    m = self_check.monitor_init(draws[:, 0], np.arange(chains))
    out = []
    for i in range(draws.shape[1]):
        m = self_check.monitor_update(m, draws[:, max(i - 1, 0)], draws[:, i], np.ones(chains), 1024,
                                      np.zeros(chains, bool))
        if i + 1 in CHECKPOINTS:
            out.append(f"{float(self_check.rhat(m)):.3f}/{float(self_check.spread_ratio(m)):.2f}")
    return " ".join(out)


def run_one(name, kernel, seed):
    """One run (module level: it runs in a spawned process); its record holds the line."""
    import jax
    import numpyro
    from numpyro.infer import MCMC

    numpyro.enable_x64()
    import esh_kernels.numpyro as ek

    from esh_kernels.core.hmc import LEAPFROG_STABILITY_LIMIT

    curvature = kernel != "ESH"  # the kernels that record ``step_curvature``
    # the draws as the sampler keeps them (unconstrained), which the self-check reads
    mcmc = MCMC(getattr(ek, kernel)(load_model(name)), num_warmup=1000, num_samples=1000,
                num_chains=4, chain_method="vectorized", progress_bar=False,
                postprocess_fn=lambda z: z)
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the findings are read below
        mcmc.run(jax.random.PRNGKey(seed), extra_fields=("step_curvature",) if curvature else ())
    draws = np.concatenate([np.asarray(v).reshape(4, 1000, -1)
                            for v in mcmc.get_samples(group_by_chain=True).values()], axis=-1)
    repeated = np.all(draws[:, 1:] == draws[:, :-1], axis=-1)
    found = runner.findings(mcmc)
    unstable = ""
    if curvature:
        c = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["step_curvature"])
        unstable = (f"; unstable {np.array2string((c > LEAPFROG_STABILITY_LIMIT).mean(axis=1), precision=4)}, "
                    f"median {np.array2string(np.median(c, axis=1), precision=2)}, "
                    f"largest {np.array2string(c.max(axis=1), precision=2)}")
    return {"status": "ok", "line": (
        f"{name} {kernel} seed {seed}: longest runs {longest_runs(repeated)}; repeated "
        f"{np.array2string(repeated.mean(axis=1), precision=2)}{unstable}; self-check R-hat/spread "
        f"after {', '.join(map(str, CHECKPOINTS))} draws: {checkpoint_statistics(draws)}; findings {found} "
        f"[{time.time() - start:.0f} s]")}


def main(argv=None):
    p = runner.runs_parser(__doc__, KERNELS, ["AdjustedESH", "TunedHMC"])
    p.add_argument("--targets", nargs="+", required=True)
    args = p.parse_args(argv)
    for name in args.targets:
        load_model(name)  # an unknown name fails here, before any run
    runner.print_runs(run_one, [(name, kernel, seed) for name in args.targets
                                for kernel in args.kernels for seed in args.seeds], args.time_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
