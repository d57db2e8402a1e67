"""Warmup control of ``TunedHMC``, backend-neutral (``esh_math.md`` §7-8).

The torch kernel (``esh_kernels/pyro/tuned_hmc.py``) runs these; they restate, on the
core primitives and with :func:`esh_kernels.core.warmup.select` in place of JAX control
flow, the adaptation of the NumPyro kernel (``esh_kernels/numpyro/tuned_hmc.py``), and
``tests/test_pyro_cross_backend.py`` checks the two against each other step by step. The
iteration ``i`` may be a Python int or a traced JAX integer; arrays may carry a leading
chain axis (the single-chain rule is elementwise over chains).

Two rules for the trajectory length ``T`` (the step size and mass matrix follow the same
pattern in both):

* single-chain: ``T = uturn_factor * (mean integration time to a U-turn)``, a forgetful
  running mean restarted with each new metric;
* cross-chain: ChEES over the ensemble (Adam on ``log T``, iterate average restarted with
  each new metric except the last), one shared step size (dual averaging on the mean
  acceptance) and one mass matrix pooled over the chains' draws.
"""

import math
from typing import Any, NamedTuple

from esh_kernels.core.adaptation import (
    AUTO_METRIC,
    decorrelation_init,
    chees_gradient,
    chees_init,
    chees_restart_average,
    chees_update,
    dual_averaging_update,
    forgetful_mean_update,
    metric_covariance,
    welford_init,
    welford_pool,
    welford_update,
)
from esh_kernels.core.backend import namespace
from esh_kernels.core.preconditioning import precond_inverse, scale_from_covariance
from esh_kernels.core import state_fields
from esh_kernels.core.warmup import (
    MetricSchedule,
    dual_averaging_restart,
    finish_step_size,
    gradients_init,
    initial_scale,
    metric_update,
    lengthen_for_random_walk,
    select,
    select_rows,
    whitened_gradient_norm,
    window_decorrelation,
)


class TunedHMCAdaptState(NamedTuple):
    step_size: Any
    trajectory_length: Any  # T: the longest jittered trajectory, n = ceil(h T / eps)
    scale: Any  # mass-matrix factor L, L L^T = M^{-1} (vector, or lower-triangular matrix)
    dual: Any  # DualAveragingState of log eps
    welford: Any  # WelfordState of the current metric window
    chees: Any  # ChEESState (cross-chain rule): Adam on log T and its iterate average
    uturn: Any  # WelfordState, mean shape (1,): running mean U-turn time (single-chain rule)
    decorrelation: Any  # DecorrelationState of the current metric window (single-chain rule)
    stretch: Any  # factor >= 1 on the U-turn length where the chain random-walks (single-chain rule)
    gradients: Any = None  # WelfordState of the window's gradients (dense layouts; §7.6)
    sites: Any = None  # NumPyro models: state_fields.SiteLayout (static), for the dict form

    # NumPyro's names (core/state_fields.py)
    inverse_mass_matrix = state_fields.inverse_mass_matrix
    mass_matrix_sqrt = state_fields.mass_matrix_sqrt
    mass_matrix_sqrt_inv = state_fields.mass_matrix_sqrt_inv
    __getitem__ = state_fields.field_lookup


class TunedWarmupConfig(NamedTuple):
    num_warmup: int
    target_accept_prob: float
    tune_step_size: bool
    tune_metric: bool
    tune_length: bool
    dense: bool
    max_steps: int
    learning_rate: float
    uturn_factor: float
    metric_mask: Any = None  # block structure of a dense metric (``metric_covariance``)
    regularize_metric: bool = True  # Stan's shrinkage of each window estimate (§7.4)


#: single-chain rule: ``T = UTURN_FACTOR * (mean time to a U-turn)``. In high dimension a
#: whitened Gaussian U-turns at ``pi`` (measured about half a step later). Re-measured
#: 2026-12-05 on the headline yardstick (min bulk ESS of ``x`` and ``x^2`` per 1000
#: gradients after warmup), 4 vectorized chains, 1000 + 1000, float64, target accept 0.8
#: (``docs/kernels/tuned_hmc.md``, "How the defaults were chosen"): 0.65 gains 24-34% on
#: the 100-D Gaussians and the logistic regression (``benchmarks/defaults_sweep.py``, medians
#: over 4 seeds), where ``x^2`` is the slowest statistic, but loses 15% on eight schools and
#: on 8 of the 10 posteriordb_dev posteriors that finish (4-31% on seven that pass;
#: ``one_comp`` R-hat 1.005 -> 1.089), where ``x`` is the slowest. Real posteriors decide:
#: 0.75 stays.
UTURN_FACTOR = 0.75

#: The U-turn length is stretched while the slowest statistic needs more draws than this to
#: decorrelate, for ``x`` and ``(x - mean)^2`` (§7.5): the random-walk regime only; the
#: U-turn time already sizes the trajectory to the whitened target.
UTURN_DECORRELATION_DRAWS = (10.0, 10.0)

#: trajectory length ``T`` (whitened frame) used when nothing tunes it (``num_warmup=0``):
#: a whitened standard Gaussian's half period, so the jittered lengths ``h T`` (mean
#: ``T/2``) stay below the first U-turn (``pi``), as the tuned ``T`` does (``esh_math.md``
#: §7.3).
UNTUNED_TRAJECTORY_LENGTH = 0.5 * math.pi


def initial_trajectory_length(step_size, config):
    """``T`` before any tuning: one step when warmup will tune it (the first U-turn or
    ChEES update replaces it), :data:`UNTUNED_TRAJECTORY_LENGTH` when nothing will
    (``num_warmup=0``), clipped to ``[step, max_steps * step]``."""
    if config.num_warmup > 0:
        return step_size
    return _clip_length(step_size * 0.0 + UNTUNED_TRAJECTORY_LENGTH, step_size, config)


def untuned_warning(num_warmup, step_size, trajectory_length, num_steps=None):
    """The ``UserWarning`` text for a run whose step size or trajectory length nobody tunes
    (``num_warmup=0`` without both given; ``num_steps`` gives the trajectory too), or None."""
    if num_steps is not None:
        trajectory_length = num_steps
    if num_warmup > 0 or (step_size is not None and trajectory_length is not None):
        return None
    untuned = []
    if step_size is None:
        untuned.append("the step size comes from a one-step search at the initial point")
    if trajectory_length is None:
        untuned.append("the trajectory length is pi/2")
    return (
        f"TunedHMC with num_warmup=0 tunes nothing: {', '.join(untuned)} and the mass matrix "
        "is the identity unless given, none of them adapted to the target. Run with "
        "num_warmup > 0, or pass step_size= and trajectory_length= (e.g. a tuned run's "
        "last_state.adapt_state values)."
    )


def tuned_warmup_init(x, step_size, trajectory_length, dense, scale=None, mask=None):
    """The metric ``scale`` (identity when None), dual averaging started at
    ``step_size``, ``T`` as given; ``mask``: as :func:`core.warmup.adjusted_warmup_init`."""
    ones_1 = x[..., :1] * 0.0
    scale = initial_scale(x, dense) if scale is None else scale
    return TunedHMCAdaptState(
        step_size, trajectory_length, scale, dual_averaging_restart(step_size),
        welford_init(x, dense=dense), chees_init(trajectory_length), welford_init(ones_1),
        decorrelation_init(x), step_size * 0.0 + 1.0, gradients_init(x, dense, mask),
    )


def _clip_length(length, step, config):
    xp = namespace(length, step)
    return xp.minimum(xp.maximum(length, step), config.max_steps * step)


def tuned_chain_update(adapt, i, x, accept_prob, uturn_time, config, grad=None):
    """Single-chain rule after a transition to ``x`` (the potential's gradient there
    ``grad``) with acceptance ``accept_prob`` and U-turn time ``uturn_time`` (0: none
    measured)."""
    schedule = MetricSchedule.build(config.num_warmup)
    xp = namespace(x)
    step, dual = adapt.step_size, adapt.dual
    if config.tune_step_size:
        dual = dual_averaging_update(dual, config.target_accept_prob - accept_prob)
        step = xp.exp(dual.log_step)
    welford, gradients, scale, ended = adapt.welford, adapt.gradients, adapt.scale, False
    if config.tune_metric:
        welford, gradients, scale, ended = metric_update(
            schedule, i, welford, scale, x, config.metric_mask, adapt.decorrelation, gradients, grad,
            config.regularize_metric)
    kick_scale = None if grad is None else whitened_gradient_norm(scale, grad)
    step, dual = finish_step_size(schedule, i, step, dual, ended, config, collapse_guard=True,
                                  kick_scale=kick_scale)
    length, uturn, stretch = adapt.trajectory_length, adapt.uturn, adapt.stretch
    # the slowest statistic's decorrelation over the metric window (the automatic metric
    # reads it at the window end, and the length below)
    decorrelation = adapt.decorrelation
    if config.tune_length or config.metric_mask is AUTO_METRIC:
        decorrelation, tau = window_decorrelation(schedule, i, x, decorrelation, UTURN_DECORRELATION_DRAWS)
    if config.tune_length:
        # running mean over about the last half of the iterations, restarted with each
        # new metric (U-turn times measured in the old whitened frame say little)
        measured = uturn_time > 0
        horizon = uturn_time * 0.0 + (1.0 + 0.5 * i)
        updated = forgetful_mean_update(uturn, uturn_time[..., None], horizon)
        uturn = select_rows(measured, updated, uturn)
        # lengthened where the slowest statistic random-walks, re-read over the final
        # buffer at the end of warmup (``esh_math.md`` §7.5)
        stretch = select(schedule.length_update(i), lengthen_for_random_walk(stretch, 1.0, tau), stretch)
        tuned = config.uturn_factor * uturn.mean[..., 0] * stretch
        length = xp.where(uturn.count > 0, tuned, length)
        length = _clip_length(length, step, config)
        uturn = uturn._replace(count=select(ended, 0.0 * uturn.count, uturn.count))
    return adapt._replace(step_size=step, trajectory_length=length, scale=scale, dual=dual, welford=welford,
                          uturn=uturn, decorrelation=decorrelation, stretch=stretch, gradients=gradients)


def tuned_cross_chain_update(shared, welford, i, x_start, x, x_proposal, velocity, duration,
                             accept_prob, valid, config):
    """Cross-chain rule. ``shared`` holds one set of tuning parameters (no chain axis;
    its ``welford`` is ignored), ``welford`` the chains' window estimates (chain axis
    first); the other arrays are the chains' transitions, chain axis first. Returns
    ``(shared, welford)``."""
    schedule = MetricSchedule.build(config.num_warmup)
    xp = namespace(x)
    step, dual = shared.step_size, shared.dual
    if config.tune_step_size:
        alpha = xp.where(valid, accept_prob, 0.0)
        dual = dual_averaging_update(dual, config.target_accept_prob - xp.mean(alpha))
        step = xp.exp(dual.log_step)
    scale, ended = shared.scale, False
    if config.tune_metric:
        # every chain feeds its own window estimate; at a window end they are pooled
        welford = welford_update(welford, x, schedule.weight(i))
        ended = schedule.window_end(i)
        if ended is not False:
            pooled = metric_covariance(welford_pool(welford), num_chains=welford.count.shape[0],
                                       mask=config.metric_mask, regularize=config.regularize_metric)
            scale = select(ended, scale_from_covariance(pooled, dense=config.dense), scale)
            welford = select(ended, welford_init(x, dense=config.dense), welford)
    step, dual = finish_step_size(schedule, i, step, dual, ended, config, collapse_guard=True)
    length, chees = shared.trajectory_length, shared.chees
    if config.tune_length:
        white = whitener(shared.scale, config.dense)
        g = chees_gradient(white(x_start), white(x_proposal), velocity, duration, accept_prob, valid)
        chees = chees_update(chees, g, config.learning_rate)
        # restart the iterate average with each new metric, except after the last window:
        # T then averages the last slow window and the final buffer
        if len(schedule.window_ends) and ended is not False:
            restart = ended & (i != schedule.window_ends[-1])
            if isinstance(restart, bool):  # Python int i: an array flag like avg_count
                restart = (chees.avg_count * 0.0 + (1.0 if restart else 0.0)) > 0.5
            chees = chees_restart_average(chees, restart)
        length = _clip_length(xp.exp(chees.log_length_avg), step, config)
    return shared._replace(step_size=step, trajectory_length=length, scale=scale, dual=dual,
                           chees=chees), welford


#: the single-chain rule follows one warmup trajectory in this many to its U-turn
#: (``esh_math.md`` §7.3)
UTURN_TRACKING_EVERY = 4


def tracks_uturn(i):
    """True on the warmup iterations whose trajectory the single-chain rule follows to its
    U-turn: one in :data:`UTURN_TRACKING_EVERY`.

    Following a trajectory past its proposal to the U-turn costs about as many gradients
    again as the proposal; doing it every iteration made per-chain warmup the dominant cost
    (100-D Gaussian with scales ``logspace(-2, 0)``: 3.4e4 warmup gradients per chain,
    against 2.9e3 for the cross-chain rule). U-turn times vary little from trajectory to
    trajectory (within 5% across chains at d = 100), so a quarter of them set ``T`` as well.
    """
    return i % UTURN_TRACKING_EVERY == 0


def whitener(scale, dense):
    """``v -> L^{-1} v`` for vectors ``(..., d)`` (one ``L`` for all of them)."""
    if dense:
        inv = namespace(scale).linalg.inv(scale)
        return lambda v: v @ inv.T
    return lambda v: precond_inverse(scale, v)
