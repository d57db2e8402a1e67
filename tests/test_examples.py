"""Every script in ``examples/`` runs with ``--quick`` and writes its files.

Each test runs its example as a subprocess in its own temporary directory, with a time
limit (pytest-xdist spreads the examples over its workers; a session-wide fixture that
ran them all would run on every worker), and checks the exit status, the output files, a
line of the output and the line that says a ``--quick`` run is a smoke run. An example
whose backend is not installed is skipped.
"""

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples"
TIMEOUT_S = 300

#: script -> (modules it needs, files it writes into --out (None: takes no --out), text in stdout)
EXAMPLES = {
    "demo.py": (("numpyro",), None, "Eight schools"),
    "energy_network.py": (("torch",), None, "log Z"),
    "eight_schools_numpyro.py": (("numpyro", "arviz"), ["eight_schools_numpyro_summary.csv"], "gradient evaluations"),
    "eight_schools_pyro.py": (("torch", "pyro", "arviz"), ["eight_schools_pyro_summary.csv"], "gradient evaluations"),
    "logistic_regression.py": (("numpyro", "arviz"), ["logistic_regression_summary.csv"], "true weights within"),
    "hierarchical.py": (
        ("numpyro", "arviz", "matplotlib"),
        ["hierarchical_trace.png", "hierarchical_rank.png", "hierarchical_forest.png",
         "hierarchical_pair.png", "hierarchical_summary.csv"],
        "max R-hat",
    ),
    "mixture_of_gaussians.py": (("numpyro", "matplotlib"), ["mixture_of_gaussians.png"], "share of draws"),
    "many_chains.py": (("numpyro", "arviz"), ["many_chains.json"], "chains x"),
}


def _missing(modules):
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _run(script, workdir):
    modules, files, _ = EXAMPLES[script]
    cmd = [sys.executable, str(EXAMPLES_DIR / script), "--quick"]
    out = workdir / "out"
    if files is not None:
        cmd += ["--out", str(out)]
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        result = (proc.returncode, proc.stdout, proc.stderr)
    except subprocess.TimeoutExpired as err:
        result = (None, err.stdout or "", f"timed out after {TIMEOUT_S} s")
    return result + (out, time.perf_counter() - start)


def test_every_example_is_listed():
    scripts = sorted(p.name for p in EXAMPLES_DIR.glob("*.py"))
    assert scripts == sorted(EXAMPLES), "add new examples to EXAMPLES in tests/test_examples.py"


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example(script, tmp_path):
    modules, files, expected = EXAMPLES[script]
    missing = _missing(modules)
    if missing:
        pytest.skip(f"{script} needs {', '.join(missing)}")
    returncode, stdout, stderr, out, seconds = _run(script, tmp_path)
    assert returncode == 0, f"{script} --quick failed ({returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
    assert expected in stdout, stdout[-3000:]
    # a --quick run must not pass off its numbers as results
    assert "smoke run" in stdout and "not converged" in stdout, stdout[-3000:]
    for name in files or ():
        path = out / name
        assert path.is_file(), f"{script} did not write {name}; wrote {sorted(p.name for p in out.glob('*'))}"
        assert path.stat().st_size > 100
    print(f"{script}: {seconds:.1f} s")
