#!/usr/bin/env python
"""Our kernels against NumPyro NUTS on the ten posteriordb data sets that come without
reference draws (``shared/data/posteriordb/``; models in ``benchmarks/pdb_models/``).

    python benchmarks/pdb_check.py [--posteriors ...] [--samplers ...] [--seed 0]
                                   [--time-limit 900] [--render]

Each (posterior, sampler) is one ``MCMC(Kernel(model), num_warmup=1000, num_samples=1000,
num_chains=4)`` at the kernel's defaults (NUTS ``sequential``, ours ``vectorized``, float64),
run in a process of its own and stopped after ``--time-limit`` seconds
(:func:`runner.run_in_process`). With no reference draws, each kernel is compared with the
NUTS run of the same seed: for every parameter (constrained scale, deterministic sites
included) the mean and the sd, ``z = (ours - NUTS) / sqrt(mcse_ours^2 + mcse_NUTS^2)``
(ArviZ's ``mcse``). A run passes when max R-hat < 1.01, min bulk ESS of ``x`` >= 100 and every
``|z| <= 4`` (``pdb_judge``'s thresholds); where NUTS itself fails R-hat or ESS, its
posterior's ``z`` are not judged. Next to the verdict, the project's headline: min over the
parameters of bulk ESS of ``x`` and ``x^2`` per 1000 gradients, after warmup and with warmup
counted (``yardstick``). Gradients to ``b2 < 0.01`` need second moments of a reference, which
these posteriors do not have here. Writes ``benchmarks/results/pdb_check.json`` and the
``pdb_check`` section of ``docs/benchmarks.md`` (``runner.BenchmarkRun``).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import runner  # noqa: E402
from pdb_judge import ESS_MIN, RHAT_MAX, Z_MAX  # noqa: E402
from yardstick import ess_x_and_x2, per_1k_grad  # noqa: E402

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
CONFIG = {"num_warmup": 1000, "num_samples": 1000, "num_chains": 4}


def load_model(name):
    """The NumPyro model of posterior ``name`` on its data (``shared/data/posteriordb``)."""
    import importlib
    import json

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
    """One run: gradients, the headline and per-parameter summaries (module level: it runs
    in a spawned process)."""
    import run_numpyro as rn
    from jax import random

    rn.CLOCK = rn.CompileClock()
    cfg = rn.Config(**CONFIG, chees_chains=0, seed=seed)

    class Target:
        pass

    target = Target()
    target.name, target.model = name, load_model(name)
    raw = rn.run_numpyro_sampler(sampler, target, cfg, random.PRNGKey(seed), constrained=True)
    if raw["status"] != "ok":
        return raw
    flat = {k: x for k, x in flat_parameters(raw["samples"]).items() if np.ptp(x) > 0}
    both = ess_x_and_x2(np.stack(list(flat.values()), axis=-1))
    gw, gs = raw["grads_warmup"], raw["grads_sample"]
    return {"status": "ok", "seed": seed,
            "grads_warmup_per_chain": gw / cfg.num_chains,
            "grads_per_draw": gs / (cfg.num_chains * cfg.num_samples),
            "ess_x_x2_min": both["ess"], "ess_x_x2_min_param": list(flat)[both["coord"]],
            "ess_x_x2_min_stat": both["stat"],
            "ess_per_1k_grad": per_1k_grad(both["ess"], gs),
            "ess_per_1k_grad_with_warmup": per_1k_grad(both["ess"], gs + gw),
            "divergences": raw["info"].get("divergences"), "self_check": raw["info"].get("self_check", []),
            "params": {k: summarise(x) for k, x in flat.items()}}


def verdict(rec, nuts):
    """``(verdict, detail)`` of a run, against the NUTS record of its posterior and seed
    (``nuts``; None for NUTS itself)."""
    if rec["status"] != "ok":
        return rec["status"], rec.get("note") or rec.get("error", "")
    ps = rec["params"]
    rhat = max(ps, key=lambda k: ps[k]["rhat"])
    ess = min(ps, key=lambda k: ps[k]["ess_bulk"])
    failed = []
    if not ps[rhat]["rhat"] < RHAT_MAX:
        failed.append(f"R-hat {ps[rhat]['rhat']:.3f} ({rhat})")
    if not ps[ess]["ess_bulk"] >= ESS_MIN:
        failed.append(f"bulk ESS {ps[ess]['ess_bulk']:.0f} ({ess})")
    judged = nuts is not None and verdict(nuts, None)[0] == "pass"
    worst = (0.0, "")
    for k, p in ps.items() if judged else ():
        q = nuts["params"].get(k)
        for stat in ("mean", "sd") if q is not None else ():
            z = (p[stat] - q[stat]) / float(np.hypot(p[f"mcse_{stat}"], q[f"mcse_{stat}"]))
            if abs(z) > abs(worst[0]):
                worst = (z, f"{k} {stat} z = {z:+.1f}")
    if abs(worst[0]) > Z_MAX:
        failed.append(worst[1])
    detail = "; ".join(failed) if failed else (worst[1] if judged else "not compared")
    return ("fail" if failed else "pass"), detail


def markdown_section(payload):
    results = payload["results"]
    by = {(r["target"], r["sampler"], r.get("seed")): r for r in results}
    meta = payload["meta"]
    lines = [
        "## posteriordb: ten more posteriors, against NUTS",
        "",
        "Generated by `benchmarks/pdb_check.py`; do not edit this section by hand.",
        "",
        f"- Command: `{meta['command']}`; date {meta['date']}; machine: {meta['machine'].get('nproc', '?')} CPUs, {meta['machine'].get('cpu_model', '?')}; commit {meta['machine'].get('git_commit', '?')}",
        "- Each cell: verdict; min bulk ESS of `x` and `x^2` per 1000 gradients after warmup / with "
        "warmup (n/a: a row from before the script computed it); max R-hat, min bulk ESS of `x` "
        "(of 4000 draws), gradients per sampling draw; the worst check. Each row's command and date "
        "are in the JSON.",
        "",
        "| posterior | " + " | ".join(SAMPLERS) + " |",
        "|---" * (len(SAMPLERS) + 1) + "|",
    ]
    for name in POSTERIORS:
        seeds = sorted({r.get("seed") for r in results if r["target"] == name})
        for seed in seeds:
            nuts = by.get((name, "nuts", seed))
            cells = []
            for s in SAMPLERS:
                r = by.get((name, s, seed))
                if r is None:
                    cells.append("")
                    continue
                v, detail = verdict(r, None if s == "nuts" else nuts)
                if r["status"] != "ok":
                    cells.append(f"{v}: {detail}")
                    continue
                ps = r["params"]
                head = ("n/a" if "ess_per_1k_grad" not in r
                        else f"{r['ess_per_1k_grad']:.3g} / {r['ess_per_1k_grad_with_warmup']:.3g}")
                cells.append(f"**{v}**; {head}; R-hat {max(p['rhat'] for p in ps.values()):.3f}, ESS "
                             f"{min(p['ess_bulk'] for p in ps.values()):.0f}, {r['grads_per_draw']:.1f} "
                             f"grads/draw; {detail}")
            label = name if len(seeds) == 1 else f"{name} (seed {seed})"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    import run_numpyro as rn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posteriors", nargs="+", choices=POSTERIORS, default=list(POSTERIORS))
    p.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=900.0, metavar="SECONDS")
    runner.add_output_options(
        p, out_help="JSON path (default benchmarks/results/pdb_check.json)",
        md_default=os.path.join(REPO, "docs", "benchmarks.md"),
        md_help="markdown file whose pdb_check section is (re)written (default docs/benchmarks.md)",
        fresh_help="do not merge with earlier rows", merge_from_help="also merge the rows of these files",
        render_help="run nothing: rewrite --out and its markdown section",
    )
    args = p.parse_args(argv)
    run = runner.BenchmarkRun(
        "pdb_check", args, argv, out=args.out or os.path.join(HERE, "results", "pdb_check.json"),
        mode="full", config=CONFIG, machine=rn.machine_info(), target_order=POSTERIORS,
        sampler_order=SAMPLERS, markdown=markdown_section, note_merged=False,
    )
    if args.render:
        run.render()
        return 0
    for name in args.posteriors:
        for s in args.samplers:
            rec = run.attempt({"target": name, "sampler": s, "seed": args.seed, "date": run.date},
                              runner.run_in_process, run_one, (name, s, args.seed), args.time_limit)
            print(name, s, rec["status"], rec.get("note", ""), flush=True)
    run.finish()
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
