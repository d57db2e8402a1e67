"""Plots of the NumPyro benchmark results for the documentation site.

Reads ``benchmarks/results/numpyro.json`` (written by ``benchmarks/run_numpyro.py``) and
writes ``docs/img/benchmark_ess_per_grad.png``: min bulk ESS per 1000 gradient evaluations
for every sampler and target, after warmup and with warmup counted. Re-run after a new
benchmark run::

    python docs/_scripts/benchmark_plots.py

Needs matplotlib only (a few seconds).
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def load(path):
    data = json.loads(Path(path).read_text())
    rows = [r for r in data["results"] if r.get("status") == "ok"]
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
            values = [table.get((t, sampler), {}).get(key) or np.nan for t in targets]
            ax.bar(x + (j - (len(samplers) - 1) / 2) * width, values, width, label=labels[sampler])
        ax.set_xticks(x, targets, rotation=25, ha="right")
        ax.set_yscale("log")
        ax.set_title(f"min bulk ESS per 1000 gradients, {title}", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("ESS / 1000 gradient evaluations (log scale)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=4)
    config = meta.get("config", {})
    fig.suptitle(
        f"NumPyro benchmark ({meta.get('date', '')[:10]}): {config.get('num_warmup')} warmup + "
        f"{config.get('num_samples')} draws, {config.get('num_chains')} chains "
        f"({config.get('chees_chains')} for ChEES)", fontsize=10)
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
