"""Tests of the core ESH math: the exact u,r half-step, the leapfrogs, the sphere helpers,
the reservoir and the Metropolis acceptance (``esh_math.md`` §2-4, §6).

Everything here is numpy unless a test says otherwise (the functions are backend-neutral;
``test_core_cross_backend.py`` checks that JAX and torch agree with numpy).
"""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.integrate import solve_ivp

from esh_kernels.core import (
    IntegratorState,
    esh_leapfrog,
    euclidean_leapfrog,
    kinetic_energy_change,
    log_accept_prob,
    log_physical_time,
    partial_refresh,
    precond_adjoint,
    precond_forward,
    precond_inverse,
    refresh_noise_scale,
    reservoir_take,
    scale_from_covariance,
    unit_vector,
    ur_half_step,
)


# log(S+) = log(0) for u = -e is intended in the core (logaddexp handles -inf)
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log")


def _unit(rng, d, dtype=np.float64):
    z = rng.normal(size=d)
    return (z / np.linalg.norm(z)).astype(dtype)


# ---------------------------------------------------------------------------------------
# Targets: value_and_grad callables in numpy (any float dtype is preserved)


def gaussian_target(d, rng, dtype=np.float64):
    """E = x^T P x / 2 with a random dense precision P (condition number ~ 10)."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    precision = (q * np.linspace(0.3, 3.0, d)) @ q.T
    precision = precision.astype(dtype)

    def value_and_grad(x):
        px = precision @ x
        return 0.5 * (x @ px), px

    return value_and_grad


def quartic_target(d, dtype=np.float64):
    """A non-Gaussian target: E = sum(x^4)/4 + sum(x^2)/2 + 0.5 * sum(x_i x_{i+1})."""
    half = dtype(0.5)
    quarter = dtype(0.25)

    def value_and_grad(x):
        coupling = x[:-1] * x[1:]
        energy = quarter * np.sum(x**4) + half * np.sum(x * x) + half * np.sum(coupling)
        grad = x**3 + x
        grad = grad + half * np.concatenate([x[1:], x[:1] * 0]) + half * np.concatenate(
            [x[:1] * 0, x[:-1]]
        )
        return energy, grad

    return value_and_grad


def _init_state(x, u, r, value_and_grad):
    energy, grad = value_and_grad(x)
    return IntegratorState(x, u, r, energy, grad)


# ---------------------------------------------------------------------------------------
# 1. The closed-form half-step solves the frozen-gradient ODE


def _ode_reference(u, r, g, h, D):
    """Accurate solution of du = -(I - u u^T) g / D, dr = -u.g / D, dt = e^r (DOP853)."""
    d = u.shape[0]

    def rhs(_, y):
        uu, rr = y[:d], y[d]
        ug = uu @ g
        du = -(g - ug * uu) / D
        return np.concatenate([du, [-ug / D, math.exp(rr)]])

    y0 = np.concatenate([u, [r, 0.0]])
    sol = solve_ivp(rhs, (0.0, h), y0, method="DOP853", rtol=1e-12, atol=1e-13)
    assert sol.success
    y = sol.y[:, -1]
    return y[:d], y[d], y[d + 1]


@pytest.mark.parametrize("d", [2, 7, 50])
@pytest.mark.parametrize("denominator", ["d", "d-1"])
def test_ur_half_step_matches_ode(d, denominator):
    rng = np.random.default_rng(1000 + d + (denominator == "d-1"))
    D = d if denominator == "d" else d - 1
    for case in range(5):
        u = _unit(rng, d)
        h = rng.uniform(0.05, 1.0)
        target_delta = rng.uniform(0.05, 4.0)  # covers nearly-frozen to strongly-turning
        direction = _unit(rng, d)
        if case == 0:  # start close to moving uphill (u.e near -1; the ODE solve is
            # ill-conditioned there, so the very-near case is checked against mpmath below)
            direction = u + 0.3 * _unit(rng, d)
            direction /= np.linalg.norm(direction)
        g = direction * (target_delta * D / h)
        r = rng.uniform(-1.0, 1.0)

        u_new, r_new, delta_r, log_dt = ur_half_step(u, r, g, h, D, with_time=True)
        u_ref, r_ref, t_ref = _ode_reference(u, r, g, h, D)

        np.testing.assert_allclose(u_new, u_ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(r_new, r_ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(delta_r, r_ref - r, rtol=0, atol=1e-10)
        np.testing.assert_allclose(np.exp(log_dt), t_ref, rtol=1e-10, atol=0)
        # the stand-alone time function agrees with the one returned by the step
        np.testing.assert_allclose(log_physical_time(u, r, g, h, D), log_dt, rtol=0, atol=1e-13)
        assert abs(np.linalg.norm(u_new) - 1.0) < 1e-13


def _mp_exact(u, r, g, h, D):
    """Closed form of §3.1 in 40-digit arithmetic (mpmath)."""
    import mpmath as mp

    with mp.workdps(40):
        gn = mp.sqrt(mp.fsum(mp.mpf(x) ** 2 for x in g))
        e = [-mp.mpf(x) / gn for x in g]
        c = mp.fsum(mp.mpf(a) * b for a, b in zip(u, e))
        delta = mp.mpf(h) * gn / D
        den = mp.cosh(delta) + c * mp.sinh(delta)
        num = mp.sinh(delta) + c * mp.cosh(delta) - c
        u_new = np.array([float((mp.mpf(a) + b * num) / den) for a, b in zip(u, e)])
        time = mp.exp(mp.mpf(r)) * (D / gn) * (mp.sinh(delta) + c * (mp.cosh(delta) - 1))
        return u_new, float(mp.mpf(r) + mp.log(den)), float(time)


@pytest.mark.parametrize("d", [2, 7, 50])
def test_ur_half_step_matches_high_precision_near_uphill(d):
    """u.e close to -1 with large delta: the direction first slows down, then swings round."""
    rng = np.random.default_rng(2000 + d)
    for eps_dir, target_delta in [(1e-3, 3.0), (1e-2, 8.0), (0.05, 20.0), (0.5, 0.01)]:
        u = _unit(rng, d)
        direction = u + eps_dir * _unit(rng, d)
        direction /= np.linalg.norm(direction)
        h = rng.uniform(0.05, 1.0)
        g = direction * (target_delta * d / h)
        u_new, r_new, _, log_dt = ur_half_step(u, 0.2, g, h, d, with_time=True)
        u_ref, r_ref, t_ref = _mp_exact(u, 0.2, g, h, d)
        np.testing.assert_allclose(u_new, u_ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(r_new, r_ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(np.exp(log_dt), t_ref, rtol=1e-10)


def test_ur_half_step_survives_a_gradient_whose_squared_norm_overflows_float32():
    """``core.dynamics._geometry``: posteriordb's ``arma11`` at ``theta = 1.2`` has a float32
    potential of 3.7e31 and a gradient of 1.2e34, whose squared norm is infinite in
    float32. The update is then the float64 one to float32 precision (before, ``e`` was
    NaN, every step from there diverged and ESH's step size fell to 0), in JAX and torch,
    batched with an ordinary gradient, which keeps its plain norm to the bit."""
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(11)
    u = np.stack([_unit(rng, 4), _unit(rng, 4)])
    g = np.array([[-9.24e31, 4.3e31, 1.196e34, -7.3e31], [0.3, -1.2, 2.0, 0.7]])
    r = np.zeros(2)
    from esh_kernels.core.backend import norm
    from esh_kernels.core.dynamics import _geometry

    ref = ur_half_step(u, r, g, 0.01, 3.0)
    for xp, to in ((jnp, lambda a: jnp.asarray(a, jnp.float32)),
                   (torch, lambda a: torch.tensor(a, dtype=torch.float32))):
        got = ur_half_step(to(u), to(r), to(g), 0.01, 3.0)
        for a, b in zip(got, ref):
            a = np.asarray(a, np.float64)
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        gnorm = np.asarray(_geometry(to(u), to(g))[2])
        assert not np.isfinite(np.asarray(norm(xp, to(g)))[0, 0])
        assert gnorm[1] == np.asarray(norm(xp, to(g)))[1, 0]


def test_ur_half_step_batched_matches_loop():
    rng = np.random.default_rng(7)
    d, n = 5, 8
    u = np.stack([_unit(rng, d) for _ in range(n)])
    g = rng.normal(size=(n, d)) * 3.0
    r = rng.normal(size=n)
    h = rng.uniform(0.1, 1.0, size=n)
    out = ur_half_step(u, r, g, h, d, with_time=True)
    for i in range(n):
        single = ur_half_step(u[i], r[i], g[i], float(h[i]), d, with_time=True)
        for a, b in zip(out, single):
            np.testing.assert_allclose(a[i], b, rtol=0, atol=1e-14)


def test_kinetic_energy_change_is_D_delta_r():
    assert kinetic_energy_change(0.25, 7) == pytest.approx(1.75, abs=1e-15)
    np.testing.assert_allclose(kinetic_energy_change(np.array([1.0, -2.0]), 3), [3.0, -6.0])


# ---------------------------------------------------------------------------------------
# 2. Unit norm of u after many leapfrog steps


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("target", ["gaussian", "quartic"])
@pytest.mark.parametrize("denominator", ["d", "d-1"])
def test_leapfrog_keeps_unit_norm(dtype, tol, target, denominator):
    rng = np.random.default_rng(11)
    d = 10
    D = d if denominator == "d" else d - 1
    vg = gaussian_target(d, rng, dtype) if target == "gaussian" else quartic_target(d, dtype)
    x = rng.normal(size=d).astype(dtype)
    state = _init_state(x, _unit(rng, d, dtype), dtype(0.0), vg)
    worst = 0.0
    for _ in range(1000):
        state, _ = esh_leapfrog(state, 0.3, vg, D)
        worst = max(worst, abs(float(np.linalg.norm(state.u.astype(np.float64))) - 1.0))
    assert state.u.dtype == dtype and state.x.dtype == dtype
    assert np.all(np.isfinite(state.x)) and np.isfinite(state.r)
    assert worst < tol


# ---------------------------------------------------------------------------------------
# 3. Reversibility of the deterministic leapfrog


def _scales(d, rng):
    diag = rng.uniform(0.5, 2.0, size=d)
    dense = np.tril(rng.normal(size=(d, d)) * 0.3) + np.diag(rng.uniform(0.7, 1.5, size=d))
    return {"none": None, "diagonal": diag, "dense": dense}


@pytest.mark.parametrize("scale_kind", ["none", "diagonal", "dense"])
@pytest.mark.parametrize("denominator", ["d", "d-1"])
@pytest.mark.parametrize("target", ["gaussian", "quartic"])
def test_leapfrog_reversible(scale_kind, denominator, target):
    rng = np.random.default_rng(23)
    d = 6
    D = d if denominator == "d" else d - 1
    vg = gaussian_target(d, rng) if target == "gaussian" else quartic_target(d)
    scale = _scales(d, rng)[scale_kind]
    x0, u0, r0 = rng.normal(size=d), _unit(rng, d), 0.3
    state = _init_state(x0, u0, r0, vg)
    n, eps = 40, 0.15
    total_dr = 0.0
    for _ in range(n):
        state, dr = esh_leapfrog(state, eps, vg, D, scale=scale)
        total_dr += dr
    assert np.max(np.abs(state.x - x0)) > 0.1  # it actually moved
    state = state._replace(u=-state.u)
    for _ in range(n):
        state, dr = esh_leapfrog(state, eps, vg, D, scale=scale)
        total_dr += dr
    np.testing.assert_allclose(state.x, x0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(-state.u, u0, rtol=0, atol=1e-10)
    assert abs(state.r - r0) < 1e-10
    assert abs(total_dr) < 1e-10


# ---------------------------------------------------------------------------------------
# 4. Second-order energy error


STEPS = np.array([0.2, 0.1, 0.05, 0.025])
HORIZON = 8.0


def _slope(errors):
    return np.polyfit(np.log(STEPS), np.log(errors), 1)[0]


@pytest.mark.parametrize("target", ["gaussian", "quartic"])
def test_esh_leapfrog_energy_error_is_second_order(target):
    rng = np.random.default_rng(5)
    d = 5
    vg = gaussian_target(d, rng) if target == "gaussian" else quartic_target(d)
    x0, u0 = rng.normal(size=d), _unit(rng, d)
    errors = []
    for eps in STEPS:
        state = _init_state(x0, u0, 0.0, vg)
        h0 = state.energy + d * state.r
        worst, sum_dr = 0.0, 0.0
        for _ in range(int(round(HORIZON / eps))):
            state, dr = esh_leapfrog(state, eps, vg, d)
            sum_dr += dr
            worst = max(worst, abs(state.energy + d * state.r - h0))
        # the returned delta_r adds up to the change of r
        assert abs(sum_dr - state.r) < 1e-10
        errors.append(worst)
    assert errors[-1] < 1e-2
    assert 1.7 <= _slope(errors) <= 2.3


@pytest.mark.parametrize("target", ["gaussian", "quartic"])
def test_euclidean_leapfrog_energy_error_is_second_order(target):
    rng = np.random.default_rng(6)
    d = 5
    vg = gaussian_target(d, rng) if target == "gaussian" else quartic_target(d)
    x0, p0 = rng.normal(size=d), rng.normal(size=d)
    errors = []
    for eps in STEPS:
        state = _init_state(x0, p0, 0.0, vg)
        h0 = state.energy + 0.5 * p0 @ p0
        worst = 0.0
        for _ in range(int(round(HORIZON / eps))):
            state = euclidean_leapfrog(state, eps, vg)
            worst = max(worst, abs(state.energy + 0.5 * state.u @ state.u - h0))
        errors.append(worst)
    assert errors[-1] < 5e-2
    assert 1.7 <= _slope(errors) <= 2.3


def test_euclidean_leapfrog_preconditioned_is_whitened_leapfrog():
    """With x = L y, the preconditioned step equals the plain step on E(L y) in y."""
    rng = np.random.default_rng(8)
    d = 4
    vg = quartic_target(d)
    L = np.tril(rng.normal(size=(d, d)) * 0.3) + np.eye(d)

    def vg_white(y):
        e, g = vg(L @ y)
        return e, L.T @ g

    x0, p0 = rng.normal(size=d), rng.normal(size=d)
    a = _init_state(x0, p0, 0.0, vg)
    b = _init_state(np.linalg.solve(L, x0), p0, 0.0, vg_white)
    for _ in range(20):
        a = euclidean_leapfrog(a, 0.1, vg, scale=L)
        b = euclidean_leapfrog(b, 0.1, vg_white)
    np.testing.assert_allclose(a.x, L @ b.x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.u, b.u, rtol=0, atol=1e-12)


def test_esh_leapfrog_time_is_the_two_half_step_times():
    """with_time returns (log_dt_old, log_dt_new): the physical time of the first half-step
    (spent at the old position) and of the second (at the new one)."""
    rng = np.random.default_rng(9)
    d = 4
    vg = quartic_target(d)
    state = _init_state(rng.normal(size=d), _unit(rng, d), 0.2, vg)
    eps = 0.3
    first = ur_half_step(state.u, state.r, state.grad, eps / 2, d, with_time=True)
    new_state, dr, (log_dt_old, log_dt_new) = esh_leapfrog(state, eps, vg, d, with_time=True)
    second = ur_half_step(first[0], first[1], new_state.grad, eps / 2, d, with_time=True)
    np.testing.assert_allclose(log_dt_old, first[3], rtol=0, atol=1e-14)
    np.testing.assert_allclose(log_dt_new, second[3], rtol=0, atol=1e-14)
    np.testing.assert_allclose(new_state.u, second[0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(dr, first[2] + second[2], rtol=0, atol=1e-15)
    # the total matches the frozen-gradient ODE integral of e^r over both halves
    t_ref = _ode_reference(state.u, state.r, state.grad, eps / 2, d)[2]
    t_ref += _ode_reference(first[0], first[1], new_state.grad, eps / 2, d)[2]
    np.testing.assert_allclose(np.exp(np.logaddexp(log_dt_old, log_dt_new)), t_ref, rtol=1e-10)


# ---------------------------------------------------------------------------------------
# 5. Edge cases of the half-step


@pytest.mark.parametrize("h", [0.3, 2.0])
def test_zero_gradient_leaves_u_and_r(h):
    rng = np.random.default_rng(3)
    d = 6
    u = _unit(rng, d)
    r = 0.7
    u_new, r_new, delta_r, log_dt = ur_half_step(u, r, np.zeros(d), h, d, with_time=True)
    np.testing.assert_allclose(u_new, u, rtol=0, atol=1e-15)
    assert delta_r == 0.0
    assert r_new == r
    assert abs(log_dt - (r + math.log(h))) <= 4 * np.spacing(abs(r + math.log(h)))
    assert abs(log_physical_time(u, r, np.zeros(d), h, d) - (r + math.log(h))) < 1e-15


@pytest.mark.parametrize("d", [3, 8])
@pytest.mark.parametrize("grad_norm", [0.5, 40.0, 1e6])
def test_u_antiparallel_to_descent(d, grad_norm):
    """u = g/|g| (moving straight uphill): u unchanged, delta_r = -delta exactly; with
    the huge gradient exp(-2 delta) underflows and nothing may become NaN/inf."""
    g = np.zeros(d)
    g[1] = grad_norm
    u = g / np.linalg.norm(g)
    h, D = 0.7, d
    delta = h * grad_norm / D
    u_new, r_new, delta_r, log_dt = ur_half_step(u, 0.0, g, h, D, with_time=True)
    assert np.all(np.isfinite(u_new)) and np.isfinite(r_new) and np.isfinite(log_dt)
    np.testing.assert_array_equal(u_new, u)
    np.testing.assert_allclose(delta_r, -delta, rtol=1e-14, atol=1e-14)
    # physical time: int_0^h e^{-tau |g|/D} dtau = (1 - e^{-delta}) / (|g| / D)
    # (log space: delta cancels out of log_dt, costing ~delta * 1e-16 relative accuracy)
    np.testing.assert_allclose(np.exp(log_dt), -np.expm1(-delta) * D / grad_norm, rtol=1e-10)
    if grad_norm == 1e6:
        assert math.exp(-2 * delta) == 0.0  # the case of interest really underflows


@pytest.mark.parametrize("grad_norm", [0.5, 40.0, 1e6])
def test_u_parallel_to_descent(grad_norm):
    d = 5
    g = np.zeros(d)
    g[3] = -grad_norm
    u = -g / np.linalg.norm(g)  # u = e
    h = 0.9
    delta = h * grad_norm / d
    u_new, r_new, delta_r = ur_half_step(u, 0.1, g, h, d)
    np.testing.assert_array_equal(u_new, u)
    np.testing.assert_allclose(delta_r, delta, rtol=1e-14)
    np.testing.assert_allclose(r_new, 0.1 + delta, rtol=1e-14)


def test_u_nearly_antiparallel_random_direction():
    """u = g/|g| for a generic g (u.e = -1 only up to rounding). For moderate delta this is
    -delta; for a huge delta the rounding-level offset from -e grows like e^(2 delta) and
    u really does swing round (an unstable fixed point), but nothing may overflow."""
    rng = np.random.default_rng(4)
    d = 9
    for scale in (1.0, 10.0, 1e5, 1e12):
        g = rng.normal(size=d) * scale
        u = g / np.linalg.norm(g)
        delta = np.linalg.norm(g) / d
        u_new, r_new, delta_r, log_dt = ur_half_step(u, 0.0, g, 1.0, d, with_time=True)
        assert np.all(np.isfinite(u_new)) and np.isfinite(delta_r) and np.isfinite(log_dt)
        assert abs(np.linalg.norm(u_new) - 1.0) < 1e-12
        assert -delta * (1 + 1e-12) <= delta_r <= delta * (1 + 1e-12)
        if delta < 5.0:
            np.testing.assert_allclose(delta_r, -delta, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(u_new, u, rtol=0, atol=1e-10)


def _float32_below_minus_one(rng, d, tries=20000):
    """A float32 pair (u, g) with u unit and fl32(u . e) < -1, e = -g/|g|."""
    for _ in range(tries):
        u = rng.normal(size=d).astype(np.float32)
        u = u / np.linalg.norm(u)
        g = (u * np.float32(rng.uniform(0.5, 50.0))).astype(np.float32)
        e = -g / np.linalg.norm(g)
        if np.dot(u, e) < np.float32(-1.0):
            return u, g
    raise AssertionError("no float32 case with u.e < -1 found")


@pytest.mark.parametrize("delta", [0.7, 70.0, -0.7, -15.0])
def test_float32_dot_below_minus_one_is_finite(delta):
    rng = np.random.default_rng(12)
    d = 7
    u, g = _float32_below_minus_one(rng, d)
    e = -g / np.linalg.norm(g)
    assert np.dot(u, e) < -1  # in float32 this is the case that breaks log(1 + c)
    h = delta * d / float(np.linalg.norm(g.astype(np.float64)))
    u_new, r_new, delta_r = ur_half_step(u, np.float32(0.0), g, h, d)
    assert u_new.dtype == np.float32
    assert np.all(np.isfinite(u_new)) and np.isfinite(r_new) and np.isfinite(delta_r)
    assert abs(float(np.linalg.norm(u_new)) - 1.0) < 1e-5
    if abs(delta) < 2.0:
        # moving (numerically) straight uphill: u unchanged and delta_r = -delta; for a
        # large |delta| the float32 rounding offset of u from -e is amplified ~e^(2 delta)
        # (unstable fixed point), so only finiteness and the unit norm are required there
        np.testing.assert_allclose(float(delta_r), -delta, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(u_new, u, rtol=0, atol=1e-5)
    else:
        assert abs(float(delta_r)) <= abs(delta) * (1 + 1e-4)
    if h > 0:
        log_dt = log_physical_time(u, np.float32(0.0), g, h, d)
        assert np.isfinite(log_dt)


def test_float32_jax_and_torch_dot_below_minus_one_is_finite():
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    u, g = _float32_below_minus_one(rng, 7)
    r0 = np.zeros((), np.float32)
    jitted = jax.jit(lambda u, r, g: ur_half_step(u, r, g, 30.0, 7, with_time=True))
    outputs = [
        jitted(jax.numpy.asarray(u), jax.numpy.asarray(r0), jax.numpy.asarray(g)),
        ur_half_step(torch.from_numpy(u), torch.from_numpy(r0), torch.from_numpy(g), 30.0, 7,
                     with_time=True),
    ]
    for u_new, r_new, delta_r, log_dt in outputs:
        for a in (u_new, r_new, delta_r, log_dt):
            assert str(a.dtype).endswith("float32")
            assert np.all(np.isfinite(np.asarray(a)))
        assert abs(float(np.linalg.norm(np.asarray(u_new))) - 1.0) < 1e-5


@pytest.mark.parametrize("denominator", ["d", "d-1"])
def test_negative_h_reverses_the_half_step(denominator):
    rng = np.random.default_rng(13)
    for d in (2, 5, 30):
        D = d if denominator == "d" else d - 1
        for _ in range(5):
            u, g = _unit(rng, d), rng.normal(size=d) * rng.uniform(0.1, 20.0)
            r, h = rng.normal(), rng.uniform(0.05, 1.0)
            u1, r1, dr1 = ur_half_step(u, r, g, h, D)
            u2, r2, dr2 = ur_half_step(u1, r1, g, -h, D)
            np.testing.assert_allclose(u2, u, rtol=0, atol=1e-12)
            np.testing.assert_allclose(r2, r, rtol=0, atol=1e-12)
            np.testing.assert_allclose(dr1 + dr2, 0.0, rtol=0, atol=1e-12)
            # a negative duration is the same as flipping u, stepping forward, flipping back
            u3, r3, _ = ur_half_step(-u, r, g, h, D)
            u4, r4, _ = ur_half_step(u, r, g, -h, D)
            np.testing.assert_allclose(-u3, u4, rtol=0, atol=1e-12)
            np.testing.assert_allclose(r3, r4, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "dtype, delta",
    [(np.float64, 30.0), (np.float64, 200.0), (np.float64, 400.0),
     (np.float32, 10.0), (np.float32, 30.0), (np.float32, 50.0)],
)
def test_negative_h_with_large_delta(dtype, delta):
    """A negative duration (zeta = e^{-delta} > 1, e.g. Omelyan's negative sub-step) with a
    large |delta| must behave like the time-reversed forward step: by the symmetry
    u -> -u, ur_half_step(u, r, g, -h) = (-u', r', ...) with (u', r', ...) =
    ur_half_step(-u, r, g, h). The forward step is fine for any delta (zeta underflows
    harmlessly), so the backward one must be finite and unit too."""
    rng = np.random.default_rng(31)
    d = 5
    u = _unit(rng, d, dtype)
    g = _unit(rng, d, dtype)  # |g| = 1, so delta = h / D
    h = delta * d
    u_back, r_back, dr_back = ur_half_step(u, dtype(0.0), g, -h, d)
    u_fwd, r_fwd, dr_fwd = ur_half_step(-u, dtype(0.0), g, h, d)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    assert np.all(np.isfinite(u_fwd)) and abs(np.linalg.norm(u_fwd) - 1) < tol
    assert np.all(np.isfinite(u_back)), u_back
    assert abs(float(np.linalg.norm(u_back)) - 1.0) < tol, u_back
    np.testing.assert_allclose(u_back, -u_fwd, rtol=0, atol=tol)
    np.testing.assert_allclose(dr_back, dr_fwd, rtol=tol, atol=tol)


def test_half_steps_compose():
    """The sub-flow is a flow: two steps of h equal one step of 2h (exact solution)."""
    rng = np.random.default_rng(14)
    d = 6
    u, g = _unit(rng, d), rng.normal(size=d) * 5.0
    a = ur_half_step(*ur_half_step(u, 0.0, g, 0.4, d)[:2], g, 0.4, d)
    b = ur_half_step(u, 0.0, g, 0.8, d)
    np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------
# Preconditioning helpers


def test_preconditioning_maps():
    rng = np.random.default_rng(15)
    d = 4
    cov = np.cov(rng.normal(size=(d, 50)))
    L = scale_from_covariance(cov)
    np.testing.assert_allclose(L @ L.T, cov, rtol=0, atol=1e-12)
    var = np.diag(cov).copy()
    np.testing.assert_allclose(scale_from_covariance(var) ** 2, var, rtol=1e-14)
    u, g = rng.normal(size=d), rng.normal(size=d)
    for scale, mat in ((L, L), (np.sqrt(var), np.diag(np.sqrt(var)))):
        np.testing.assert_allclose(precond_forward(scale, u), mat @ u, atol=1e-14)
        np.testing.assert_allclose(precond_adjoint(scale, g), mat.T @ g, atol=1e-14)
        np.testing.assert_allclose(precond_inverse(scale, mat @ u), u, atol=1e-12)
        # adjointness: <L u, g> = <u, L^T g>
        assert abs(precond_forward(scale, u) @ g - u @ precond_adjoint(scale, g)) < 1e-12
    # batched vectors with one dense scale per batch element
    Ls = np.stack([L, 2 * L])
    us = np.stack([u, u])
    np.testing.assert_allclose(precond_forward(Ls, us)[1], 2 * L @ u, atol=1e-13)
    np.testing.assert_allclose(precond_adjoint(Ls, us)[1], 2 * L.T @ u, atol=1e-13)
    assert precond_forward(None, u) is u and precond_adjoint(None, g) is g


# ---------------------------------------------------------------------------------------
# 6. Reservoir sampling


def _run_reservoir(log_weights, repeats, rng):
    log_total = np.full(repeats, -np.inf)
    kept = np.full(repeats, -1)
    for k, lw in enumerate(log_weights):
        log_u = np.log(rng.uniform(size=repeats))
        with np.errstate(invalid="ignore"):
            log_total, take = reservoir_take(log_total, np.full(repeats, lw), log_u)
        kept = np.where(take, k, kept)
    return log_total, kept


def test_reservoir_frequencies_match_weights():
    rng = np.random.default_rng(16)
    weights = np.array([0.5, 3.0, 0.0, 1.0, 2.5, 0.2, 0.0, 4.0, 1.3])
    repeats = 200_000
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
    log_total, kept = _run_reservoir(log_weights, repeats, rng)
    np.testing.assert_allclose(log_total, np.log(weights.sum()), rtol=1e-14)
    counts = np.bincount(kept, minlength=len(weights))
    assert np.all(kept >= 0)
    # zero-weight offers are never taken
    assert counts[2] == 0 and counts[6] == 0
    nz = weights > 0
    expected = repeats * weights[nz] / weights.sum()
    chi2 = np.sum((counts[nz] - expected) ** 2 / expected)
    assert chi2 < stats.chi2.ppf(1 - 1e-4, df=nz.sum() - 1)
    # and the chi-square bound is not vacuous: uniform frequencies would fail it
    wrong = repeats / nz.sum()
    assert np.sum((counts[nz] - wrong) ** 2 / wrong) > stats.chi2.ppf(1 - 1e-4, df=nz.sum() - 1)


def test_reservoir_first_offer_always_taken_and_zero_weight_never():
    log_u = np.log(np.array([1e-300, 0.3, 0.999999]))
    total, take = reservoir_take(np.full(3, -np.inf), np.full(3, -2.0), log_u)
    assert np.all(take) and np.all(total == -2.0)
    # a zero-weight offer, also as the very first one, and also with log U = -inf
    for start in (np.full(3, -np.inf), np.full(3, 0.5)):
        with np.errstate(invalid="ignore"):
            log_u = np.array([-np.inf, -5.0, -1e-9])
            total, take = reservoir_take(start, np.full(3, -np.inf), log_u)
        assert not np.any(take)
        np.testing.assert_array_equal(total, start)


# ---------------------------------------------------------------------------------------
# 7. Unit vectors and partial refresh


def test_unit_vector_uniform_on_sphere():
    rng = np.random.default_rng(17)
    u = unit_vector(rng.normal(size=(40_000, 3)))
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 1.0, rtol=0, atol=1e-15)
    # on S^2 each coordinate is Uniform(-1, 1) (Archimedes)
    for i in range(3):
        assert stats.kstest(u[:, i], stats.uniform(-1, 2).cdf).pvalue > 1e-3


def test_refresh_noise_scale_values():
    d = 10
    np.testing.assert_allclose(
        refresh_noise_scale(0.3, 2.0, d), math.sqrt(math.expm1(0.3) / d), rtol=1e-15
    )
    assert refresh_noise_scale(0.3, math.inf, d) == 0.0
    rng = np.random.default_rng(18)
    u = _unit(rng, d)
    np.testing.assert_array_equal(partial_refresh(u, rng.normal(size=d), 0.0), u)


@pytest.mark.parametrize("s_over_L", [0.1, 0.5, 1.5])
def test_partial_refresh_decorrelation(s_over_L):
    rng = np.random.default_rng(19)
    d, n = 1000, 1000
    L = 3.0
    nu = refresh_noise_scale(s_over_L * L, L, d)
    u = unit_vector(rng.normal(size=(n, d)))
    u_new = partial_refresh(u, rng.normal(size=(n, d)), nu)
    np.testing.assert_allclose(np.linalg.norm(u_new, axis=-1), 1.0, rtol=0, atol=1e-14)
    dots = np.sum(u_new * u, axis=-1)
    se = dots.std() / math.sqrt(n)
    # the large-d limit; the finite-d bias is O(1/d)
    assert abs(dots.mean() - math.exp(-s_over_L)) < 5 * se + 2.0 / d


def test_partial_refresh_keeps_uniform_invariant():
    rng = np.random.default_rng(20)
    d, n = 3, 40_000
    u = unit_vector(rng.normal(size=(n, d)))
    # batched nu (one per sample) exercises the broadcasting branch
    nu = refresh_noise_scale(np.full(n, 0.7), 1.0, d)
    for _ in range(5):
        u = partial_refresh(u, rng.normal(size=(n, d)), nu)
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 1.0, rtol=0, atol=1e-14)
    for i in range(d):
        assert stats.kstest(u[:, i], stats.uniform(-1, 2).cdf).pvalue > 1e-3
    # moments: E u = 0, E u u^T = I/d (within MC error)
    np.testing.assert_allclose(u.mean(axis=0), 0.0, atol=5 / math.sqrt(3 * n))
    np.testing.assert_allclose(u.T @ u / n, np.eye(d) / d, atol=5 * 0.3 / math.sqrt(n))


def test_partial_refresh_moments_higher_dim():
    rng = np.random.default_rng(21)
    d, n = 20, 20_000
    u = unit_vector(rng.normal(size=(n, d)))
    nu = refresh_noise_scale(0.5, 1.0, d)
    for _ in range(3):
        u = partial_refresh(u, rng.normal(size=(n, d)), nu)
    m2 = np.mean(u**2, axis=0)
    m4 = np.mean(u**4, axis=0)
    np.testing.assert_allclose(m2, 1 / d, atol=5 * math.sqrt(2 / (d * d * n)))
    # E u_i^4 = 3 / (d (d + 2)) on S^{d-1}
    np.testing.assert_allclose(m4.mean(), 3 / (d * (d + 2)), rtol=0.05)


# ---------------------------------------------------------------------------------------
# 8. Metropolis acceptance


def _to_backend(name, arr):
    if name == "numpy":
        return np.asarray(arr)
    if name == "jax":
        jnp = pytest.importorskip("jax.numpy")
        return jnp.asarray(arr)
    torch = pytest.importorskip("torch")
    return torch.as_tensor(np.asarray(arr))


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_log_accept_prob(backend):
    errs = np.array([np.nan, np.inf, -np.inf, -3.0, -1e-12, 0.0, 0.25, 7.0], dtype=np.float32)
    out = np.asarray(log_accept_prob(_to_backend(backend, errs)))
    assert out[0] == -np.inf  # NaN -> rejected
    assert out[1] == -np.inf  # +inf -> rejected
    assert out[2] == -np.inf  # any non-finite error is rejected
    np.testing.assert_array_equal(out[3:6], 0.0)  # energy went down -> always accept
    np.testing.assert_allclose(out[6:], [-0.25, -7.0], rtol=1e-7)
    assert not np.any(np.isnan(out))


@pytest.mark.parametrize("scale_kind", ["diag", "dense"])
def test_step_curvature_is_the_curvature_along_the_step_times_eps_squared(scale_kind):
    """On a quadratic ``E = x^T A x / 2`` the curvature along a step ``dx`` is the Rayleigh
    quotient ``<dx, A dx> / |L^{-1} dx|^2`` in the whitened frame: ``hmc.step_curvature`` of
    a Euclidean leapfrog step is ``eps^2`` times it (the stability limit of leapfrog is 4),
    ``isokinetic.step_curvature`` of an isokinetic step ``<dx, A dx> / (d - 1)`` (its unit
    velocity makes ``|L^{-1} dx| = eps``), and along an eigenvector of the whitened ``A`` the
    former is ``eps^2 lambda`` exactly."""
    from esh_kernels.core import hmc, isokinetic

    rng = np.random.default_rng(11)
    d = 4
    B = rng.normal(size=(d, d))
    A = B @ B.T + d * np.eye(d)
    value_and_grad = lambda x: (0.5 * x @ A @ x, A @ x)  # noqa: E731
    scale = (np.exp(rng.normal(size=d)) if scale_kind == "diag"
             else np.linalg.cholesky(np.linalg.inv(A) * (1.0 + 0.3 * np.eye(d))))
    x0 = rng.normal(size=d)
    start = IntegratorState(x0, rng.normal(size=d), 0.0, *value_and_grad(x0))
    eps = 0.3
    end = euclidean_leapfrog(start, eps, value_and_grad, scale)
    dx = end.x - start.x
    rayleigh = dx @ A @ dx / np.sum(precond_inverse(scale, dx) ** 2)
    assert hmc.step_curvature(start, end, eps, scale) == pytest.approx(eps**2 * rayleigh, rel=1e-10)

    L = np.diag(scale) if scale_kind == "diag" else scale
    lam, vecs = np.linalg.eigh(L.T @ A @ L)  # the whitened Hessian
    along = start._replace(u=vecs[:, -1], grad=A @ x0 * 0.0, x=x0 * 0.0, energy=0.0)
    along_end = euclidean_leapfrog(along, eps, value_and_grad, scale)
    assert hmc.step_curvature(along, along_end, eps, scale) == pytest.approx(eps**2 * lam[-1], rel=1e-10)

    iso = start._replace(u=_unit(rng, d), r=0.0)
    iso_end, _ = esh_leapfrog(iso, 0.7, value_and_grad, d - 1, scale)
    dx = iso_end.x - iso.x
    assert isokinetic.step_curvature(iso, iso_end) == pytest.approx(dx @ A @ dx / (d - 1), rel=1e-10)
