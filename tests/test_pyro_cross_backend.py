"""The Pyro (torch) kernels run the NumPyro (JAX) kernels' algorithm: same warmup updates
and same transitions, in float64 from identical inputs, to 1e-10.

* The whole warmup control of ``AdjustedESH`` and ``ESH`` (``core/warmup.py``) over many
  iterations, metric-window ends included: JAX with a traced iteration counter inside
  ``jit``/``vmap`` per chain (as the NumPyro kernels call it), torch with a Python int on
  a ``(C, d)`` batch (as the Pyro kernels call it).
* Full transitions: the NumPyro kernel's ``sample`` (jitted) against the Pyro kernel's
  ``_transition`` started from the same state, with the torch random numbers taken from
  the JAX keys the NumPyro kernel splits (so these tests also pin the NumPyro kernels'
  key usage: change both together). Every iteration starts the torch kernel from the
  NumPyro kernel's state: run freely, the two drift apart like any two chaotic
  trajectories (rounding differences of 1e-16 grow to about 1e-8 in 40 transitions of
  the large early-warmup steps), which says nothing about the formulas.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pyro")
pytest.importorskip("numpyro")

from esh_kernels.core.bias_guard import guarded_step_size  # noqa: E402
from esh_kernels.core.warmup import (  # noqa: E402
    AdjustedWarmupConfig,
    ESHWarmupConfig,
    adjusted_warmup_init,
    adjusted_warmup_update,
    esh_sampling_log_speed,
    esh_warmup_adjusted_update,
    esh_warmup_init,
    esh_warmup_update,
)

from esh_kernels.core.state_fields import SiteLayout  # noqa: E402
from esh_kernels.core.adaptation import AUTO_METRIC  # noqa: E402

TOL = 1e-10
D = 4


# -- helpers ----------------------------------------------------------------------------


def leaves(tree):
    """Array leaves of nested namedtuples / tuples (Python numbers, None and the NumPyro
    adapt states' static ``SiteLayout`` skipped)."""
    if isinstance(tree, tuple):
        out = []
        for t in tree:
            out.extend(leaves(t))
        return out
    if tree is None or isinstance(tree, (int, float, bool, SiteLayout)):
        return []
    return [tree]


def to_np(a):
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def assert_trees_close(torch_tree, jax_tree, batch_axis=True, what=""):
    t_leaves, j_leaves = leaves(torch_tree), leaves(jax_tree)
    assert len(t_leaves) == len(j_leaves), what
    for k, (t, j) in enumerate(zip(t_leaves, j_leaves)):
        t, j = to_np(t), to_np(j)
        if batch_axis and t.shape != j.shape:
            t = t.reshape(j.shape)
        if t.dtype == np.bool_ or j.dtype == np.bool_:
            np.testing.assert_array_equal(t.astype(bool), j.astype(bool), err_msg=f"{what} leaf {k}")
        else:
            np.testing.assert_allclose(t.astype(np.float64), j.astype(np.float64), rtol=TOL,
                                       atol=TOL, err_msg=f"{what} leaf {k}")


def tree_to_torch(tree, batch=True):
    """JAX (one chain) namedtuple tree -> torch tree with a leading chain axis of 1."""
    if isinstance(tree, tuple):
        return type(tree)(*[tree_to_torch(t, batch) for t in tree])
    if tree is None or isinstance(tree, SiteLayout):  # NumPyro's site names: None in Pyro
        return None
    a = np.asarray(tree)
    if a.dtype == np.int32 or a.dtype == np.int64:
        a = a.astype(np.float64)
    t = torch.from_numpy(np.array(a))
    return t[None] if batch else t


def tree_to_jax(tree, jnp, index):
    """Chain ``index`` of a batched torch tree -> JAX arrays."""
    if isinstance(tree, tuple):
        return type(tree)(*[tree_to_jax(t, jnp, index) for t in tree])
    return None if tree is None else jnp.asarray(to_np(tree)[index])


# -- warmup updates ---------------------------------------------------------------------


@pytest.mark.parametrize("dense", [False, True, "auto", "auto-bent"])
def test_adjusted_warmup_update_agrees(jax_x64, dense):
    """``dense="auto"``: the automatic metric, fed the gradients of a correlated Gaussian
    at independent draws, so its windows take the gradient-based estimate (§7.6). The draws
    are narrower than the Gaussian in every direction (a window that saw part of it).
    ``"auto-bent"``: wider draws of a more correlated Gaussian (0.99) whose gradients are not
    linear in them (a quadratic term in one coordinate): the gradients' estimate is still
    dense (condition number 51-80 of its correlation matrix, threshold 32), but the window
    reads as a target that bends (bend 40-106, threshold 13.5), so that the last window keeps
    the diagonal (``core.adaptation.curved``); both backends end on the same diagonal."""
    import jax

    jnp = jax_x64
    C, W = 3, 200  # metric windows end at iterations 99 and 149
    rng = np.random.default_rng(0)
    bent = dense == "auto-bent"
    xs = rng.normal(size=(W, C, D)) * (np.array([0.5, 1.0, 2.0, 3.0]) if bent else np.array([0.05, 0.1, 0.2, 0.3]))
    rho = 0.99 if bent else 0.9
    sigma = np.full((D, D), rho) + (1.0 - rho) * np.eye(D)
    gs = xs @ np.linalg.inv(sigma)
    if bent:
        gs[..., 3] += 0.2 * (xs[..., 3] ** 2 - 9.0)
    acc = rng.uniform(size=(W, C))
    mask = AUTO_METRIC if dense in ("auto", "auto-bent") else None
    dense = bool(dense)
    config = AdjustedWarmupConfig(W, 0.8, True, True, True, 2.0, metric_mask=mask)
    step0 = np.array([0.3, 0.5, 1.0])

    # torch: one (C, d) batch, Python int iteration
    t_adapt = adjusted_warmup_init(torch.tensor(xs[0]), torch.tensor(step0),
                                   torch.tensor(4 * step0), dense, mask=mask)
    # JAX: per chain, traced iteration inside jit, vmapped over chains
    j_adapt = jax.vmap(lambda x, s: adjusted_warmup_init(x, s, 4.0 * s, dense, mask=mask))(
        jnp.asarray(xs[0]), jnp.asarray(step0))
    j_update = jax.jit(jax.vmap(lambda a, i, x, p, g: adjusted_warmup_update(a, i, x, p, config, g),
                                in_axes=(0, None, 0, 0, 0)))
    for i in range(W):
        t_adapt = adjusted_warmup_update(t_adapt, i, torch.tensor(xs[i]), torch.tensor(acc[i]), config,
                                         torch.tensor(gs[i]))
        j_adapt = j_update(j_adapt, jnp.asarray(i, jnp.int32), jnp.asarray(xs[i]), jnp.asarray(acc[i]),
                           jnp.asarray(gs[i]))
        if i in (0, 98, 99, 100, 149, W - 1):
            assert_trees_close(t_adapt, j_adapt, what=f"iteration {i}")
    assert not np.allclose(to_np(t_adapt.scale), to_np(adjusted_warmup_init(
        torch.tensor(xs[0]), torch.tensor(step0), torch.tensor(step0), dense).scale))
    if bent:  # the last window (ending at iteration 149) kept the diagonal
        scale = to_np(t_adapt.scale)
        np.testing.assert_array_equal(scale, scale * np.eye(D))
    elif mask is AUTO_METRIC:  # the gradients' estimate: the target's covariance
        scale = to_np(t_adapt.scale)
        np.testing.assert_allclose(scale @ np.swapaxes(scale, -1, -2), np.broadcast_to(sigma, (C, D, D)),
                                   rtol=1e-2)


def test_dense_metric_waits_for_2d_draws_in_both_backends(jax_x64):
    """``esh_math.md`` §7.4 through the shared warmup: at d = 20 the 25-draw first window
    gives a diagonal scale, the 50-draw second window a dense one, the same in torch and
    JAX."""
    import jax

    jnp = jax_x64
    C, W, d = 2, 150, 20
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(W, C, d)) @ rng.normal(size=(d, d))
    acc = rng.uniform(size=(W, C))
    config = AdjustedWarmupConfig(W + 50, 0.8, True, True, True, 2.0)  # windows end at 99, 149
    step0 = np.array([0.3, 0.5])
    t_adapt = adjusted_warmup_init(torch.tensor(xs[0]), torch.tensor(step0), torch.tensor(step0), True)
    j_adapt = jax.vmap(lambda x, s: adjusted_warmup_init(x, s, s, True))(jnp.asarray(xs[0]), jnp.asarray(step0))
    j_update = jax.jit(jax.vmap(lambda a, i, x, p: adjusted_warmup_update(a, i, x, p, config),
                                in_axes=(0, None, 0, 0)))
    for i in range(W):
        t_adapt = adjusted_warmup_update(t_adapt, i, torch.tensor(xs[i]), torch.tensor(acc[i]), config)
        j_adapt = j_update(j_adapt, jnp.asarray(i, jnp.int32), jnp.asarray(xs[i]), jnp.asarray(acc[i]))
        if i in (99, 149):
            assert_trees_close(t_adapt, j_adapt, what=f"iteration {i}")
            scale = to_np(t_adapt.scale)
            off_diagonal = scale - np.eye(d) * np.diagonal(scale, axis1=-2, axis2=-1)[..., None]
            assert np.all(off_diagonal == 0) == (i == 99), f"iteration {i}"


@pytest.mark.parametrize("dense", [False, True])
def test_esh_warmup_updates_agree(jax_x64, dense):
    import jax

    jnp = jax_x64
    C, W = 3, 200
    config = ESHWarmupConfig(W, 5e-4, 2.0, True, True, True, 0.8, 2.0)
    n1 = config.num_adjusted  # phase 1 (adjusted) iterations, then phase 2 (ESH)
    rng = np.random.default_rng(1)
    wide = dense == "auto-wide"
    xs = rng.normal(size=(W, C, D)) * (np.array([0.5, 1.0, 2.0, 3.0]) if wide else np.array([0.05, 0.1, 0.2, 0.3]))
    acc = rng.uniform(size=(W, C))
    err2 = rng.lognormal(-7.0, 1.0, size=(W, C))
    nsteps = rng.integers(1, 6, size=(W, C)).astype(np.float64)
    logt = rng.normal(size=(W, C))
    div = rng.uniform(size=(W, C)) < 0.05
    step0 = np.array([0.3, 0.5, 1.0])
    refresh = np.array([2.0, np.inf, 1.0])

    t_adapt = esh_warmup_init(torch.tensor(xs[0]), torch.tensor(step0), torch.tensor(2 * step0),
                              torch.tensor(refresh), dense)
    j_adapt = jax.vmap(lambda x, s, r: esh_warmup_init(x, s, 2.0 * s, r, dense))(
        jnp.asarray(xs[0]), jnp.asarray(step0), jnp.asarray(refresh))
    j_phase1 = jax.jit(jax.vmap(lambda a, i, x, p: esh_warmup_adjusted_update(a, i, x, p, config),
                                in_axes=(0, None, 0, 0)))
    j_phase2 = jax.jit(jax.vmap(
        lambda a, i, e, n, t, dv, en, x, e0, sh: esh_warmup_update(a, i, e, n, t, dv, config, energy=en, draw=x,
                                                                   start_energy=e0, shadow=sh),
        in_axes=(0, None, 0, 0, 0, 0, 0, 0, 0, 0)))
    energies = rng.normal(size=(W, C)) + 5.0
    # the bias guard's statistic, tilted along the first coordinate so that the guard acts
    shadow = 1000.0 * xs[..., 0] + rng.normal(size=(W, C))
    for i in range(W):
        ji = jnp.asarray(i, jnp.int32)
        if i < n1:
            t_adapt = esh_warmup_adjusted_update(t_adapt, i, torch.tensor(xs[i]), torch.tensor(acc[i]), config)
            j_adapt = j_phase1(j_adapt, ji, jnp.asarray(xs[i]), jnp.asarray(acc[i]))
        else:
            t_adapt = esh_warmup_update(t_adapt, i, torch.tensor(err2[i]), torch.tensor(nsteps[i]),
                                        torch.tensor(logt[i]), torch.tensor(div[i]), config,
                                        energy=torch.tensor(energies[i]), draw=torch.tensor(xs[i]),
                                        start_energy=torch.tensor(energies[i - 1]), shadow=torch.tensor(shadow[i]))
            j_adapt = j_phase2(j_adapt, ji, jnp.asarray(err2[i]), jnp.asarray(nsteps[i]),
                               jnp.asarray(logt[i]), jnp.asarray(div[i]), jnp.asarray(energies[i]),
                               jnp.asarray(xs[i]), jnp.asarray(energies[i - 1]), jnp.asarray(shadow[i]))
        if i in (0, 99, n1 - 1, n1, W - 1):
            assert_trees_close(t_adapt, j_adapt, what=f"iteration {i}")
    # the guard's prediction from the same window agrees too (at a unit step: the synthetic
    # energy errors above drove the step size towards 0, where the guard has nothing to do)
    t_guard = guarded_step_size(t_adapt.bias, torch.ones(C, dtype=torch.float64), D, 5e-4)
    j_guard = jax.vmap(lambda b: guarded_step_size(b, jnp.asarray(1.0), D, 5e-4))(j_adapt.bias)
    assert_trees_close(t_guard, j_guard, what="bias guard")
    assert np.all(to_np(t_guard[1].shrink) < 1.0), "the bias guard did not act"
    e = rng.normal(size=C)
    assert_trees_close(esh_sampling_log_speed(t_adapt, torch.tensor(e), D),
                       jax.vmap(lambda a, en: esh_sampling_log_speed(a, en, D))(j_adapt, jnp.asarray(e)),
                       what="sampling log speed")


# -- full transitions -------------------------------------------------------------------


def _potentials(jnp):
    """The same non-Gaussian potential for both backends: a correlated Gaussian plus a
    quartic term, on ``{"x": (4,)}``."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(D, D))
    prec = a @ a.T / D + np.diag([0.5, 1.0, 2.0, 4.0])
    Pj, Pt = jnp.asarray(prec), torch.tensor(prec)

    def pe_jax(z):
        x = z["x"]
        return 0.5 * x @ (Pj @ x) + 0.05 * jnp.sum(x**4)

    def pe_torch(z):
        x = z["x"]
        return 0.5 * x @ (Pt @ x) + 0.05 * (x**4).sum()

    return pe_jax, pe_torch


class _JaxIsokineticDraws:
    """The random numbers ``numpyro/_isokinetic.py`` draws from ``k_transition``."""

    def __init__(self, jax, key, d):
        from esh_kernels.pyro._isokinetic import IsokineticDraws

        k_u, k_n, k_acc = jax.random.split(key, 3)
        f = lambda a: torch.tensor(np.asarray(a, dtype=np.float64)).reshape(1, *np.shape(a))  # noqa: E731
        self.draws = IsokineticDraws(
            f(jax.random.normal(k_u, (d,), "float64")),
            f(jax.random.uniform(k_n, (), "float64")),
            f(jax.random.uniform(k_acc, (), "float64")),
        )


class _JaxESHDraws:
    """The random numbers ``numpyro/esh.py``'s ``_esh_draw`` draws from ``state.rng_key``,
    served in the order the Pyro kernel asks for them."""

    def __init__(self, jax, rng_key, d):
        self.jax, self.d = jax, d
        _, k_draw, self.k_u = jax.random.split(rng_key, 3)
        self.k_pre, self.key = jax.random.split(k_draw)

    def _t(self, a):
        return torch.tensor(np.asarray(a, dtype=np.float64)).reshape(1, *np.shape(a))

    def _pair(self, key):
        k1, k2 = self.jax.random.split(key)
        u = self.jax.random.uniform
        return self._t(u(k1, (), "float64")), self._t(u(k2, (), "float64"))

    def pre(self):
        return self._pair(self.k_pre)

    def step(self):
        self.key, k_ref, k_offer = self.jax.random.split(self.key, 3)
        return (self._t(self.jax.random.normal(k_ref, (self.d,), "float64")), *self._pair(k_offer))

    def restart(self):
        return self._t(self.jax.random.normal(self.k_u, (self.d,), "float64"))


def _torch_state_from_numpyro(cls_state, np_state, x_flat_fields=()):
    fields = {}
    for name in cls_state._fields:
        v = getattr(np_state, name)
        if name == "i":
            fields[name] = int(v)
        elif name in ("rng_key", "monitor"):  # NumPyro's; None in Pyro
            fields[name] = None
        elif name == "z":
            fields[name] = torch.tensor(np.asarray(v["x"]))[None]
        else:
            fields[name] = tree_to_torch(v)
    return cls_state(**fields)


def _compare_states(t_state, j_state, skip=("i", "rng_key", "monitor")):
    for name in type(t_state)._fields:
        if name in skip:
            continue
        t = getattr(t_state, name)
        j = getattr(j_state, name)
        if name == "z":
            j = j["x"]
        assert_trees_close(t, j, what=name)


def _setup(jax_x64, np_cls, torch_cls, num_warmup, **kwargs):
    import jax

    jnp = jax_x64
    pe_jax, pe_torch = _potentials(jnp)
    x0 = np.array([1.0, -0.5, 0.3, 2.0])
    np_kernel = np_cls(potential_fn=pe_jax, **kwargs)
    np_state = np_kernel.init(jax.random.PRNGKey(3), num_warmup, {"x": jnp.asarray(x0)}, (), {})
    sample = jax.jit(lambda s: np_kernel.sample(s, (), {}))
    t_kernel = torch_cls(potential_fn=pe_torch, **kwargs)
    t_kernel.initial_params = {"x": torch.tensor(x0)}
    t_kernel.setup(num_warmup)
    return jax, np_state, sample, t_kernel


@pytest.mark.parametrize("dense", [False, True])
def test_adjusted_esh_transitions_agree(jax_x64, dense):
    from esh_kernels.numpyro import AdjustedESH as NumPyroAdjustedESH
    from esh_kernels.pyro import AdjustedESH, AdjustedESHState

    W = 40  # one metric window ending at iteration 35, averaged step size from 39
    jax, np_state, sample, t_kernel = _setup(jax_x64, NumPyroAdjustedESH, AdjustedESH, W,
                                             dense_mass=dense)
    accepted = 0
    for i in range(W + 5):
        t_state = _torch_state_from_numpyro(AdjustedESHState, np_state)
        _, k_transition = jax.random.split(np_state.rng_key)
        draws = _JaxIsokineticDraws(jax, k_transition, D).draws
        np_state = sample(np_state)
        t_state = t_kernel._transition(t_state, i, draws)
        _compare_states(t_state, np_state)
        accepted += float(np_state.accept_prob) > 0.5
    assert int(np_state.i) == W + 5 and t_state.i == W + 5
    assert accepted > 10  # the test exercised accepted moves


def test_esh_draws_agree(jax_x64):
    from esh_kernels.numpyro import ESH as NumPyroESH
    from esh_kernels.pyro import ESH, ESHState

    W = 40  # phase 1: iterations 0-29 (adjusted), phase 2: 30-39, then sampling
    jax, np_state, sample, t_kernel = _setup(jax_x64, NumPyroESH, ESH, W)
    assert t_kernel._warmup_config().num_adjusted == 30
    steps = 0
    for i in range(W + 8):
        t_state = _torch_state_from_numpyro(ESHState, np_state)
        if i < 30:
            _, k_transition = jax.random.split(np_state.rng_key)
            draws = _JaxIsokineticDraws(jax, k_transition, D).draws
        else:
            draws = _JaxESHDraws(jax, np_state.rng_key, D)
        np_state = sample(np_state)
        t_state = t_kernel._transition(t_state, i, draws)
        _compare_states(t_state, np_state)
        if i >= 30:
            steps += int(np_state.n_steps)
    assert steps > 18  # ESH draws took several leapfrog steps each
    assert math.isfinite(float(np_state.adapt_state.trajectory_length))


# -- TunedHMC ---------------------------------------------------------------------------


def _need_tuned_hmc():
    import esh_kernels.pyro as ekp

    if not hasattr(ekp, "TunedHMC"):
        pytest.skip("esh_kernels.pyro.TunedHMC is not available")


def _tuned_draws(jax, rng_keys):
    """The momentum and Metropolis uniform ``numpyro/tuned_hmc.py`` draws per chain."""
    from esh_kernels.pyro.tuned_hmc import TunedHMCDraws

    normals, uniforms = [], []
    for key in rng_keys:
        _, k_p, k_acc = jax.random.split(key, 3)
        normals.append(np.asarray(jax.random.normal(k_p, (D,), "float64")))
        uniforms.append(np.asarray(jax.random.uniform(k_acc, (), "float64")))
    return TunedHMCDraws(torch.tensor(np.stack(normals)), torch.tensor(np.stack(uniforms)))


@pytest.mark.parametrize("dense", [False, True])
def test_tuned_hmc_single_chain_transitions_agree(jax_x64, dense):
    """The single-chain rule (``pyro.infer.MCMC``; NumPyro sequential/parallel): U-turn
    tracking in warmup, trajectory length from the mean U-turn time."""
    _need_tuned_hmc()
    from esh_kernels.numpyro import TunedHMC as NumPyroTunedHMC
    from esh_kernels.pyro import TunedHMC, TunedHMCState

    W = 40
    jax, np_state, sample, t_kernel = _setup(jax_x64, NumPyroTunedHMC, TunedHMC, W, dense_mass=dense)
    lengths = set()
    for i in range(W + 5):
        t_state = _torch_state_from_numpyro(TunedHMCState, np_state)
        draws = _tuned_draws(jax, [np_state.rng_key])
        np_state = sample(np_state)
        t_state = t_kernel._transition(t_state, i, draws)
        _compare_states(t_state, np_state)
        lengths.add(round(float(np_state.adapt_state.trajectory_length), 8))
    assert len(lengths) > 5  # the trajectory length was being tuned


@pytest.mark.parametrize("dense", [False, True])
def test_tuned_hmc_cross_chain_transitions_agree(jax_x64, dense):
    """The cross-chain rule (``BatchedMCMC``; NumPyro ``chain_method="vectorized"``):
    ChEES across 3 chains, shared step size, pooled mass matrix."""
    import jax

    _need_tuned_hmc()
    from esh_kernels.numpyro import TunedHMC as NumPyroTunedHMC
    from esh_kernels.pyro import TunedHMC, TunedHMCState

    jnp = jax_x64
    C, W = 3, 40
    rng = np.random.default_rng(2)
    a = rng.normal(size=(D, D))
    prec = a @ a.T / D + np.diag([0.5, 1.0, 2.0, 4.0])
    Pj, Pt = jnp.asarray(prec), torch.tensor(prec)

    def pe_jax(z):
        x = z["x"]
        return 0.5 * x @ (Pj @ x) + 0.05 * jnp.sum(x**4)

    def pe_torch(z):  # {x: (C, d)} -> (C,)
        x = z["x"]
        return 0.5 * ((x @ Pt) * x).sum(-1) + 0.05 * (x**4).sum(-1)

    x0 = rng.normal(size=(C, D))
    np_kernel = NumPyroTunedHMC(potential_fn=pe_jax, dense_mass=dense, cross_chain=True)
    np_state = np_kernel.init(jax.random.split(jax.random.PRNGKey(5), C), W, {"x": jnp.asarray(x0)}, (), {})
    sample = jax.jit(lambda s: np_kernel.sample(s, (), {}))
    t_kernel = TunedHMC(potential_fn=pe_torch, dense_mass=dense, cross_chain=True)
    t_kernel.setup_batched(W, C, initial_params={"x": torch.tensor(x0)})
    assert t_kernel._cross_chain_tuning

    def convert(s):
        fields = {}
        for name in TunedHMCState._fields:
            v = getattr(s, name)
            if name == "i":
                fields[name] = int(v[0])
            elif name in ("rng_key", "monitor"):  # NumPyro's; None in Pyro
                fields[name] = None
            else:
                fields[name] = tree_to_torch(v["x"] if name == "z" else v, batch=False)
        return TunedHMCState(**fields)

    lengths = set()
    for i in range(W + 5):
        t_state = convert(np_state)
        draws = _tuned_draws(jax, list(np_state.rng_key))
        np_state = sample(np_state)
        t_state = t_kernel._transition(t_state, i, draws)
        _compare_states(t_state, np_state)
        lengths.add(round(float(np_state.adapt_state.trajectory_length[0]), 8))
    assert len(lengths) > 5


# -- ensemble mode ----------------------------------------------------------------------


def _jax_tree_to_torch(tree):
    """JAX tree (namedtuples of arrays) -> the same tree of float64 torch tensors."""
    if isinstance(tree, tuple):
        return type(tree)(*[_jax_tree_to_torch(t) for t in tree])
    return torch.tensor(np.asarray(tree))


def test_ensemble_warm_steps_agree(jax_x64):
    """The ensemble mode's warm start: from the same ``(C, d)`` ensemble, the NumPyro step
    (``numpyro/ensemble.py``, jitted, its random numbers from the chains' keys) and the Pyro
    step (``pyro/ensemble.py``, the same numbers, the potential through Pyro's
    ``BatchedPotential``) give the same positions, velocities, energies and gradients and
    the same shared step size, preconditioner, decoherence length, bias estimate and count
    of steps below the tolerance, to 1e-10; each step starts from the NumPyro state. The
    steps cover the clipped and the unclipped step-size update."""
    import jax

    from esh_kernels.core import ensemble
    from esh_kernels.numpyro import ensemble as np_ens
    from esh_kernels.pyro import ensemble as pt_ens
    from esh_kernels.pyro._model import BatchedPotential, FlatLayout

    jnp = jax_x64
    C, steps, tol = 32, 12, 0.5
    pe_jax, pe_torch = _potentials(jnp)
    rng = np.random.default_rng(4)
    x0 = rng.normal(size=(C, D)) * 3.0 + 1.0  # too wide and off-centre
    batch_vg = jax.vmap(jax.value_and_grad(lambda x: pe_jax({"x": x})))
    layout = FlatLayout({"x": torch.zeros(C, D)}, batch_dims=1)
    t_vg = BatchedPotential(layout, C, potential_fn=lambda z: torch.stack([pe_torch({"x": r}) for r in z["x"]]))

    keys, k_dir = np_ens._split(jax.random.split(jax.random.PRNGKey(0), C))
    xj = jnp.asarray(x0)
    energy, grad = batch_vg(xj)
    j_core = ensemble.warm_init(xj, energy, grad, np_ens._normal(k_dir, xj))
    t_energy, t_grad = t_vg(torch.tensor(x0))
    t_core = ensemble.warm_init(torch.tensor(x0), t_energy, t_grad, _jax_tree_to_torch(np_ens._normal(k_dir, xj)))
    assert_trees_close(t_core, j_core, what="init")

    j_state = np_ens.WarmState(j_core, keys, jnp.asarray(0, jnp.int32), jnp.full((steps,), jnp.nan))
    j_step = jax.jit(lambda s: np_ens._warm_step(s, batch_vg, tol))
    factors = []
    for n in range(steps):
        keys, k_dir = np_ens._split(j_state.keys)
        _, k_noise = np_ens._split(keys)
        x = j_state.core.integ.x
        normals = (_jax_tree_to_torch(np_ens._normal(k_dir, x)), _jax_tree_to_torch(np_ens._normal(k_noise, x)))
        t_core = pt_ens._warm_step(_jax_tree_to_torch(j_state.core), t_vg, tol, normals)
        new = j_step(j_state)
        assert_trees_close(t_core, new.core, what=f"warm step {n}")
        factors.append(float(new.core.step_size / j_state.core.step_size))
        j_state = new
    low, high = ensemble.STEP_FACTOR_RANGE
    assert any(f == pytest.approx(high) for f in factors), factors
    assert any(low < f < high and f != pytest.approx(high) for f in factors), factors
    assert float(j_state.core.below) > 0  # the count moved too


def test_ensemble_tuning_updates_agree(jax_x64):
    """The adjusted tuning's hyperparameters (``core.ensemble.tune_init``) and bisection
    (``tune_update``) give the same values on JAX and torch, through the doubling, the
    bisection and the stop."""
    from esh_kernels.core import ensemble

    jnp = jax_x64
    C = 64
    rng = np.random.default_rng(5)
    x = rng.normal(size=(C, D)) * np.array([0.5, 1.0, 2.0, 3.0])
    grad = x / np.array([0.5, 1.0, 2.0, 3.0]) ** 2 + 0.1 * rng.normal(size=(C, D))
    j = ensemble.tune_init(jnp.asarray(x), jnp.asarray(grad))
    t = ensemble.tune_init(torch.tensor(x), torch.tensor(grad))
    assert_trees_close(t, j, what="tune_init")
    assert j[0].shape == (D, D)  # 16 chains per dimension: the diagonal estimate as a matrix
    # 25 chains per dimension: the dense estimate (matrix square roots by eigh on both backends)
    mix = np.array([[1.0, 0.0, 0.0, 0.0], [0.9, 0.5, 0.0, 0.0], [0.0, 0.3, 2.0, 0.0], [0.2, 0.0, 0.5, 3.0]])
    rng_d = np.random.default_rng(6)
    xd = rng_d.normal(size=(100, D)) @ mix.T
    gd = xd @ np.linalg.inv(mix @ mix.T) + 0.1 * rng_d.normal(size=(100, D))
    jd = ensemble.tune_init(jnp.asarray(xd), jnp.asarray(gd))
    assert_trees_close(ensemble.tune_init(torch.tensor(xd), torch.tensor(gd)), jd, what="tune_init, dense")
    assert abs(float(jd[0][1, 0])) > 0.1  # it holds the correlation
    j_bracket, t_bracket = ensemble.step_bracket_init(j[2]), ensemble.step_bracket_init(t[2])
    j_log, t_log = j[2], t[2]
    for n, mean in enumerate([0.95, 0.9, 0.3, 0.5, 0.8, 0.72, 0.1]):
        accept = np.clip(mean + 0.05 * rng.normal(size=C), 0.0, 1.0)
        j_bracket, j_log, j_acc = ensemble.tune_update(j_bracket, j_log, jnp.asarray(accept))
        t_bracket, t_log, t_acc = ensemble.tune_update(t_bracket, t_log, torch.tensor(accept))
        assert_trees_close((t_bracket, t_log, t_acc), (j_bracket, j_log, j_acc), what=f"update {n}")
    assert bool(t_bracket.done) and np.isfinite(float(t_bracket.low)) and np.isfinite(float(t_bracket.high))
