"""Plots of the NumPyro benchmark results for the documentation site.

Reads ``benchmarks/results/numpyro.json`` (written by ``benchmarks/run_numpyro.py``) and
writes ``docs/img/benchmark_ess_per_grad.png``: the headline of the yardstick, min bulk ESS
of x and x^2 per 1000 gradient evaluations, for every sampler and target, after warmup and
with warmup counted: the median over seeds, with the min-max range as an error bar. Re-run after a new
benchmark run::

    python docs/_scripts/benchmark_plots.py

Needs matplotlib only (a few seconds).
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import results_io  # noqa: E402  (the same median-over-seeds as the tables)


def load(path):
    data = json.loads(Path(path).read_text())
    rows = [r for r in results_io.aggregate_seeds(data["results"]) if r.get("status") == "ok"]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    labels = {r["sampler"]: r["sampler_label"] for r in rows}
    descriptions = {r["target"]: r.get("target_description", r["target"]) for r in rows}
    table = {(r["target"], r["sampler"]): r for r in rows}
    return data["meta"], targets, samplers, labels, descriptions, table


def plot(path, out):
    meta, targets, samplers, labels, _, table = load(path)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), sharey=True)
    width = 0.8 / len(samplers)
    x = np.arange(len(targets))
    panels = [("ess_per_1k_grad", "after warmup"), ("ess_per_1k_grad_with_warmup", "warmup gradients counted")]
    for ax, (key, title) in zip(axes, panels):
        for j, sampler in enumerate(samplers):
            rows = [table.get((t, sampler), {}) for t in targets]
            values = np.array([r.get(key) or np.nan for r in rows])
            lo = np.array([(r.get("range", {}).get(key) or (v, v))[0] or v for r, v in zip(rows, values)])
            hi = np.array([(r.get("range", {}).get(key) or (v, v))[1] or v for r, v in zip(rows, values)])
            ax.bar(x + (j - (len(samplers) - 1) / 2) * width, values, width, label=labels[sampler],
                   yerr=np.stack([values - lo, hi - values]), error_kw={"elinewidth": 0.6, "capsize": 1})
        ax.set_xticks(x, targets, rotation=25, ha="right")
        ax.set_yscale("log")
        ax.set_title(f"min bulk ESS of x and x^2 per 1000 gradients, {title}", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("ESS / 1000 gradient evaluations (log scale)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=4)
    config = meta.get("config", {})
    seeds = sorted({r.get("seed") for r in json.loads(Path(path).read_text())["results"]} - {None})
    other_chains = {smp: int(r["num_chains"]) for (_, smp), r in table.items()
                    if r.get("num_chains") not in (None, config.get("num_chains"))}
    fig.suptitle(
        f"NumPyro benchmark ({meta.get('date', '')[:10]}): {config.get('num_warmup')} warmup + "
        f"{config.get('num_samples')} draws, {config.get('num_chains')} chains"
        + "".join(f", {n} for {labels[smp]}" for smp, n in other_chains.items())
        + (f"; median over seeds {', '.join(map(str, seeds))}, bars min-max" if seeds else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=ROOT / "benchmarks" / "results" / "numpyro.json")
    parser.add_argument("--out", default=ROOT / "docs" / "img" / "benchmark_ess_per_grad.png")
    args = parser.parse_args()
    print(f"wrote {plot(args.results, Path(args.out))}")


if __name__ == "__main__":
    main()
