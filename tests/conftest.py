"""Shared fixtures for the tests.

JAX stays in its default float32 mode at import time: other test files run NumPyro kernels
in float32 and float64. Tests that need JAX in float64 take the ``jax_x64`` fixture, which
turns ``jax_enable_x64`` on only for the duration of that test and restores the previous
setting afterwards. Core tests that only need float64 arithmetic use numpy float64 arrays
or torch float64 tensors instead.
"""

import contextlib

import pytest

try:  # torch is optional for the JAX-only parts of the suite
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None


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
