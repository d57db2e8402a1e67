"""The ```python blocks of ``docs/energy_models.md`` run as written.

Each block is a complete program (the page promises copy-paste snippets, not fragments):
it runs in a fresh interpreter in a temporary directory, with one CPU thread, and must
exit cleanly within the time limit. Call signatures on that page are ```text blocks and
are not run. A block whose backend is not installed is skipped.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "energy_models.md"
TIMEOUT_S = 120
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _blocks():
    return BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def _backend(code):
    return "jax" if "esh_kernels.jax" in code else "torch"


def test_page_has_the_snippets():
    # torch quick start, JAX quick start, ReplayBuffer training loop
    backends = [_backend(code) for code in _blocks()]
    assert backends == ["torch", "jax", "torch"], backends


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_snippet_runs(index, tmp_path):
    code = _blocks()[index]
    backend = _backend(code)
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"needs {backend}")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"snippet {index} ({backend}) failed:\n{proc.stderr[-3000:]}"
