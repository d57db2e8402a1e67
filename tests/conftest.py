"""Shared fixtures for the tests.

JAX stays in its default float32 mode at import time: other test files run NumPyro kernels
in float32 and float64. Tests that need JAX in float64 take the ``jax_x64`` fixture, which
turns ``jax_enable_x64`` on only for the duration of that test and restores the previous
setting afterwards. Core tests that only need float64 arithmetic use numpy float64 arrays
or torch float64 tensors instead.
"""

import contextlib
import os
import sys
import tempfile

import pytest

try:  # torch is optional for the JAX-only parts of the suite
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None


def pytest_configure(config):
    """Subprocesses import this checkout (``PYTHONPATH``). XLA compiles at optimisation
    level 0 (below). A persistent JAX compilation cache shared by the whole session (and
    by the example scripts the tests start, through ``JAX_COMPILATION_CACHE_DIR``): many
    tests compile the same model and kernel programs, which JAX's in-memory cache misses
    because each test builds new kernel objects. A fresh folder per session unless one is
    set already, removed when the session ends (:func:`pytest_unconfigure`)."""
    # Scripts and snippets the tests start in subprocesses import this checkout, whatever
    # is installed (an editable install may point at another clone).
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root] + paths)
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        config._esh_kernels_jax_cache = tempfile.mkdtemp(prefix="esh_kernels_jax_cache_")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config._esh_kernels_jax_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    # Compile without LLVM's optimisation passes: nearly every program in the suite is
    # compiled once and runs for seconds, so compilation dominates. Measured on the idle
    # 2-core machine (2026-12-04, 691 tests): 17.5 min at the default level, 13.9 min at 0,
    # every test passing in both. Floating-point results differ in the last bits from a
    # user's optimised build (other fused operations), so fixed-seed paths differ too; the
    # statistical checks passed in both runs. Subprocess tests that set their own XLA_FLAGS
    # (device counts) run at the default level.
    #
    # The kernels' programs hold the self-check's host callback, and JAX never writes a
    # program with a host callback to its persistent cache, so each test that builds a
    # kernel compiles it anew (2-4 s). XLA's CPU fusion emitters are off for the same
    # reason: measured on the 2-core AMD machine (2026-12-05), a fresh ESH kernel on a 2-D
    # model took 2.5 s to compile and run instead of 4.2 s, and the 100-D dense-metric tests
    # ran 50 s instead of 65 s. The flag is given only if this XLA knows it (an unknown flag
    # aborts the process).
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        fast = ["--xla_backend_optimization_level=0"]
        if _xla_accepts(FUSION_EMITTERS_OFF):
            fast.append(FUSION_EMITTERS_OFF)
        os.environ["XLA_FLAGS"] = " ".join([flags] + fast).strip()
    # HOST_DEVICES CPU devices in this process (not in the subprocesses, whose scripts and
    # examples run as a user's would, on one): the tests of chain_method="parallel" (pmap)
    # and of chains sharded over devices run in the suite's own workers, where each once
    # re-ran itself in a fresh interpreter at 20-45 s. JAX takes the count only before its
    # backend starts, which nothing has done yet here.
    try:
        import jax
    except ImportError:  # pragma: no cover
        return
    jax.config.update("jax_num_cpu_devices", HOST_DEVICES)


#: CPU devices of a test worker's JAX (:func:`pytest_configure`)
HOST_DEVICES = 4
#: XLA flag of :func:`pytest_configure`: compile CPU programs without the fusion emitters
FUSION_EMITTERS_OFF = "--xla_cpu_use_fusion_emitters=false"


def pytest_unconfigure(config):
    """Remove the session's compilation cache folder, if this process made it (the
    controller of an ``xdist`` run, after its workers, which share it, have ended): 20-40 MB
    per run, which each run left in the temporary folder until 2026-12-06."""
    folder = getattr(config, "_esh_kernels_jax_cache", None)
    if folder is not None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def default_xla_flags():
    """``XLA_FLAGS`` without the fast-compilation flags of :func:`pytest_configure`: for a
    test that runs a script in a fresh interpreter because it checks a property of the
    programs a user's XLA builds (bitwise equal draws across device layouts)."""
    fast = ("--xla_backend_optimization_level=", FUSION_EMITTERS_OFF)
    return " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                    if not f.startswith(fast))


def _xla_accepts(flag):
    """Whether this jaxlib's XLA starts with ``flag`` in ``XLA_FLAGS`` (tried in a fresh
    interpreter: XLA ends a process whose ``XLA_FLAGS`` hold a flag it does not know)."""
    import subprocess

    env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
    probe = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    try:
        return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                              timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Free JAX's compiled programs after each test file. A worker process compiles
    hundreds of programs over the session, each mapped into memory by LLVM; kept, their
    mappings reach the kernel's ``vm.max_map_count`` (65530) and the next compilation
    fails ("LLVM compilation error: Cannot allocate memory", seen on this 2-core machine
    at the end of a loaded run). Programs a later file needs again come back from the
    persistent cache of :func:`pytest_configure`."""
    yield
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.clear_caches()


@contextlib.contextmanager
def _x64():
    """Enable JAX float64 inside the block (the API moved across JAX versions)."""
    import jax

    if hasattr(jax, "enable_x64"):  # jax >= 0.7: a config context manager
        with jax.enable_x64(True):
            yield
        return
    try:  # older JAX
        from jax.experimental import enable_x64
    except ImportError:  # pragma: no cover
        enable_x64 = None
    if enable_x64 is not None:
        with enable_x64():
            yield
        return
    previous = jax.config.jax_enable_x64  # pragma: no cover
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def without_funsor(monkeypatch):
    """NumPyro as it is without ``funsor``: ``import funsor`` and NumPyro's
    ``numpyro.contrib.funsor`` raise ``ImportError`` for this test only, so a model with a
    discrete latent site cannot be enumerated (with funsor installed, NumPyro enumerates it and
    the kernels sample it, as NUTS does)."""
    import sys

    for name in [m for m in sys.modules if m == "funsor" or m.startswith(("funsor.", "numpyro.contrib.funsor"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "funsor", None)
    monkeypatch.setitem(sys.modules, "numpyro.contrib.funsor", None)


@pytest.fixture
def jax_x64():
    """``jax.numpy`` with 64-bit types enabled for this test only."""
    pytest.importorskip("jax")
    import jax.numpy as jnp

    with _x64():
        assert jnp.asarray(1.0).dtype == jnp.float64
        yield jnp
    assert jnp.asarray(1.0).dtype == jnp.float32 or _x64_was_global()


def _x64_was_global():
    import jax

    return bool(jax.config.jax_enable_x64)
