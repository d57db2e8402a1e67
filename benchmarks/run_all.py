#!/usr/bin/env python
"""Run the whole benchmark suite with one command.

    python benchmarks/run_all.py            # the real run (3-4 hours on 2 CPU cores)
    python benchmarks/run_all.py --quick    # smoke run of every script (a few minutes)
    python benchmarks/run_all.py --quick --out-dir /tmp/bench   # leave the repository alone

Steps (each a separate process, so that each script's JAX/torch settings start clean):

1. ``run_paper.py``: the ESH paper's synthetic comparison (MMD vs gradients, Table 1 ESS).
2. ``run_numpyro.py``: the Bayesian suite on NumPyro (ESS of x and x^2 per gradient and per
   second, gradients to b2 < 0.01, warmup cost; three seeds) against NUTS and BlackJAX.
3. ``run_posteriordb.py``: the eleven posteriordb_dev posteriors, our kernels and NUTS
   judged against the reference draws.
4. ``run_pyro.py``: the Pyro kernels against Pyro's NUTS / HMC.
5. ``docs/_scripts/benchmark_plots.py``: the ESS-per-gradient figure of step 2.

Each step writes its JSON (``benchmarks/results/``), its section of
``docs/benchmarks.md`` and its PNG, with the machine, versions and command recorded in the
JSON and the section. With ``--out-dir`` everything goes there instead (a copy of
``docs/benchmarks.md`` is made there first, so its hand-written notes stay in context).
``--quick`` runs reduced selections (``QUICK_ARGS``) with small budgets: it checks that
every script and sampler runs end to end, and its numbers are not meant to be read.
A summary of the steps (command, exit status, minutes) is written to
``run_all.json`` (``run_all_quick.json``) next to the results; the exit status is non-zero
if any step failed.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import results_io  # noqa: E402

STEPS = ("paper", "numpyro", "posteriordb", "pyro", "plots")

# --quick: each script's reduced selection (every sampler runs at least once); run_numpyro
# has its own CI-sized mode for this (--smoke: all samplers on two targets)
QUICK_ARGS = {
    "paper": ["--quick", "--targets", "funnel"],
    "numpyro": ["--smoke"],
    "posteriordb": ["--quick"],
    "pyro": ["--quick", "--targets", "eight_schools", "--repeats", "1"],
}


def step_commands(quick, out_dir):
    """``{step: argv}`` for the chosen mode and output location."""
    py = sys.executable
    sfx = "_quick" if quick else ""
    nsfx = "_smoke" if quick else ""  # run_numpyro's CI-sized mode and its file names
    res = out_dir or os.path.join(HERE, "results")
    img = out_dir or os.path.join(REPO, "docs", "img")
    md = os.path.join(out_dir, "benchmarks.md") if out_dir else os.path.join(REPO, "docs", "benchmarks.md")
    cmds = {
        "paper": [py, os.path.join(HERE, "run_paper.py"),
                  "--out", os.path.join(res, f"paper{sfx}.json"), "--md", md,
                  "--plot", os.path.join(img, f"paper_mmd{sfx}.png")],
        "numpyro": [py, os.path.join(HERE, "run_numpyro.py"),
                    "--out", os.path.join(res, f"numpyro{nsfx}.json"), "--md", md],
        "posteriordb": [py, os.path.join(HERE, "run_posteriordb.py"),
                        "--out", os.path.join(res, f"posteriordb{sfx}.json"), "--md", md],
        "pyro": [py, os.path.join(HERE, "run_pyro.py"),
                 "--out", os.path.join(res, f"pyro{sfx}.json"), "--md", md],
        "plots": [py, os.path.join(REPO, "docs", "_scripts", "benchmark_plots.py"),
                  "--results", os.path.join(res, f"numpyro{nsfx}.json"),
                  "--out", os.path.join(img, f"benchmark_ess_per_grad{sfx}.png")],
    }
    if quick:
        for name, extra in QUICK_ARGS.items():
            cmds[name] += extra
    # paths inside the repository as relative ones (the steps run in REPO), so that the
    # commands recorded in the outputs read the same on every machine
    cmds = {k: [v[0]] + [os.path.relpath(a, REPO) if a.startswith(REPO + os.sep) else a for a in v[1:]]
            for k, v in cmds.items()}
    return cmds, res


def sampler_errors(cmd):
    """``target/sampler`` of every record with status ``error`` in the step's JSON (the
    scripts record a failing sampler and go on, so the exit status alone would hide it)."""
    path = cmd[cmd.index("--out") + 1] if "--out" in cmd else ""
    if not path.endswith(".json"):
        return []
    try:
        with open(os.path.join(REPO, path)) as f:  # relative paths are relative to REPO
            results = json.load(f).get("results", [])
    except (OSError, ValueError):
        return [f"(no readable results in {path})"]
    return [f"{r.get('target')}/{r.get('sampler')}" for r in results if r.get("status") == "error"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run of every script")
    p.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS), help="run these steps only")
    p.add_argument("--out-dir", default=None,
                   help="write JSON, markdown and PNG here instead of into the repository")
    args = p.parse_args(argv)
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        src = os.path.join(REPO, "docs", "benchmarks.md")
        dst = os.path.join(args.out_dir, "benchmarks.md")
        if os.path.exists(src) and not os.path.exists(dst):
            shutil.copyfile(src, dst)
    cmds, res = step_commands(args.quick, args.out_dir)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    summary = {
        "command": "python benchmarks/run_all.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": results_io.machine_info(("jax", "numpyro", "blackjax", "torch", "pyro-ppl", "arviz",
                                            "esh-kernels")),
        "steps": [],
    }
    failed = []
    for name in STEPS:
        if name not in args.only:
            continue
        cmd = cmds[name]
        print(f"[run_all] {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
        minutes = (time.perf_counter() - t0) / 60
        errors = sampler_errors(cmd)
        summary["steps"].append({"step": name, "argv": cmd[1:], "returncode": rc, "minutes": minutes,
                                 "sampler_errors": errors})
        print(f"[run_all] {name}: exit {rc} after {minutes:.1f} min"
              + (f"; sampler errors: {', '.join(errors)}" if errors else ""), flush=True)
        if rc != 0 or errors:
            failed.append(name)
    path = os.path.join(res, f"run_all{'_quick' if args.quick else ''}.json")
    os.makedirs(res, exist_ok=True)
    with open(path, "w") as f:
        json.dump(results_io.jsonable(summary), f, indent=1)
    if failed:
        print(f"[run_all] FAILED steps: {', '.join(failed)}", flush=True)
        return 1
    print(f"[run_all] all steps passed; summary in {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
