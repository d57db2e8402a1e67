"""What both benchmark scripts share: the machine/version record, JSON-safe conversion and
merging with an earlier result file of the same configuration."""

import json
import os
import platform
import subprocess
from importlib import metadata

import numpy as np

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
