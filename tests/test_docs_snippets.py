"""Documentation snippets run as written.

* Every ```python block of ``docs/energy_models.md`` is a complete program (the page
  promises copy-paste snippets, not fragments); call signatures there are ```text blocks
  and are not run.
* The first Pyro example (``docs/quickstart.md``, repeated at the top of ``docs/pyro.md``)
  runs, and both pages show the same code.

Each snippet runs in a fresh interpreter in a temporary directory, with one CPU thread,
and must exit cleanly within the time limit. A snippet whose backend is not installed is
skipped.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TIMEOUT_S = 120
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _blocks(page):
    return BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))


def _backend(code):
    if "esh_kernels.pyro" in code:
        return "pyro"
    return "jax" if "esh_kernels.jax" in code else "torch"


def _pyro_first_example():
    return next(code for code in _blocks("quickstart.md") if "esh_kernels.pyro" in code)


def _run(code, tmp_path):
    backend = _backend(code)
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"needs {backend}")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # the timings quoted next to the snippets are with torch.set_num_threads(1)
    program = "import torch\ntorch.set_num_threads(1)\n" if backend != "jax" else ""
    proc = subprocess.run([sys.executable, "-c", program + code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{backend} snippet failed:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_energy_models_page_has_the_snippets():
    # torch quick start, JAX quick start, ReplayBuffer training loop
    backends = [_backend(code) for code in _blocks("energy_models.md")]
    assert backends == ["torch", "jax", "torch"], backends


@pytest.mark.parametrize("index", range(len(_blocks("energy_models.md"))))
def test_energy_models_snippet_runs(index, tmp_path):
    _run(_blocks("energy_models.md")[index], tmp_path)


def test_pyro_first_example_is_the_same_on_both_pages():
    assert _pyro_first_example() == _blocks("pyro.md")[0]


def test_pyro_first_example_runs(tmp_path):
    stdout = _run(_pyro_first_example(), tmp_path)
    assert "Number of divergences" in stdout  # mcmc.summary() ran
