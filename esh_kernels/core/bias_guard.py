"""ESH's bias guard: the discretisation bias of each coordinate, predicted from the warmup's
phase-2 draws, and a shorter step where it exceeds the budget (``esh_math.md`` §7.8).

``ESH`` has no Metropolis test, so its draws carry a bias that grows with the step size. Its
step size is tuned for an energy error per dimension (``desired_energy_var``, §7.1), which
bounds the bias of a Gaussian's second moments. A scale parameter that sets the spread of
many other coordinates escapes that bound: on ``hier_500`` (``tau``) and on regressions of
90-140 coefficients under a dense metric (``log sigma``) one coordinate carried ``b2`` of
0.016-0.10 while the energy error per dimension was on target (``docs/benchmarks.md``).

The guard reads the leading term of the integrator's shadow density,
``exp(-U) (1 + c eps^2 (|grad U|^2 - 2 tr Hess U))`` in the whitened frame, which tilts the
expectation of any ``f`` by ``c eps^2 Cov(f, S)`` with ``S = |L^T g|^2 - 2 tr(L^T H L)``.
Measured against exact second moments (``benchmarks/esh_bias_predictor.py``), the standardized
bias of coordinate ``i`` is ``c eps^2 / d * Cov(f_i, S) / sd(f_i)`` with one constant ``c`` of
0.033-0.065 on every target where the bias stands above the noise, and the coordinate it
points to is the one that carries the bias.

Each phase-2 draw costs one more gradient, a small step ``h L w`` away from the draw; its
difference from the gradient at the draw (``g``, which the trajectory computed) gives
``w^T L^T H L w``, an unbiased estimate of the trace for a Rademacher ``w`` (exact for a
diagonal Hessian). ``w`` is the sign of the normal that the draw already has for a restart, so
the guard takes no random numbers of its own and the draws of both backends stay equal. Per
chain (the chains stay independent) it keeps sums of ``u, u^2, u^3, u^4, u S, u^2 S`` for the
standardized position ``u`` and of ``S, S^2``. At the end of warmup it predicts the
standardized bias of each coordinate's mean and variance, keeps the predictions that stand
clear of their noise, and shortens the step so that the largest meets the budget (the bias
goes as ``eps^2``).
"""

import math
from typing import Any, NamedTuple

from esh_kernels.core.backend import namespace
from esh_kernels.core.preconditioning import precond_adjoint, precond_forward

#: ``c`` in ``b_i = c eps^2 / d * t_i``: the largest of the values measured where the bias
#: stood above the noise (0.033-0.065; ``benchmarks/results/esh_bias_predictor.json``)
SHADOW_CONSTANT = 0.065
#: largest standardized bias ``|bias| / sd`` of a coordinate's mean or variance at the
#: default ``desired_energy_var``: ``b2 < 0.01``, the MCLMC papers' budget
BIAS_BUDGET = 0.1
#: the ``desired_energy_var`` that :data:`BIAS_BUDGET` belongs to (MCLMC's default, §7.1)
REFERENCE_ENERGY_VAR = 5e-4
#: draws per independent draw assumed for the noise of the covariances: ESH lengthens its
#: draws until the slowest statistic decorrelates in about 3 (``ESH_DECORRELATION_DRAWS``)
DRAWS_PER_EFFECTIVE = 3.0
#: fewer probed draws than this predict nothing
MIN_PROBES = 20


class BiasProbeState(NamedTuple):
    count: Any  # probed phase-2 draws
    ref: Any  # (d,) centre of ``u``: the first probed draw
    s_ref: Any  # centre of ``S``: the first probe's
    sum_s: Any
    sum_s2: Any
    sum_u: Any  # (d,) sums of powers of ``u = (x - ref) / sd`` and of their products with S
    sum_u2: Any
    sum_u3: Any
    sum_u4: Any
    sum_us: Any
    sum_u2s: Any
    predicted: Any  # largest significant standardized bias at the tuned step (0 until warmup ends)
    shrink: Any  # factor the guard applied to the step size (1: none)


def bias_probe_init(x):
    xp = namespace(x)
    zero = xp.sum(x * 0.0, axis=-1)
    vec = x * 0.0
    return BiasProbeState(zero, vec, zero, zero, zero, vec, vec, vec, vec, vec, vec, zero, zero + 1.0)


def bias_budget(desired_energy_var):
    """The standardized-bias budget that goes with ``desired_energy_var``: ``BIAS_BUDGET`` at
    MCLMC's default, scaled as the bias, ``eps^2``, scales with ``Var[dH] ∝ eps^6``."""
    return BIAS_BUDGET * (desired_energy_var / REFERENCE_ENERGY_VAR) ** (1.0 / 3.0)


def shadow_statistic(x, g, scale, value_and_grad, sign_source):
    """``S = |L^T g|^2 - 2 w^T L^T H L w`` at ``x``, whose gradient is ``g``
    (``w = sign(sign_source)``, a Rademacher vector when ``sign_source`` is standard normal),
    the Hessian term by a forward difference of the gradient over ``h L w``,
    ``h = eps_dtype^(1/4)`` in whitened units (1.2e-4 in float64, 1.8e-2 in float32): a
    truncation error of that relative order, far below the guard's Monte Carlo noise, while
    the difference magnifies the gradients' rounding by ``eps / h``. With ``eps^(1/3)`` (the
    most accurate single difference) the backends' statistics agreed to 3e-11-1.5e-10 only,
    and a change of XLA's fusion elsewhere in the jitted draw broke their 1e-10 agreement
    (``tests/test_pyro_cross_backend.py``); with ``eps^(1/4)``, 1e-12 (``esh_math.md``
    §7.8). One gradient evaluation."""
    xp = namespace(x)
    one = x * 0.0 + 1.0
    w = xp.where(sign_source >= 0.0, one, -one)
    lw = precond_forward(scale, w)
    h = float(xp.finfo(x.dtype).eps) ** 0.25
    _, g_h = value_and_grad(x + h * lw)
    lg = precond_adjoint(scale, g)
    return xp.sum(lg * lg, axis=-1) - 2.0 * xp.sum((g_h - g) * lw, axis=-1) / h


def bias_probe_update(state, x, s, sd, ok):
    """Add a probed draw ``x`` with statistic ``s`` (``ok``: the draw and ``s`` are finite and
    the draw did not diverge); ``sd`` is the metric's marginal scale of each coordinate."""
    xp = namespace(x)
    first = (state.count == 0) & ok
    ref = xp.where(first[..., None], x, state.ref)
    s_ref = xp.where(first, s, state.s_ref)
    zero = state.count * 0.0
    u = xp.where(ok[..., None], (x - ref) / sd, 0.0)
    ds = xp.where(ok, s - s_ref, 0.0)
    u2 = u * u
    ws = ds[..., None]
    return state._replace(
        count=state.count + xp.where(ok, zero + 1.0, zero), ref=ref, s_ref=s_ref,
        sum_s=state.sum_s + ds, sum_s2=state.sum_s2 + ds * ds,
        sum_u=state.sum_u + u, sum_u2=state.sum_u2 + u2, sum_u3=state.sum_u3 + u2 * u,
        sum_u4=state.sum_u4 + u2 * u2, sum_us=state.sum_us + u * ws, sum_u2s=state.sum_u2s + u2 * ws,
    )


def predicted_bias(state, step_size, d):
    """The largest standardized bias over the coordinates' means and variances that stands
    clear of its noise, at ``step_size``: ``c eps^2 / d * |Cov(f, S)| / sd(f)`` for
    ``f = u_i`` and ``(u_i - mean)^2``, counted where it exceeds ``k`` standard errors
    ``sd(S) / sqrt(n / DRAWS_PER_EFFECTIVE)``, ``k = sqrt(2 log(4 d))`` (about the largest of
    ``2d`` two-sided normal deviates). 0 with fewer than ``MIN_PROBES`` probes."""
    xp = namespace(state.sum_u)
    n = xp.maximum(state.count, state.count * 0.0 + 1.0)
    nv = n[..., None]
    m1 = state.sum_u / nv
    m2, m3, m4 = state.sum_u2 / nv, state.sum_u3 / nv, state.sum_u4 / nv
    mean_s = state.sum_s / n
    var_s = xp.maximum(state.sum_s2 / n - mean_s * mean_s, 0.0 * n)
    var_u = xp.maximum(m2 - m1 * m1, 0.0 * m2)
    cov_us = state.sum_us / nv - m1 * mean_s[..., None]
    cov_u2s = state.sum_u2s / nv - m2 * mean_s[..., None] - 2.0 * m1 * cov_us
    fourth = m4 - 4.0 * m1 * m3 + 6.0 * m1 * m1 * m2 - 3.0 * m1**4
    var_sq = xp.maximum(fourth - var_u * var_u, 0.0 * m2)
    tiny = 0.0 * m2 + 1e-30
    t_mean = xp.abs(cov_us) / xp.sqrt(xp.maximum(var_u, tiny))
    t_var = xp.abs(cov_u2s) / xp.sqrt(xp.maximum(var_sq, tiny))
    noise = xp.sqrt(var_s * DRAWS_PER_EFFECTIVE / n)[..., None]
    k = math.sqrt(2.0 * math.log(4.0 * d))
    none = 0.0 * m2
    t = xp.maximum(xp.where(t_mean > k * noise, t_mean, none), xp.where(t_var > k * noise, t_var, none))
    t = xp.where((var_u > 0) & (var_sq > 0), t, none)  # a coordinate that never moved says nothing
    largest = xp.amax(t, axis=-1)
    return xp.where(state.count >= MIN_PROBES, SHADOW_CONSTANT * step_size * step_size / d * largest, 0.0 * largest)


def guarded_step_size(state, step_size, d, desired_energy_var):
    """``(step, state)``: ``step_size`` shortened so that :func:`predicted_bias` meets
    :func:`bias_budget` (by ``sqrt(budget / predicted)``, the bias going as ``eps^2``), and
    the state with the prediction and the factor recorded."""
    xp = namespace(state.sum_u)
    predicted = predicted_bias(state, step_size, d)
    budget = bias_budget(desired_energy_var)
    floor = 0.0 * predicted + budget
    shrink = xp.where(predicted > budget, xp.sqrt(budget / xp.maximum(predicted, floor)), floor * 0.0 + 1.0)
    return step_size * shrink, state._replace(predicted=predicted, shrink=shrink)
