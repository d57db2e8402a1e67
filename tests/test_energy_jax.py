"""Tests of the batched ESH energy samplers, JAX backend (``esh_kernels.jax``).

Statistical checks use many independent chains (one reservoir draw each), so Monte Carlo
errors are plain standard errors over chains. XLA compiles each distinct configuration
once (a few seconds on CPU), so the tests reuse shapes and flags where they can.
"""

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from esh_kernels.jax import ReplayBuffer, jarzynski, replay_sample, sample  # noqa: E402

# ---------------------------------------------------------------------------------------
# A 2-D mixture of 4 Gaussians (unequal weights, modes 4 sigma apart)

MOG_MU = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
MOG_W = np.array([0.4, 0.3, 0.2, 0.1])
MOG_S = 0.5


def mog_energy(x):
    d2 = jnp.sum((x[:, None, :] - jnp.asarray(MOG_MU, x.dtype)) ** 2, axis=-1)
    logits = -d2 / (2 * MOG_S**2) + jnp.log(jnp.asarray(MOG_W, x.dtype))
    return -jax.scipy.special.logsumexp(logits, axis=-1)


def mog_features(x):
    """Mean and (x1², x1 x2, x2²) per draw."""
    x = np.asarray(x, np.float64)
    return np.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 0] * x[:, 1], x[:, 1] ** 2], 1)


def mog_truth():
    mean = MOG_W @ MOG_MU
    m2 = np.einsum("k,ki,kj->ij", MOG_W, MOG_MU, MOG_MU) + MOG_S**2 * np.eye(2)
    return np.array([mean[0], mean[1], m2[0, 0], m2[0, 1], m2[1, 1]])


def mog_tempered_truth(power):
    """Same features under ``p^power`` (grid quadrature)."""
    g = np.linspace(-7, 7, 1401)
    X, Y = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], 1)
    d2 = ((pts[:, None, :] - MOG_MU) ** 2).sum(-1)
    logp = np.log((MOG_W * np.exp(-d2 / (2 * MOG_S**2))).sum(-1))
    q = np.exp(power * (logp - logp.max()))
    q /= q.sum()
    return q @ mog_features(pts)


def test_reservoir_draws_match_mixture_and_final_states_do_not():
    n_chains = 4000
    x0 = 1.5 * jax.random.normal(jax.random.key(0), (n_chains, 2))
    res = sample(mog_energy, x0, 800, 0.05, key=jax.random.key(1), keep_diagnostics=False)
    truth = mog_truth()

    f = mog_features(res.samples)
    se = f.std(0) / math.sqrt(n_chains)
    z = (f.mean(0) - truth) / se
    assert np.all(np.abs(f.mean(0) - truth) < 4 * se + 0.02), z

    # Unweighted scaled-time points follow p^((d-1)/d) = p^(1/2) in 2-D: badly biased.
    g = mog_features(res.state.x)
    se_g = g.std(0) / math.sqrt(n_chains)
    assert np.max(np.abs(g.mean(0) - truth) / se_g) > 8
    assert np.all(np.abs(g.mean(0) - mog_tempered_truth(0.5)) < 6 * se_g + 0.03)
    assert not bool(res.diverged.any())


# ---------------------------------------------------------------------------------------
# Jarzynski log Z

VAR3 = np.array([0.12, 0.15, 0.19])


def gauss3_energy(x):
    return 0.5 * jnp.sum(x**2 / jnp.asarray(VAR3, x.dtype), axis=-1)


@pytest.mark.parametrize("energy_scale", [1.0, 2.5])
def test_jarzynski_log_z_3d_gaussian(energy_scale):
    truth = float(np.sum(0.5 * np.log(2 * np.pi * VAR3 / energy_scale)))
    out = jarzynski(gauss3_energy, (20000, 3), 100, 0.1, key=jax.random.key(3),
                    energy_scale=energy_scale)
    err = float(out.log_z) - truth
    assert abs(err) < 4 * float(out.log_z_se) + 0.01, (err, float(out.log_z_se))
    assert 0.05 * 20000 < float(out.ess) <= 20000
    assert out.log_weights.shape == (20000,) and out.samples.shape == (20000, 3)
    assert out.diagnostics.energy_error.shape == (100, 20000)


# ---------------------------------------------------------------------------------------
# float32 image-shaped batches


def test_float32_image_batch_runs_finite_in_the_box():
    kx, kw = jax.random.split(jax.random.key(5))
    w = 0.3 * jax.random.normal(kw, (4, 3, 3, 3), jnp.float32)

    def energy(x):  # tiny conv net: (16, 3, 8, 8) -> (16,)
        h = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")
        return jnp.sum(jax.nn.softplus(h), axis=(1, 2, 3)) + 0.5 * jnp.sum(x**2, axis=(1, 2, 3))

    x0 = jax.random.uniform(kx, (16, 3, 8, 8), jnp.float32, -1.0, 1.0)
    res = sample(energy, x0, 30, 0.2, key=jax.random.key(6), bounds=True, refresh_rate=0.1)
    res = jax.tree.map(np.asarray, res)  # check on the host (no eager XLA compiles)
    for leaf in jax.tree.leaves(res):
        if np.issubdtype(leaf.dtype, np.floating):
            assert leaf.dtype == np.float32
            assert np.all(np.isfinite(leaf) | np.isneginf(leaf))
    assert res.samples.shape == x0.shape and res.state.u.shape == x0.shape
    assert np.abs(res.samples).max() <= 1.0 and np.abs(res.state.x).max() <= 1.0
    # unit velocities stay unit vectors
    norms = np.linalg.norm(res.state.u.reshape(16, -1), axis=-1)
    assert np.abs(norms - 1).max() < 1e-5
    assert np.abs(res.diagnostics.energy_error).max() < 5.0


# ---------------------------------------------------------------------------------------
# Memory: nothing per step is kept unless asked for


def _scan_eqns(jaxpr):
    """All ``scan`` equations in a jaxpr, looking inside nested (jit, scan) jaxprs."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _scan_eqns(inner)


def test_memory_does_not_grow_with_n_steps():
    x0 = jnp.zeros((64, 3)) + 0.1

    def run(n):
        return sample(gauss3_energy, x0, n, 0.1, key=jax.random.key(0), keep_diagnostics=False)

    shapes = [jax.tree.map(lambda a: (a.shape, a.dtype), jax.eval_shape(lambda: run(n)))
              for n in (50, 500)]
    assert shapes[0] == shapes[1]
    out = jax.eval_shape(lambda: run(50))
    assert out.trajectory is None and out.diagnostics is None and out.log_times is None
    # The scan carries only O(batch) state and stacks no per-step outputs.
    jaxpr = jax.make_jaxpr(lambda: run(500))()
    scans = list(_scan_eqns(jaxpr.jaxpr))
    assert scans, "expected a lax.scan"
    for eqn in scans:
        n_carry = eqn.params["num_carry"]
        assert len(eqn.outvars) == n_carry
        for v in eqn.outvars:
            assert 500 not in v.aval.shape
    # with diagnostics on, only (n_steps, batch) scalars are added
    diag = jax.eval_shape(lambda: sample(gauss3_energy, x0, 50, 0.1, key=jax.random.key(0)))
    assert diag.diagnostics.energy.shape == (50, 64)


# ---------------------------------------------------------------------------------------
# Persistent chains


def test_replay_buffer_updates_picked_chains():
    kw = dict(step_size=0.01, bounds=(-2.0, 2.0), use_reservoir=False)  # one compilation
    buf = ReplayBuffer(jnp.zeros((50, 3)), jax.random.key(7), reinit_fraction=0.0, **kw)
    out = np.asarray(buf.sample(gauss3_energy, 20, 3))
    buffer = np.asarray(buf.buffer)
    assert out.shape == (20, 3) and len(buf) == 50
    changed = np.any(buffer != 0, axis=1)
    assert changed.sum() == 20  # exactly the picked rows moved (to their final states)
    assert np.abs(buffer).max() <= 0.03 + 1e-6  # 3 steps of 0.01
    assert np.allclose(np.sort(buffer[changed], 0), np.sort(out, 0))
    assert buf.last_result.samples.shape == (20, 3)

    # reinit_fraction=1: every picked chain restarts from uniform noise on the box
    buf2 = ReplayBuffer(jnp.zeros((50, 3)), jax.random.key(8), reinit_fraction=1.0, **kw)
    out2 = np.asarray(buf2.sample(gauss3_energy, 20, 3))
    assert np.abs(out2).mean() > 0.3 and np.abs(out2).max() <= 2.0


def test_replay_sample_inside_jit():
    @jax.jit
    def step(buffer, key):
        new_buffer, samples, _ = replay_sample(buffer, key, gauss3_energy, 8, 3, 0.01,
                                               use_reservoir=False)
        return new_buffer, samples

    buffer = jax.random.uniform(jax.random.key(9), (32, 3), minval=-1, maxval=1)
    new_buffer, samples = step(buffer, jax.random.key(10))
    assert new_buffer.shape == buffer.shape and samples.shape == (8, 3)
    assert np.sum(np.any(np.asarray(new_buffer) != np.asarray(buffer), axis=1)) == 8


# ---------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_clear_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="at least 2 elements"):
        sample(lambda x: jnp.sum(x, -1), jnp.zeros((4, 1)), 5, key=key)
    with pytest.raises(ValueError, match="one energy per chain"):
        sample(lambda x: x, jnp.zeros((4, 3)), 5, key=key)
    with pytest.raises(ValueError, match="step_size"):
        sample(gauss3_energy, jnp.zeros((4, 3)), 5, -0.1, key=key)
    with pytest.raises(ValueError, match="n_steps"):
        sample(gauss3_energy, jnp.zeros((4, 3)), 0, key=key)
    with pytest.raises(ValueError, match="refresh_rate"):
        sample(gauss3_energy, jnp.zeros((4, 3)), 5, key=key, refresh_rate=-1.0)
    with pytest.raises(ValueError, match="bounds"):
        sample(gauss3_energy, jnp.zeros((4, 3)), 5, key=key, bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="inside bounds"):
        sample(gauss3_energy, jnp.full((4, 3), 2.0), 5, key=key, bounds=True)
    with pytest.raises(ValueError, match="key is required"):
        sample(gauss3_energy, jnp.zeros((4, 3)), 5)
    with pytest.raises(ValueError, match="uniforms"):
        sample(gauss3_energy, jnp.zeros((4, 3)), 5, key=key, uniforms=jnp.ones((5, 4)))
    with pytest.raises(ValueError, match="floating"):
        sample(gauss3_energy, jnp.zeros((4, 3), jnp.int32), 5, key=key)
    with pytest.raises(ValueError, match="reinit_fraction"):
        ReplayBuffer(jnp.zeros((4, 3)), key, reinit_fraction=1.5)
