"""What the benchmark scripts' results share: the machine/version record, JSON-safe
conversion, merging with an earlier result file of the same configuration, the markdown
tables and number format, and writing the JSON and the markdown section (``runner.py``
drives these for a run)."""

import json
import os
import platform
import subprocess
from importlib import metadata

import numpy as np

from yardstick import median_not_reached

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine_info(packages):
    """CPU model, core count, load average, versions of ``packages`` and the git commit
    (flagging uncommitted changes under ``esh_kernels/``)."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for pkg in packages:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "esh_kernels"],
                               capture_output=True, text=True).stdout.strip()
        commit += " (esh_kernels/ has uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "loadavg_at_start": load,
        "versions": versions,
        "git_commit": commit,
    }


def jsonable(o):
    """``o`` with numpy scalars/arrays turned into Python numbers and non-finite into None."""
    if isinstance(o, dict):
        return {k: jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    return o


def load_previous(path, config):
    """Earlier results of the same configuration (budgets, chains, seed), to merge."""
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return []
    if old.get("meta", {}).get("config") != config:
        return []
    return old.get("results", [])


DOC_HEADER = """# Benchmarks

Sampler comparisons for `esh_kernels`. The sections below are written by the benchmark
scripts; each section says how it was produced. Re-run a script to refresh its section.
"""


def write_markdown_section(path, script, mode, body):
    """Replace the part of ``path`` between ``<!-- BEGIN {script}:{mode} -->`` and
    ``<!-- END {script}:{mode} -->`` with ``body`` (appended at the end, or the full run's
    section just before the quick one, when the markers are not there yet); the rest of
    the file (hand-written notes) is left alone."""
    begin, end = f"<!-- BEGIN {script}:{mode} -->", f"<!-- END {script}:{mode} -->"
    section = f"{begin}\n{body}\n{end}\n"
    text = open(path).read() if os.path.exists(path) else DOC_HEADER + "\n"
    quick_begin = f"<!-- BEGIN {script}:quick -->"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        text = pre + section.rstrip("\n") + post
    elif mode == "full" and quick_begin in text:
        pre, post = text.split(quick_begin, 1)
        text = pre + section + "\n" + quick_begin + post
    else:
        text = text.rstrip("\n") + "\n\n" + section
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def merge_results(previous, new, target_order, sampler_order):
    """``previous`` records not re-run in ``new``, plus ``new``, in target, sampler and seed
    order (how a partial re-run of a script updates its JSON). A record is identified by
    its target, sampler and (when it has one) seed."""

    def ident(r):
        return r["target"], r["sampler"], r.get("seed")

    keep = {ident(r) for r in new}
    merged = [r for r in previous if ident(r) not in keep] + list(new)
    torder = {n: i for i, n in enumerate(target_order)}
    sorder = {n: i for i, n in enumerate(sampler_order)}
    merged.sort(key=lambda r: (torder[r["target"]], sorder[r["sampler"]], r.get("seed") or 0))
    return merged


def merge_files(previous, paths, config, target_order, sampler_order):
    """``previous`` merged with the records of the result files ``paths`` (``--merge-from``:
    runs made in other processes); a file without records of ``config`` is an error."""
    for path in paths:
        rows = load_previous(path, config)
        if not rows:
            raise SystemExit(f"--merge-from {path}: no rows of this configuration ({config})")
        previous = merge_results(previous, rows, target_order, sampler_order)
    return previous


def is_number_or_none(values):
    """Whether ``values`` are numbers or ``None`` ("not reached"), not all ``None`` (booleans
    are not numbers here): the values a median over runs is taken of."""
    return (not all(v is None for v in values)
            and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values))


def aggregate_seeds(results):
    """One record per (target, sampler) from records of several seeds: every number is the
    median over the seeds whose run finished (``status == "ok"``), its min and max are under
    ``range[key]``, ``seeds`` lists the seeds used and ``seeds_failed`` the others. A pair
    with no finished seed keeps the first record as it is. ``None`` (e.g. "never reached")
    counts as larger than any number, so the median of ``[10, None, None]`` is ``None``."""
    groups = {}
    for r in results:
        groups.setdefault((r["target"], r["sampler"]), []).append(r)
    out = []
    for recs in groups.values():
        ok = [r for r in recs if r.get("status") == "ok"]
        if not ok:
            out.append(dict(recs[0]))
            continue
        agg = dict(ok[0])
        agg["seeds"] = [r.get("seed") for r in ok]
        agg["seeds_failed"] = [r.get("seed") for r in recs if r.get("status") != "ok"]
        agg["range"] = {}
        for k in ok[0]:
            vals = [r.get(k) for r in ok]
            if not is_number_or_none(vals):
                continue
            key = np.array([np.inf if x is None else x for x in vals], dtype=np.float64)
            agg[k] = median_not_reached(vals)
            agg["range"][k] = (None if np.isinf(key.min()) else float(key.min()),
                               None if np.isinf(key.max()) else float(key.max()))
        out.append(agg)
    return out


def sampler_table(results, target_order, sampler_order, labels, cell):
    """Markdown lines of a samplers x targets table: ``cell(record)`` for records with
    status ``ok``, the status otherwise, blank where a pair was not run."""
    tnames = [t for t in target_order if any(r["target"] == t for r in results)]
    snames = [s for s in sampler_order if any(r["sampler"] == s for r in results)]
    by = {(r["target"], r["sampler"]): r for r in results}
    lines = ["| sampler | " + " | ".join(tnames) + " |", "|---|" + "---|" * len(tnames)]
    for s in snames:
        cells = []
        for t in tnames:
            r = by.get((t, s))
            cells.append("" if r is None else cell(r) if r["status"] == "ok" else r["status"])
        lines.append(f"| {labels[s]} | " + " | ".join(cells) + " |")
    return lines


def target_table(results, target, sampler_order, labels, columns, cell):
    """Markdown lines of one target's samplers x metrics table: a row per sampler run on
    ``target`` (in ``sampler_order``), a column per ``(header, key)`` of ``columns`` filled
    with ``cell(record, key)``; a run that did not finish gets its status and the first
    line of its note or error instead."""
    by = {r["sampler"]: r for r in results if r["target"] == target}
    lines = ["| sampler | " + " | ".join(header for header, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for s in sampler_order:
        r = by.get(s)
        if r is None:
            continue
        if r["status"] != "ok":
            note = r.get("note") or r.get("error", "")
            lines.append(f"| {labels[s]} | {r['status']}: {note.splitlines()[0][:120] if note else ''} |"
                         + " |" * (len(columns) - 1))
            continue
        lines.append(f"| {labels[s]} | " + " | ".join(cell(r, key) for _, key in columns) + " |")
    return lines


def fmt(v, digits=3, small_digits=1):
    """A number for a markdown table: integers as they are, ``>= 100`` without decimals,
    ``>= 0.01`` to ``digits`` significant digits, smaller ones in ``e`` notation with
    ``small_digits`` decimals; ``None`` as blank, strings unchanged."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if not np.isfinite(v):
        return str(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1e-2:
        return f"{v:.{digits}g}"
    return f"{v:.{small_digits}e}"


def write_results(path, meta, results):
    """Write ``{"meta": meta, "results": results}`` as JSON (numpy values converted,
    non-finite numbers as null) and return that JSON-safe payload."""
    payload = jsonable({"meta": meta, "results": results})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    return payload
