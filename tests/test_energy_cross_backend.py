"""The JAX and torch energy samplers give the same numbers for the same inputs (float64).

Both backends run the same step code (``esh_kernels.core``, the loop body in ``esh_kernels.core.energy_sampling``);
given the same ``x0``, ``u0`` and pre-drawn uniforms (reservoir) and normals (velocity
refresh) they must agree to 1e-10, with reflection, refresh, trajectory and diagnostics on.
"""

import math
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
import jax.numpy as jnp  # noqa: E402

import esh_kernels.jax as ejax  # noqa: E402
import esh_kernels.torch as etorch  # noqa: E402

TOL = 1e-10
SIGMA2 = np.array([[0.5, 1.0, 2.0], [0.8, 1.2, 0.3]])


def _energy(xp):
    """A non-Gaussian energy on (batch, 2, 3), written for either array module."""
    s2 = SIGMA2

    def energy(x):
        s = xp.asarray(s2) if xp is jnp else torch.as_tensor(s2, dtype=x.dtype)
        quad = 0.5 * x**2 / s + 0.1 * x**4 + 0.3 * xp.sin(2.0 * x)
        return xp.sum(xp.sum(quad, -1), -1)

    return energy


def _close(a, b, name):
    a = np.asarray(a)
    b = b.detach().cpu().numpy() if torch.is_tensor(b) else np.asarray(b)
    assert a.shape == b.shape, name
    finite = np.isfinite(a)
    assert np.array_equal(finite, np.isfinite(b)), name
    assert np.array_equal(a[~finite], b[~finite]), name
    err = np.max(np.abs(a[finite] - b[finite]) / (1 + np.abs(a[finite]))) if finite.any() else 0
    assert err < TOL, (name, err)


def _inputs(batch, n_steps, seed):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1.2, 1.2, (batch, 2, 3))
    u0 = rng.normal(size=(batch, 2, 3))
    uniforms = rng.uniform(size=(n_steps, 2, batch))
    normals = rng.normal(size=(n_steps, batch, 2, 3))
    return x0, u0, uniforms, normals


def test_sample_agrees_across_backends_float64():
    batch, n_steps = 16, 40
    x0, u0, uniforms, normals = _inputs(batch, n_steps, 0)
    kw = dict(energy_scale=1.7, bounds=(-1.5, 1.5), refresh_rate=0.5, keep_trajectory=True)
    with jax.enable_x64(True):
        rj = ejax.sample(_energy(jnp), jnp.asarray(x0), n_steps, 0.15, u0=jnp.asarray(u0),
                         uniforms=jnp.asarray(uniforms), normals=jnp.asarray(normals), **kw)
        rj = jax.tree.map(np.asarray, rj)
    rt = etorch.sample(_energy(torch), torch.as_tensor(x0), n_steps, 0.15,
                       u0=torch.as_tensor(u0), uniforms=torch.as_tensor(uniforms),
                       normals=torch.as_tensor(normals), **kw)
    assert rj.state.x.dtype == np.float64 and rt.state.x.dtype == torch.float64
    for name in ("samples", "sample_energy", "log_total_time", "trajectory",
                 "log_time_weights", "log_times"):
        _close(getattr(rj, name), getattr(rt, name), name)
    for name in rj.state._fields:
        _close(getattr(rj.state, name), getattr(rt.state, name), "state." + name)
    for name in rj.diagnostics._fields:
        _close(getattr(rj.diagnostics, name), getattr(rt.diagnostics, name), "diag." + name)
    assert np.array_equal(rj.diverged, rt.diverged.numpy())
    # the test exercised what it claims: reflections happened and draws are spread out
    assert np.abs(rj.trajectory).max() <= 1.5
    assert np.any(np.abs(rj.trajectory) > 1.4)
    picked = [np.argmin(((rj.trajectory[:, i] - rj.samples[i]) ** 2).sum((1, 2)))
              for i in range(batch)]
    assert len(set(picked)) > 4


def test_jarzynski_agrees_across_backends_float64():
    batch, n_steps = 32, 30
    x0, u0, _, _ = _inputs(batch, n_steps, 1)
    base = np.random.default_rng(2).normal(size=batch)  # any base log density
    with jax.enable_x64(True):
        rj = ejax.jarzynski(_energy(jnp), jnp.asarray(x0), n_steps, 0.2, u0=jnp.asarray(u0),
                            base_log_prob=jnp.asarray(base), energy_scale=0.8)
        rj = jax.tree.map(np.asarray, rj)
    rt = etorch.jarzynski(_energy(torch), torch.as_tensor(x0), n_steps, 0.2,
                          u0=torch.as_tensor(u0), base_log_prob=torch.as_tensor(base),
                          energy_scale=0.8)
    for name in ("samples", "log_weights", "log_z", "log_z_se", "ess"):
        _close(getattr(rj, name), getattr(rt, name), name)
    for name in rj.diagnostics._fields:
        _close(getattr(rj.diagnostics, name), getattr(rt.diagnostics, name), "diag." + name)


def test_log_z_estimate_matches_numpy_reference():
    lw = np.random.default_rng(3).normal(scale=2.0, size=500) - 1000.0
    w = np.exp(lw - lw.max())
    ref_log_z = math.log(w.mean()) + lw.max()
    ref_se = w.std(ddof=1) / math.sqrt(len(w)) / w.mean()
    ref_ess = w.sum() ** 2 / (w**2).sum()
    with jax.enable_x64(True):
        outs = [np.asarray(v) for v in ejax.log_z_estimate(jnp.asarray(lw))]
    outs_t = [v.item() for v in etorch.log_z_estimate(torch.as_tensor(lw))]
    for got in (outs, outs_t):
        assert np.allclose(got, [ref_log_z, ref_se, ref_ess], rtol=1e-12, atol=1e-9)


def test_importing_the_package_imports_no_backend():
    code = (
        "import sys, esh_kernels, esh_kernels.core.energy_sampling; "
        "bad = [m for m in ('jax', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
