#!/usr/bin/env python
"""Our kernels against NumPyro NUTS on the ten posteriordb data sets that come without
reference draws (``shared/data/posteriordb/``; models in ``benchmarks/pdb_models/``).

    python benchmarks/pdb_check.py [--posteriors ...] [--samplers ...] [--seed 0]
                                   [--time-limit 900] [--out JSON]

Each (posterior, sampler) is one ``MCMC(Kernel(model), num_warmup=1000, num_samples=1000,
num_chains=4)`` at the kernel's defaults (NUTS ``sequential``, ours ``vectorized``, float64),
run in a process of its own (XLA keeps memory maps for every program it compiled, and ten
posteriors in one process ran out of them) and stopped after ``--time-limit`` seconds.
With no reference draws, each kernel is compared with the NUTS run of the same invocation:
for every parameter (constrained scale, deterministic sites included) the mean and the sd,
``z = (ours - NUTS) / sqrt(mcse_ours^2 + mcse_NUTS^2)`` (ArviZ's ``mcse``). A run passes when
max R-hat < 1.01, min bulk ESS >= 100 and every ``|z| <= 4`` (``pdb_judge``'s thresholds; a
NUTS run that itself fails R-hat or ESS leaves its posterior's ``z`` unjudged). Writes the
rows to ``--out`` (default ``benchmarks/results/pdb_check.json``; a row re-run replaces its
earlier one, and each row keeps the command and date that made it) and prints a markdown
table.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from pdb_judge import ESS_MIN, RHAT_MAX, Z_MAX  # noqa: E402

POSTERIORS = (
    "arK-arK",
    "diamonds-diamonds",
    "earnings-logearn_interaction",
    "eight_schools-eight_schools_centered",
    "eight_schools-eight_schools_noncentered",
    "garch-garch11",
    "gp_pois_regr-gp_pois_regr",
    "kidiq-kidscore_momiq",
    "low_dim_gauss_mix-low_dim_gauss_mix",
    "nes2000-nes",
)
SAMPLERS = ("nuts", "adjusted_esh", "esh", "tuned_hmc")


def load_model(name):
    """The NumPyro model of posterior ``name`` on its data (``shared/data/posteriordb``)."""
    import importlib

    from shared_data import shared_path

    with open(shared_path("data", "posteriordb", name, "data.json")) as f:
        data = {k: np.asarray(v) for k, v in json.load(f).items()}
    return importlib.import_module("pdb_models." + name.split("-", 1)[1]).numpyro_model(data)


def flat_parameters(samples):
    """``{site: (C, N, *shape)}`` -> ``{"site[i,j]": (C, N)}`` (Stan's 1-based names)."""
    out = {}
    for site, v in samples.items():
        v = np.asarray(v, dtype=np.float64)
        shape = v.shape[2:]
        for idx in np.ndindex(*shape):
            name = site if not shape else f"{site}[{','.join(str(i + 1) for i in idx)}]"
            out[name] = v[(slice(None), slice(None)) + idx]
    return out


def summarise(x):
    import arviz as az

    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)),
            "mcse_mean": float(az.mcse(x, method="mean")), "mcse_sd": float(az.mcse(x, method="sd")),
            "ess_bulk": float(az.ess(x, method="bulk")), "rhat": float(az.rhat(x))}


def run_one(name, sampler, seed):
    """One run: the record (status, gradients, per-parameter summaries, self-check)."""
    import run_numpyro as rn
    from jax import random

    rn.CLOCK = rn.CompileClock()
    cfg = rn.Config(num_warmup=1000, num_samples=1000, num_chains=4, chees_chains=0, seed=seed)

    class Target:
        pass

    target = Target()
    target.name, target.model = name, load_model(name)
    t0 = time.perf_counter()
    raw = rn.run_numpyro_sampler(sampler, target, cfg, random.PRNGKey(seed), constrained=True)
    wall = time.perf_counter() - t0
    params = {k: summarise(x) for k, x in flat_parameters(raw["samples"]).items() if np.ptp(x) > 0}
    info = raw["info"]
    return {"status": "ok", "posterior": name, "sampler": sampler, "seed": seed, "wall_s": wall,
            "grads_warmup_per_chain": raw["grads_warmup"] / cfg.num_chains,
            "grads_per_draw": raw["grads_sample"] / (cfg.num_chains * cfg.num_samples),
            "divergences": info.get("divergences"), "self_check": info.get("self_check", []),
            "params": params}


def _child(queue, name, sampler, seed):
    try:
        queue.put(run_one(name, sampler, seed))
    except Exception as e:  # noqa: BLE001 - reported as the row's status
        queue.put({"status": "error", "posterior": name, "sampler": sampler, "seed": seed,
                   "note": f"{type(e).__name__}: {e}"})


def run_limited(name, sampler, seed, limit):
    import multiprocessing
    import queue as queue_mod

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(q, name, sampler, seed))
    proc.start()
    try:
        rec = q.get(timeout=limit)
    except queue_mod.Empty:
        proc.terminate()
        rec = {"status": "timeout", "posterior": name, "sampler": sampler, "seed": seed,
               "note": f"did not finish in {limit:.0f} s (stopped)"}
    proc.join()
    return rec


def verdict(rec, nuts):
    """``(verdict, worst)`` of a run, against the NUTS run of its posterior (``nuts``: its
    record, or None)."""
    if rec["status"] != "ok":
        return rec["status"], rec.get("note", "")
    ps = rec["params"]
    rhat = max(ps, key=lambda k: ps[k]["rhat"])
    ess = min(ps, key=lambda k: ps[k]["ess_bulk"])
    failed = []
    if not ps[rhat]["rhat"] < RHAT_MAX:
        failed.append(f"R-hat {ps[rhat]['rhat']:.3f} ({rhat})")
    if not ps[ess]["ess_bulk"] >= ESS_MIN:
        failed.append(f"bulk ESS {ps[ess]['ess_bulk']:.0f} ({ess})")
    worst = (0.0, "")
    judged = nuts is not None and nuts["status"] == "ok" and rec is not nuts and verdict(nuts, None)[0] == "pass"
    if judged:
        for k, p in ps.items():
            q = nuts["params"].get(k)
            if q is None:
                continue
            for stat in ("mean", "sd"):
                z = (p[stat] - q[stat]) / float(np.hypot(p[f"mcse_{stat}"], q[f"mcse_{stat}"]))
                if abs(z) > abs(worst[0]):
                    worst = (z, f"{k} {stat} z = {z:+.1f}")
        if abs(worst[0]) > Z_MAX:
            failed.append(worst[1])
    detail = "; ".join(failed) if failed else (worst[1] if judged else "not compared")
    return ("fail" if failed else "pass"), detail


def table(rows):
    by = {(r["posterior"], r["sampler"]): r for r in rows}
    lines = ["| posterior | " + " | ".join(SAMPLERS) + " |", "|---" * (len(SAMPLERS) + 1) + "|"]
    for name in POSTERIORS:
        nuts = by.get((name, "nuts"))
        cells = []
        for s in SAMPLERS:
            r = by.get((name, s))
            if r is None:
                cells.append("")
                continue
            v, detail = verdict(r, nuts)
            if r["status"] != "ok":
                cells.append(v)
                continue
            ps = r["params"]
            cells.append(f"**{v}**; R-hat {max(p['rhat'] for p in ps.values()):.3f}, ESS "
                         f"{min(p['ess_bulk'] for p in ps.values()):.0f}, {r['grads_per_draw']:.1f} "
                         f"grads/draw; {detail}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posteriors", nargs="+", choices=POSTERIORS, default=list(POSTERIORS))
    p.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=900.0)
    p.add_argument("--out", default=os.path.join(HERE, "results", "pdb_check.json"))
    p.add_argument("--render", action="store_true", help="run nothing: print the table of --out")
    args = p.parse_args(argv)
    rows = json.load(open(args.out))["results"] if os.path.exists(args.out) else []
    if not args.render:
        for name in args.posteriors:
            for s in args.samplers:
                rec = run_limited(name, s, args.seed, args.time_limit)
                rec["command"] = "python benchmarks/pdb_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
                rec["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                rows = [r for r in rows if (r["posterior"], r["sampler"], r["seed"]) != (name, s, args.seed)]
                rows.append(rec)
                print(name, s, rec["status"], rec.get("note", ""), flush=True)
                with open(args.out, "w") as f:
                    json.dump({"results": rows}, f, indent=1)
    print(table([r for r in rows if r["seed"] == args.seed]))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
