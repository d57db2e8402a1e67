"""The energy-function samplers (``esh_kernels.jax`` / ``.torch``), written once.

This module imports neither JAX nor torch. It holds

* the result containers returned by both backends (:class:`SampleResult`,
  :class:`JarzynskiResult`, :class:`Diagnostics`) and the functions that fill them,
* argument checks shared by both backends,
* the loop body, written once on top of the other :mod:`esh_kernels.core` modules
  (array-API style, so it runs unchanged on ``jax.numpy`` and ``torch`` arrays and the two
  backends agree to rounding): :func:`energy_step` is one ESH leapfrog step with box
  reflection and the exact half-step physical-time accounting, the reservoir offers and
  the partial velocity refresh; then the Jarzynski log weights and the log Z estimate.

The backend modules keep only what differs: the gradient (``jax.value_and_grad`` or
``torch.autograd``), the random draws, and the loop (``lax.scan`` or a Python loop).
Arrays passed to the step functions are flattened to ``(batch, d)``; the backend modules
reshape to and from the user's ``(batch, *event_shape)``.

Notation (``docs/esh_math.md``): ``E`` is the (scaled) energy, ``d`` the number of
elements per chain, ``u`` the unit velocity, ``r`` the log speed. The ESH dynamics use the
denominator ``D = d``; each scaled-time point is weighted by the physical time it spans.
"""

import math
import numbers
from typing import Any, NamedTuple

from esh_kernels.core import checks
from esh_kernels.core.backend import namespace
from esh_kernels.core.dynamics import kinetic_energy_change
from esh_kernels.core.integrators import IntegratorState, esh_leapfrog
from esh_kernels.core.reservoir import reservoir_take
from esh_kernels.core.sphere import partial_refresh, refresh_noise_scale

__all__ = [
    "Diagnostics",
    "SampleResult",
    "JarzynskiResult",
    "energy_step",
    "esh_step",
    "reflect",
    "reservoir_offer",
    "refresh_velocity",
    "step_diagnostics",
    "point_log_weights",
    "jarzynski_log_weights",
    "log_z_estimate",
    "standard_normal_log_prob",
    "default_base_log_prob",
    "reshaped_state",
    "sample_result",
    "jarzynski_result",
]

_NEG_INF = -float("inf")


# ---------------------------------------------------------------------------------------
# Result containers (NamedTuples, so they are JAX pytrees; absent fields are ``None``)


class Diagnostics(NamedTuple):
    """Per-step diagnostics, each of shape ``(n_steps, batch)``.

    ``energy``: the (scaled) energy ``energy_scale * E(x_n)`` after step n.
    ``kinetic``: the kinetic term ``d * r_n`` (``r_0 = 0``).
    ``energy_error``: the Hamiltonian error ``H_n - H_0`` with ``H = E + d r`` (exactly
    conserved by the continuous dynamics; its size measures the discretisation error).
    """

    energy: Any
    kinetic: Any
    energy_error: Any


class SampleResult(NamedTuple):
    """Output of ``sample``.

    Attributes:
      state: final :class:`~esh_kernels.core.IntegratorState` ``(x, u, r, energy, grad)``;
        ``x``, ``u`` and ``grad`` have the shape of ``x0``, ``r`` and ``energy`` are
        ``(batch,)``. ``energy`` and ``grad`` include ``energy_scale``. Pass ``u0=state.u``
        and ``x0=state.x`` to continue the chains.
      samples: one ergodic draw per chain, shape of ``x0``: a point of the trajectory picked
        with probability proportional to the physical time spent there (weighted
        reservoir sampling, paper Alg. 3, O(batch) memory).
      sample_energy: scaled energy of each draw, ``(batch,)``.
      log_total_time: log of the physical time each chain covered, ``(batch,)``.
      diverged: ``(batch,)`` bool, True where a step produced a non-finite energy,
        gradient or speed; such a chain stays at its last finite state.
      trajectory: ``(n_steps + 1, batch, *event_shape)`` with ``x0`` first, or ``None``.
      log_time_weights: ``(n_steps + 1, batch)``: log physical time spent at each
        trajectory point (the second half of the step that reached it plus the first
        half of the step that leaves it), or ``None``. ``softmax`` over axis 0 gives the
        ergodic weights of the trajectory points.
      log_times: ``(n_steps + 1, batch)``: log of the physical time elapsed when each
        trajectory point is reached (``-inf`` for ``x0``), or ``None``.
      diagnostics: :class:`Diagnostics` or ``None``.
    """

    state: Any
    samples: Any
    sample_energy: Any
    log_total_time: Any
    diverged: Any
    trajectory: Any = None
    log_time_weights: Any = None
    log_times: Any = None
    diagnostics: Any = None


class JarzynskiResult(NamedTuple):
    """Output of ``jarzynski``.

    Attributes:
      samples: final positions ``x_T`` (shape of ``x0``): importance samples of
        ``p ∝ exp(-energy_scale * E)`` with log weights ``log_weights``.
      log_weights: ``(batch,)`` unnormalised log importance weights with
        ``mean(exp(log_weights)) ≈ Z`` (esh_math.md §5, exact-volume form).
      log_z: estimate of ``log Z = log ∫ exp(-energy_scale * E(x)) dx`` (logmeanexp of the
        weights).
      log_z_se: its standard error (delta method on the mean of the weights).
      ess: Kish effective sample size ``(Σ w)² / Σ w²`` (between 1 and batch).
      state: final :class:`~esh_kernels.core.IntegratorState` (``r`` here is
        ``r_T - r_0``, since ``r_0 = 0``).
      diverged: ``(batch,)`` bool; a diverged particle gets ``log_weight = -inf``.
      trajectory: ``(n_steps + 1, batch, *event_shape)`` or ``None``.
      diagnostics: :class:`Diagnostics` or ``None``.
    """

    samples: Any
    log_weights: Any
    log_z: Any
    log_z_se: Any
    ess: Any
    state: Any
    diverged: Any
    trajectory: Any = None
    diagnostics: Any = None


# ---------------------------------------------------------------------------------------
# Argument checks (plain Python; traced values are let through unchecked)


def _is_concrete_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_event_size(shape):
    """Return ``(batch, d)`` for an ``x0`` of shape ``(batch, *event)``; ``d >= 2``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(
            f"x0 must have shape (batch, ...) with at least one event axis, got shape {shape}; "
            "for a single chain of a d-dimensional energy pass x0[None]."
        )
    batch = shape[0]
    d = math.prod(shape[1:])
    if batch < 1:
        raise ValueError(f"x0 has an empty batch axis (shape {shape}).")
    if d < 2:
        raise ValueError(
            f"ESH dynamics need at least 2 elements per chain, got d = {d} (shape {shape}): "
            "in 1-D the unit velocity is ±1 and can never change sign, so the dynamics are "
            "singular. Use Langevin or HMC for one-dimensional energies."
        )
    return batch, d


def check_n_steps(n_steps):
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}.")
    return int(n_steps)


def check_positive(name, value):
    """:func:`esh_kernels.core.checks.check_positive` on Python numbers; arrays (traced or
    per-chain) pass unchecked."""
    if _is_concrete_number(value):
        checks.check_positive(name, value, allow_none=False)


def check_refresh_rate(value):
    """Return ``True`` when the refresh is (or may be) on: a traced rate counts as on."""
    if _is_concrete_number(value):
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"refresh_rate must be a finite number >= 0, got {value!r}.")
        return value > 0
    return True


def check_bounds(bounds):
    """``None`` or a pair of floats ``(low, high)`` with ``low < high``; ``True`` means the
    paper's box ``[-1, 1]``."""
    if bounds is None or bounds is False:
        return None
    if bounds is True:
        return (-1.0, 1.0)
    try:
        low, high = bounds
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        raise ValueError(
            f"bounds must be None, True (the box [-1, 1]) or a pair of numbers (low, high), "
            f"got {bounds!r}."
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"bounds must satisfy -inf < low < high < inf, got {bounds!r}.")
    return (low, high)


def check_inside_bounds(all_inside, bounds):
    """Raise if ``x0`` is outside the box (``all_inside`` is a Python bool)."""
    if not all_inside:
        raise ValueError(
            f"x0 must lie inside bounds {bounds}: the reflection keeps chains in the box but "
            "cannot start them outside it (clip or fold x0 into the box first)."
        )


def check_fraction(name, value):
    if not _is_concrete_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
    return float(value)


def check_run_args(n_steps, step_size, energy_scale, bounds, refresh_rate=0.0):
    """The checks of every run (``sample``, ``jarzynski``, the replay buffer); returns
    ``(n_steps, bounds, refresh)``: ``n_steps`` as an int, ``bounds`` as ``(low, high)`` or
    ``None``, and whether the velocity refresh is on."""
    n_steps = check_n_steps(n_steps)
    check_positive("step_size", step_size)
    check_positive("energy_scale", energy_scale)
    return n_steps, check_bounds(bounds), check_refresh_rate(refresh_rate)


class ReplaySettings(NamedTuple):
    """A ``ReplayBuffer``'s settings (its constructor's arguments, checked), kept as its
    ``settings`` attribute."""

    reinit_fraction: float
    noise_fn: Any
    step_size: Any
    energy_scale: Any
    bounds: Any
    refresh_rate: Any
    use_reservoir: bool


def replay_settings(reinit_fraction, noise_fn, step_size, energy_scale, bounds, refresh_rate,
                    use_reservoir):
    """Check a ``ReplayBuffer``'s arguments and return its :class:`ReplaySettings`."""
    _, bounds, _ = check_run_args(1, step_size, energy_scale, bounds, refresh_rate)
    return ReplaySettings(check_fraction("reinit_fraction", reinit_fraction), noise_fn,
                          step_size, energy_scale, bounds, refresh_rate, bool(use_reservoir))


def check_energy_shape(energy_shape, batch):
    if tuple(energy_shape) != (batch,):
        raise ValueError(
            f"energy_fn must return one energy per chain, shape ({batch},), got shape "
            f"{tuple(energy_shape)}. Sum over the event axes inside energy_fn."
        )


def check_random_input(name, shape, expected):
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(shape)}.")


def check_random_shapes(x_shape, n_steps, u0=None, uniforms=None, normals=None):
    """The shapes of the pre-drawn random inputs (``None`` where not given): ``u0`` like
    ``x0``, ``uniforms`` ``(n_steps, 2, batch)``, ``normals`` ``(n_steps, *x0.shape)``."""
    expected = {"u0": tuple(x_shape), "uniforms": (n_steps, 2, x_shape[0]),
                "normals": (n_steps,) + tuple(x_shape)}
    for name, shape in (("u0", u0), ("uniforms", uniforms), ("normals", normals)):
        if shape is not None:
            check_random_input(name, shape, expected[name])


# ---------------------------------------------------------------------------------------
# One ESH step (esh_math.md §3.4) with reflection and half-step physical times (§3.5)


def reflect(x, u, low, high):
    """Fold positions back into the box ``[low, high]`` by mirror reflection and flip the
    velocity component of every coordinate that crossed a wall an odd number of times
    ("billiards", Neal 2011 §5.5.1.5; the ESH code's ``constraint=True``).

    Exact for any number of crossings: with ``W = high - low`` and
    ``k = floor((x - low)/W)``, ``x`` maps to ``low + y`` (``k`` even) or ``high - y``
    (``k`` odd), ``y = x - low - k W``. The map is volume-preserving on (x, u), so the
    Jarzynski weights stay exact.
    """
    xp = namespace(x, u)
    width = high - low
    k = xp.floor((x - low) / width)
    y = (x - low) - k * width
    odd = (k - 2.0 * xp.floor(0.5 * k)) > 0.5
    inside = k == 0
    x_new = xp.where(inside, x, xp.where(odd, high - y, low + y))
    return x_new, xp.where(odd, -u, u)


def esh_step(state, step_size, value_and_grad, d, bounds=None):
    """One scaled-time ESH leapfrog step (``D = d``), reflecting at ``bounds``.

    Returns ``(new_state, log_dt_old, log_dt_new, ok)``:

    * ``log_dt_old``: log physical time of the first u,r half-step, spent at the old
      position ``state.x``;
    * ``log_dt_new``: log physical time of the second half-step, spent at the new
      position ``new_state.x`` (both from :func:`esh_kernels.core.ur_half_step`);
    * ``ok``: ``(batch,)`` bool, False where the new energy, gradient or speed is not
      finite. There the old state is kept and both times are ``-inf``.

    """
    xp = namespace(state.x)
    x, u, r, energy, grad = state
    wall = None if bounds is None else (lambda x_, u_: reflect(x_, u_, bounds[0], bounds[1]))
    new, _, (log_dt_old, log_dt_new) = esh_leapfrog(
        state, step_size, value_and_grad, d, with_time=True, position_map=wall
    )
    x1, u2, r2, energy1, grad1 = new
    ok = (
        xp.isfinite(energy1)
        & xp.isfinite(r2)
        & xp.isfinite(log_dt_new)
        & xp.all(xp.isfinite(grad1), axis=-1)
        & xp.all(xp.isfinite(u2), axis=-1)
    )
    okv = ok[..., None]
    new_state = IntegratorState(
        xp.where(okv, x1, x),
        xp.where(okv, u2, u),
        xp.where(ok, r2, r),
        xp.where(ok, energy1, energy),
        xp.where(okv, grad1, grad),
    )
    return (
        new_state,
        xp.where(ok, log_dt_old, _NEG_INF),
        xp.where(ok, log_dt_new, _NEG_INF),
        ok,
    )


def refresh_velocity(u, z, step_size, refresh_rate, d):
    """Partial refresh of the direction after a step of scaled length ``step_size``:
    ``u <- (u + nu z)/|u + nu z|`` with ``nu = sqrt((exp(2 eps rate) - 1)/d)``, so the
    direction decorrelates at ``refresh_rate`` per unit of scaled time (esh_math.md §6.3;
    leaves the uniform law of u invariant). ``z`` is standard normal, ``(batch, d)``."""
    nu = refresh_noise_scale(step_size * refresh_rate, 1.0, d)
    if isinstance(nu, numbers.Real):  # Python inputs give a numpy scalar; keep it neutral
        nu = float(nu)
    return partial_refresh(u, z, nu)


def reservoir_offer(reservoir, x, energy, log_weight, log_uniform):
    """Offer ``(x, energy)`` with weight ``exp(log_weight)`` (per chain) to the one-item
    reservoirs ``(x_kept, energy_kept, log_total)`` (paper Alg. 3, via
    :func:`esh_kernels.core.reservoir_take`)."""
    xp = namespace(x)
    x_kept, energy_kept, log_total = reservoir
    log_total, take = reservoir_take(log_total, log_weight, log_uniform)
    return (
        xp.where(take[..., None], x, x_kept),
        xp.where(take, energy, energy_kept),
        log_total,
    )


def energy_step(state, reservoir, step_size, value_and_grad, d, bounds, log_u, z,
                refresh_rate):
    """One iteration of the loop of ``sample`` / ``jarzynski`` (both backends).

    An ESH step (:func:`esh_step`), then, when ``log_u`` (``(2, batch)`` log uniforms) is
    given, the old and the new point offered to the reservoir with the physical time of
    their half-steps (paper Alg. 3), and, when ``z`` (``(batch, d)`` standard normals) is
    given, the partial refresh of the new direction (:func:`refresh_velocity`). ``None``
    turns the reservoir or the refresh off.

    Returns ``(new_state, reservoir, ok, (log_dt_old, log_dt_new))``.
    """
    new, log_dt_old, log_dt_new, ok = esh_step(state, step_size, value_and_grad, d, bounds)
    if log_u is not None:
        reservoir = reservoir_offer(reservoir, state.x, state.energy, log_dt_old, log_u[0])
        reservoir = reservoir_offer(reservoir, new.x, new.energy, log_dt_new, log_u[1])
    if z is not None:
        new = new._replace(u=refresh_velocity(new.u, z, step_size, refresh_rate, d))
    return new, reservoir, ok, (log_dt_old, log_dt_new)


def step_diagnostics(state, energy0, d):
    """``(energy, kinetic, energy_error)`` after a step, with ``r_0 = 0`` and ``H = E + d r``."""
    kinetic = kinetic_energy_change(state.r, d)
    return state.energy, kinetic, (state.energy - energy0) + kinetic


def point_log_weights(xp, log_dt_old, log_dt_new, concatenate):
    """Log physical time spent at each of the ``n + 1`` trajectory points from the per-step
    half-step times ``(n, batch)``: point 0 gets the first half of step 1, point ``k`` the
    second half of step ``k`` plus the first half of step ``k + 1``, point ``n`` the second
    half of step ``n``."""
    middle = xp.logaddexp(log_dt_new[:-1], log_dt_old[1:])
    return concatenate([log_dt_old[:1], middle, log_dt_new[-1:]])


# ---------------------------------------------------------------------------------------
# Jarzynski / normalising-flow estimator (esh_math.md §5)


def standard_normal_log_prob(x_flat):
    """``log N(x; 0, I)`` per chain for ``x`` of shape ``(batch, d)``."""
    xp = namespace(x_flat)
    d = x_flat.shape[-1]
    return -0.5 * xp.sum(x_flat * x_flat, axis=-1) - 0.5 * d * math.log(2.0 * math.pi)


def jarzynski_log_weights(base_log_prob, final_energy, delta_r, d):
    """Exact-volume log weights ``log w = -log q0(x0) - E(x_T) - (d-1)(r_T - r_0)``.

    With ``log q0(x0) = -E0(x0) - log Z0`` this is the ``E0(x0) - E(x_T) - (d-1)(r_T - r_0)
    + log Z0`` of esh_math.md §5: the scaled-time leapfrog has
    ``log|det J| = -(d-1)(r_T - r_0)`` exactly (each u,r sub-flow has divergence
    ``-(d-1) dr/dtau``; the position step and the reflection preserve volume), so
    ``E_q0[w] = Z`` for any step size and ``logmeanexp(log w)`` estimates ``log Z``.
    """
    return -base_log_prob - final_energy - kinetic_energy_change(delta_r, d - 1)


def log_z_estimate(log_weights):
    """``(log_z, log_z_se, ess)`` from a vector of log importance weights.

    ``log_z = log mean(w)``; ``log_z_se = sd(w) / (sqrt(n) mean(w))`` (delta method:
    ``Var[log m] ≈ Var[m]/m²``, with the sample standard deviation, ddof = 1); ``ess`` is
    Kish's ``(Σ w)² / Σ w²``. Computed stably in log space; ``-inf`` weights count as 0.
    Works on numpy, JAX and torch vectors.
    """
    xp = namespace(log_weights)
    n = log_weights.shape[0]
    finite = xp.isfinite(log_weights)
    shift = xp.max(xp.where(finite, log_weights, _NEG_INF))
    shift = xp.where(xp.isfinite(shift), shift, 0.0)
    w = xp.where(finite, xp.exp(log_weights - shift), 0.0)
    total = xp.sum(w)
    mean = total / n
    var = xp.sum((w - mean) ** 2) / max(n - 1, 1)
    log_z = xp.log(mean) + shift
    log_z_se = xp.sqrt(var / n) / mean
    ess = total * total / xp.sum(w * w)
    return log_z, log_z_se, ess


def default_base_log_prob(x_flat, bounds):
    """``log q0`` of ``jarzynski``'s default base at ``x_flat`` ``(batch, d)``: the standard
    normal, or the uniform law on the box ``bounds``."""
    if bounds is None:
        return standard_normal_log_prob(x_flat)
    low, high = bounds
    xp = namespace(x_flat)
    return xp.zeros_like(x_flat[..., 0]) - x_flat.shape[-1] * math.log(high - low)


# ---------------------------------------------------------------------------------------
# The results, filled the same way by both backends


def reshaped_state(state, shape):
    """The loop's flat ``(batch, d)`` state with ``x``, ``u`` and ``grad`` in ``shape``."""
    return IntegratorState(state.x.reshape(shape), state.u.reshape(shape), state.r,
                           state.energy, state.grad.reshape(shape))


def sample_result(final, reservoir, diverged, extra):
    """:class:`SampleResult` from the final state (user's shape), the reservoir and the
    optional ``extra`` outputs (``trajectory``, ``log_time_weights``, ``log_times``,
    ``diagnostics``)."""
    x_kept, energy_kept, log_total = reservoir
    return SampleResult(
        state=final,
        samples=x_kept.reshape(final.x.shape),
        sample_energy=energy_kept,
        log_total_time=log_total,
        diverged=diverged,
        trajectory=extra.get("trajectory"),
        log_time_weights=extra.get("log_time_weights"),
        log_times=extra.get("log_times"),
        diagnostics=extra.get("diagnostics"),
    )


def jarzynski_result(final, diverged, extra, base_log_prob):
    """:class:`JarzynskiResult`: the exact-volume log weights (:func:`jarzynski_log_weights`;
    ``-inf`` for a diverged particle) and the log Z estimate (:func:`log_z_estimate`)."""
    xp = namespace(final.energy)
    d = math.prod(final.x.shape[1:])
    log_w = jarzynski_log_weights(base_log_prob, final.energy, final.r, d)
    log_w = xp.where(diverged, _NEG_INF, log_w)
    log_z, log_z_se, ess = log_z_estimate(log_w)
    return JarzynskiResult(
        samples=final.x, log_weights=log_w, log_z=log_z, log_z_se=log_z_se, ess=ess,
        state=final, diverged=diverged, trajectory=extra.get("trajectory"),
        diagnostics=extra.get("diagnostics"),
    )
