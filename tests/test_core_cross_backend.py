"""The core math gives the same float64 results on JAX (x64), torch and numpy.

numpy is the reference; each test runs once per other backend. JAX runs inside the
``jax_x64`` fixture (x64 on for that test only), torch with float64 tensors.
"""

import math

import numpy as np
import pytest

from esh_kernels.core import (
    IntegratorState,
    esh_leapfrog,
    euclidean_leapfrog,
    log_accept_prob,
    log_physical_time,
    namespace,
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
from esh_kernels.core.adaptation import (
    dual_averaging_init,
    dual_averaging_update,
    jittered_num_steps,
    metric_covariance,
    step_size_predictor_init,
    step_size_predictor_update,
    welford_covariance,
    welford_init,
    welford_update,
)

# log(S+) = log(0) for u = -e is intended in the core (logaddexp handles -inf)
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log")

TOL = 1e-10
BACKENDS = ["jax", "torch"]


class Backend:
    """Conversions to and from one backend, float64."""

    def __init__(self, name):
        self.name = name
        if name == "jax":
            import jax
            import jax.numpy as jnp

            self.jax, self.xp = jax, jnp
        elif name == "torch":
            import torch

            self.xp = torch
        else:
            self.xp = np

    def __call__(self, a, dtype="float64"):
        if self.name == "jax":
            return self.xp.asarray(np.asarray(a), dtype=dtype)
        if self.name == "torch":
            return self.xp.tensor(np.asarray(a), dtype=getattr(self.xp, dtype))
        return np.asarray(a, dtype=dtype)

    @staticmethod
    def back(a):
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        return np.asarray(a)

    def gaussian_value_and_grad(self, precision):
        """E = x^T P x / 2, with the gradient from the backend's autodiff."""
        P = self(precision)
        if self.name == "jax":
            jax = self.jax
            return jax.value_and_grad(lambda x: 0.5 * (x @ (P @ x)))
        if self.name == "torch":
            torch = self.xp

            def value_and_grad(x):
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    energy = 0.5 * (xg @ (P @ xg))
                    (grad,) = torch.autograd.grad(energy, xg)
                return energy.detach(), grad

            return value_and_grad

        def value_and_grad(x):
            px = precision @ x
            return 0.5 * (x @ px), px

        return value_and_grad


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "jax":
        request.getfixturevalue("jax_x64")
    else:
        pytest.importorskip("torch")
    return Backend(request.param)


NP = Backend("numpy")


def _same(actual, expected, tol=TOL):
    actual = Backend.back(actual)
    assert actual.dtype == np.float64 or actual.dtype == np.bool_, actual.dtype
    np.testing.assert_allclose(actual, np.asarray(expected), rtol=tol, atol=tol)


def _unit(rng, *shape):
    z = rng.normal(size=shape)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def test_namespace_detection(backend):
    assert namespace(backend(np.ones(2))) is backend.xp
    assert namespace(1.0, backend(np.ones(2))) is backend.xp
    assert namespace(1.0, 2.0) is np


# ---------------------------------------------------------------------------------------
# Dynamics


@pytest.mark.parametrize("D_offset", [0, 1])
def test_ur_half_step_with_time(backend, D_offset):
    rng = np.random.default_rng(100)
    n, d = 6, 5
    D = d - D_offset
    u = _unit(rng, n, d)
    g = rng.normal(size=(n, d)) * rng.uniform(0.1, 30.0, size=(n, 1))
    g[0] = 0.0  # zero gradient
    g[1] = u[1] * 7.0  # moving straight uphill (u.e = -1 up to rounding)
    r = rng.normal(size=n)
    h = rng.uniform(0.05, 1.0, size=n)
    ref = ur_half_step(u, r, g, h, D, with_time=True)
    out = ur_half_step(backend(u), backend(r), backend(g), backend(h), D, with_time=True)
    for a, b in zip(out, ref):
        _same(a, b)
    # a Python-float duration (scalar path of the log-time)
    ref = ur_half_step(u, r, g, 0.37, D, with_time=True)
    out = ur_half_step(backend(u), backend(r), backend(g), 0.37, D, with_time=True)
    for a, b in zip(out, ref):
        _same(a, b)
    _same(log_physical_time(backend(u), backend(r), backend(g), 0.37, D), ref[3])
    # negative duration (no time)
    ref = ur_half_step(u, r, g, -0.37, D)
    out = ur_half_step(backend(u), backend(r), backend(g), -0.37, D)
    for a, b in zip(out, ref):
        _same(a, b)


def _scale(kind, d, rng):
    if kind == "none":
        return None
    if kind == "diagonal":
        return rng.uniform(0.5, 2.0, size=d)
    return np.tril(rng.normal(size=(d, d)) * 0.3) + np.diag(rng.uniform(0.7, 1.5, size=d))


def _precision(d, rng):
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * np.linspace(0.3, 3.0, d)) @ q.T


@pytest.mark.parametrize("D_offset", [0, 1])
@pytest.mark.parametrize("scale_kind", ["none", "diagonal", "dense"])
def test_esh_leapfrog(backend, D_offset, scale_kind):
    rng = np.random.default_rng(200)
    d = 6
    D = d - D_offset
    precision = _precision(d, rng)
    scale = _scale(scale_kind, d, rng)
    x0, u0, r0 = rng.normal(size=d), _unit(rng, d), 0.1

    def run(b):
        vg = b.gaussian_value_and_grad(precision)
        x = b(x0)
        energy, grad = vg(x)
        state = IntegratorState(x, b(u0), b(r0), energy, grad)
        sc = None if scale is None else b(scale)
        drs, times = [], []
        for _ in range(15):
            state, dr, (t_old, t_new) = esh_leapfrog(state, 0.2, vg, D, scale=sc, with_time=True)
            drs.append(dr)
            times.append((t_old, t_new))
        return state, drs, times

    ref_state, ref_drs, ref_times = run(NP)
    state, drs, times = run(backend)
    for a, b in zip(state, ref_state):
        _same(a, b)
    for a, b in zip(drs, ref_drs):
        _same(a, b)
    for (a0, a1), (b0, b1) in zip(times, ref_times):
        _same(a0, b0)
        _same(a1, b1)


def test_esh_leapfrog_under_jax_jit(jax_x64):
    """Tracers are recognised as JAX arrays (jit compiles the backend-neutral code)."""
    import jax

    rng = np.random.default_rng(201)
    d = 4
    precision = _precision(d, rng)
    scale = _scale("dense", d, rng)
    jb = Backend("jax")
    vg = jb.gaussian_value_and_grad(precision)

    @jax.jit
    def step(state, sc):
        return esh_leapfrog(state, 0.3, vg, d - 1, scale=sc)

    x0, u0 = rng.normal(size=d), _unit(rng, d)
    e, g = vg(jb(x0))
    state = IntegratorState(jb(x0), jb(u0), jb(0.0), e, g)
    np_vg = NP.gaussian_value_and_grad(precision)
    ref = IntegratorState(x0, u0, 0.0, *np_vg(x0))
    for _ in range(10):
        state, dr = step(state, jb(scale))
        ref, ref_dr = esh_leapfrog(ref, 0.3, np_vg, d - 1, scale=scale)
        _same(dr, ref_dr)
    for a, b in zip(state, ref):
        _same(a, b)


@pytest.mark.parametrize("scale_kind", ["none", "diagonal", "dense"])
def test_euclidean_leapfrog(backend, scale_kind):
    rng = np.random.default_rng(300)
    d = 5
    precision = _precision(d, rng)
    scale = _scale(scale_kind, d, rng)
    x0, p0 = rng.normal(size=d), rng.normal(size=d)

    def run(b):
        vg = b.gaussian_value_and_grad(precision)
        energy, grad = vg(b(x0))
        state = IntegratorState(b(x0), b(p0), b(0.0), energy, grad)
        sc = None if scale is None else b(scale)
        for _ in range(15):
            state = euclidean_leapfrog(state, 0.15, vg, scale=sc)
        return state

    for a, b in zip(run(backend), run(NP)):
        _same(a, b)


def test_preconditioning(backend):
    rng = np.random.default_rng(350)
    d = 4
    cov = np.cov(rng.normal(size=(d, 30)))
    v = rng.normal(size=(3, d))
    for c in (cov, np.diag(cov).copy()):
        L = scale_from_covariance(c)
        _same(scale_from_covariance(backend(c)), L)
        # a batch of vectors needs a batch of dense scales, (3, d, d); diagonal broadcasts
        Lb = np.broadcast_to(L, (3,) + L.shape) if L.ndim == 2 else L
        for fn in (precond_forward, precond_adjoint, precond_inverse):
            _same(fn(backend(L), backend(v[0])), fn(L, v[0]))
            _same(fn(backend(Lb), backend(v)), fn(Lb, v))


# ---------------------------------------------------------------------------------------
# Sphere, reservoir, Metropolis


def test_partial_refresh_and_unit_vector(backend):
    rng = np.random.default_rng(400)
    n, d = 5, 7
    z0, z1 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    u = unit_vector(z0)
    _same(unit_vector(backend(z0)), u)
    durations = rng.uniform(0.05, 1.0, size=n)
    nu = refresh_noise_scale(durations, 1.3, d)
    _same(refresh_noise_scale(backend(durations), 1.3, d), nu)
    _same(refresh_noise_scale(backend(durations), backend(np.inf), d), np.zeros(n))
    _same(partial_refresh(backend(u), backend(z1), backend(nu)), partial_refresh(u, z1, nu))
    # a scalar noise scale (0-d array and Python float)
    nu0 = float(refresh_noise_scale(0.4, 2.0, d))
    _same(partial_refresh(backend(u), backend(z1), backend(nu0)), partial_refresh(u, z1, nu0))
    _same(partial_refresh(backend(u), backend(z1), nu0), partial_refresh(u, z1, nu0))


def test_reservoir_take(backend):
    rng = np.random.default_rng(500)
    n = 12
    log_total = rng.normal(size=n)
    log_total[:3] = -np.inf  # empty reservoirs
    log_weight = rng.normal(size=n)
    log_weight[2] = log_weight[5] = -np.inf  # zero-weight offers
    log_u = np.log(rng.uniform(size=n))
    with np.errstate(invalid="ignore"):
        ref_total, ref_take = reservoir_take(log_total, log_weight, log_u)
    total, take = reservoir_take(backend(log_total), backend(log_weight), backend(log_u))
    _same(total, ref_total)
    np.testing.assert_array_equal(Backend.back(take), ref_take)
    assert ref_take[0] and ref_take[1] and not ref_take[2] and not ref_take[5]


def test_log_accept_prob(backend):
    errs = np.array([np.nan, np.inf, -np.inf, -2.0, 0.0, 0.3, 12.5])
    ref = log_accept_prob(errs)
    np.testing.assert_array_equal(ref[:3], -np.inf)
    _same(log_accept_prob(backend(errs)), ref)


# ---------------------------------------------------------------------------------------
# Adaptation


def test_dual_averaging_update(backend):
    def run(b):
        state = dual_averaging_init(b(math.log(0.3)), b(math.log(3.0)))
        for err in [0.2, -0.1, 0.05, 0.3, -0.4]:
            state = dual_averaging_update(state, b(err))
        return state

    for a, b in zip(run(backend), run(NP)):
        _same(a, b)


@pytest.mark.parametrize("dense", [False, True])
def test_welford_update(backend, dense):
    rng = np.random.default_rng(600)
    chains, n, d = 2, 20, 3
    x = rng.normal(size=(n, chains, d))
    w = (rng.uniform(size=(n, chains)) < 0.7).astype(np.float64)

    def run(b):
        state = welford_init(b(x[0]), dense=dense)
        for xi, wi in zip(x, w):
            state = welford_update(state, b(xi), b(wi))
        return state

    for a, b in zip(run(backend), run(NP)):
        _same(a, b)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("regularize", [False, True])
def test_welford_covariance(backend, dense, regularize):
    rng = np.random.default_rng(601)
    x = rng.normal(size=(15, 3))

    def run(b):
        state = welford_init(b(x[0]), dense=dense)
        for xi in x:
            state = welford_update(state, b(xi))
        return welford_covariance(state, regularize=regularize)

    _same(run(backend), run(NP))


@pytest.mark.parametrize("n", [5, 15])  # below and above the 2d draws of a dense metric
def test_metric_covariance(backend, n):
    x = np.random.default_rng(602).normal(size=(n, 3))

    def run(b):
        state = welford_init(b(x[0]), dense=True)
        for xi in x:
            state = welford_update(state, b(xi))
        return metric_covariance(state)

    _same(run(backend), run(NP))


def test_step_size_predictor_update(backend):
    errors = [3e-4, 1e-3, np.nan, 2e-4, 5e-2, 1e-6]
    diverged = [False, False, True, False, False, False]

    def run(b):
        eps = b(0.7)
        state = step_size_predictor_init(eps)
        steps = []
        for err, div in zip(errors, diverged):
            state, eps = step_size_predictor_update(state, eps, b(err), b(div, dtype="bool"))
            steps.append(eps)
        return state, steps

    state, steps = run(backend)
    ref_state, ref_steps = run(NP)
    for a, b in zip(state, ref_state):
        _same(a, b)
    for a, b in zip(steps, ref_steps):
        _same(a, b)


def test_jittered_num_steps(backend):
    rng = np.random.default_rng(700)
    u = 1.0 - rng.uniform(size=50)
    ref = jittered_num_steps(u, 2.0, 0.13, 20)
    _same(jittered_num_steps(backend(u), backend(2.0), backend(0.13), 20), ref)
    # HMC's num_steps: that many steps for every proposal, capped at max_steps
    fixed = jittered_num_steps(backend(u), backend(2.0), backend(0.13), 20, num_steps=5)
    _same(fixed, np.full(50, 5.0))
    _same(jittered_num_steps(backend(u), backend(2.0), backend(0.13), 20, num_steps=50), np.full(50, 20.0))
