"""Warmup control shared by the kernels of both backends: Stan-style metric windows,
dual-averaging restarts, and the whole per-iteration adaptation update of ``ESH`` and
``AdjustedESH`` (``esh_math.md`` §7).

Written against :func:`esh_kernels.core.backend.namespace` like the rest of the core: the
iteration ``i`` may be a Python int (torch kernels) or a traced JAX integer (NumPyro
kernels, where these run inside ``lax.cond``). A PPL never tells a kernel that warmup
ended (``docs/api_notes.md`` §1.3, §2.1), so each kernel counts iterations itself.
"""

import functools
import math
from typing import Any, NamedTuple

from esh_kernels.core.adaptation import (
    AUTO_METRIC,
    auto_dense_min_draws,
    decorrelation_init,
    decorrelation_update,
    slowest_autocorrelation_time,
    dual_averaging_init,
    dual_averaging_update,
    has_correlations,
    window_gradient_variances,
    metric_covariance,
    position_autocorrelation_time,
    step_size_predictor_init,
    step_size_predictor_update,
    welford_init,
    welford_is_dense,
    welford_update,
    window_schedule,
)
from esh_kernels.core.backend import namespace
from esh_kernels.core.bias_guard import bias_probe_init, bias_probe_update, guarded_step_size
from esh_kernels.core.preconditioning import is_dense, precond_adjoint, scale_diagonal, scale_from_covariance
from esh_kernels.core import state_fields


def select(cond, a, b):
    """Elementwise ``a if cond else b`` for arrays or namedtuples of arrays; a Python
    ``bool`` condition picks without computing anything."""
    if isinstance(cond, bool):
        return a if cond else b
    if a is b:  # also static leaves such as ``sites`` (core/state_fields.SiteLayout) or None
        return a
    if isinstance(a, tuple):
        items = [select(cond, x, y) for x, y in zip(a, b)]
        return type(a)(*items) if hasattr(a, "_fields") else tuple(items)
    xp = namespace(cond, a, b)
    return xp.where(cond, a, b)


def select_lazy(cond, if_true, if_false):
    """:func:`select` of two zero-argument functions: a Python ``bool`` condition (Pyro,
    where the phase is known on the host) calls only the one it picks, so the eager
    per-draw work does not compute the other; a JAX scalar condition becomes
    ``lax.cond``, which runs one branch where the condition is the same for every chain
    (NumPyro's kernels pass the iteration unbatched) and both under a per-chain ``vmap``;
    any other array condition computes both."""
    if isinstance(cond, bool):
        return if_true() if cond else if_false()
    if namespace(cond).__name__ == "jax.numpy" and cond.ndim == 0:
        from jax import lax

        return lax.cond(cond, lambda _: if_true(), lambda _: if_false(), None)
    return select(cond, if_true(), if_false())


class MetricSchedule(NamedTuple):
    """The metric windows for ``num_warmup`` iterations (see ``window_schedule``).
    ``continued``: window ends after which the estimate goes on instead of restarting, so
    the metric is refit there and the next window's estimate reads both windows' draws."""

    window_ends: tuple
    start: int
    stop: int
    num_warmup: int
    continued: tuple = ()

    @classmethod
    @functools.lru_cache(maxsize=None)  # pure in its integers; called at every warmup iteration
    def build(cls, num_warmup, continue_last=False):
        """Stan's windows; with ``continue_last``, Stan's last window (stretched where its
        doubled successor would not fit) also ends where a window at least as long would
        follow it (``window_schedule``'s stretch 2), and its estimate continues from there:
        the metric is refit mid-window, and the last estimate still reads the whole
        stretched window (ESH's phase 1, ``ESHWarmupConfig.adjusted_config``, §7.5)."""
        ends, start, stop = window_schedule(num_warmup)
        continued = ()
        if continue_last:
            split = window_schedule(num_warmup, stretch=2.0)[0]
            continued = tuple(e for e in split if e not in ends)
            ends = sorted(set(ends) | set(continued))
        return cls(tuple(ends), start, stop, num_warmup, continued)

    def continues(self, i):
        """True at a window end whose estimate goes on (:attr:`continued`); a Python ``False``
        where there is none, so that no selection is made."""
        if isinstance(i, int) or not self.continued:
            return i in self.continued
        hit = i < 0
        for end in self.continued:
            hit = hit | (i == end)
        return hit

    def collecting(self, i):
        """True while iteration ``i`` feeds the metric estimate."""
        return (i >= self.start) & (i < self.stop)

    def weight(self, i):
        """:meth:`collecting` as a Welford weight: 1.0 / 0.0 (a float, or an array like ``i``)."""
        collecting = self.collecting(i)
        return (1.0 if collecting else 0.0) if isinstance(collecting, bool) else collecting * 1.0

    def measure_weight(self, i):
        """:meth:`weight` extended over the final fast buffer (``i >= stop``): the
        trajectory-length statistics (:func:`window_decorrelation`) also measure the chain
        under the last metric, which no window does. Zero over the first draws after each
        window end (:meth:`settling`), where the step size has just restarted."""
        if isinstance(i, int):
            return 1.0 if i >= self.start and not self.settling(i) else 0.0
        return ((i >= self.start) & ~self.settling(i)) * 1.0

    def settling(self, i):
        """True for the first :data:`RESTART_SETTLING_DRAWS` iterations after a window end
        that restarts dual averaging (at most a quarter of the iterations up to the next
        window end or the end of warmup). A restarted dual averaging first tries steps up
        to 10x the last one (:func:`dual_averaging_restart`), so those transitions are
        mostly rejected: the chain repeats its position, and the lag-1 statistics of
        :func:`window_decorrelation` read it as slow (AdjustedESH's lengths grew for
        it: ``esh_math.md`` §7.5)."""
        hit = False if isinstance(i, int) else i < 0
        bounds = list(self.window_ends) + [self.num_warmup - 1]
        for end, following in zip(bounds[:-1], bounds[1:]):
            if not self.restarts_step_size(end):
                continue
            k = min(RESTART_SETTLING_DRAWS, (following - end) // 4)
            hit = hit | ((i > end) & (i <= end + k))
        return hit

    def restarts_step_size(self, i):
        """Whether dual averaging restarts after a window that ends at iteration ``i``: not
        with fewer than :data:`MIN_ITERATIONS_AFTER_RESTART` warmup iterations left
        (:func:`finish_step_size`)."""
        return self.num_warmup - 1 - i >= MIN_ITERATIONS_AFTER_RESTART

    def window_end(self, i):
        """True at the last iteration of a metric window."""
        if isinstance(i, int):
            return i in self.window_ends
        hit = i < 0  # an all-False array like i
        for end in self.window_ends:
            hit = hit | (i == end)
        return hit

    def last_window_end(self, i):
        """True at the last iteration of the last metric window (its metric is sampling's)."""
        if not self.window_ends:
            return False if isinstance(i, int) else i < 0
        return i == self.window_ends[-1]

    def length_update(self, i):
        """True where a trajectory length is re-read from the random-walk rule (§7.5): at
        each window end, and at the last warmup iteration, over the final buffer (every
        window's ``tau`` was measured under the metric that window then replaces)."""
        return self.window_end(i) | (self.after_first_window(i) & (i == self.num_warmup - 1))

    def after_first_window(self, i):
        """True once the first metric window has ended (a preconditioner exists)."""
        if not self.window_ends:
            return i < 0 if not isinstance(i, int) else False
        return i >= self.window_ends[0]


def initial_scale(x, dense):
    """Identity preconditioner for vectors like ``x`` (``(d,)`` or a batch ``(..., d)``):
    ones, or identity matrices (made from ``ones_like``, so on ``x``'s device)."""
    xp = namespace(x)
    ones = xp.ones_like(x)
    if not dense:
        return ones
    return ones[..., :, None] * xp.diag(ones[(0,) * (ones.ndim - 1)])


def metric_update(schedule, i, welford, scale, x, mask=None, decorrelation=None, gradients=None,
                  grad=None, regularize=True):
    """Feed the draw ``x`` to the window estimate; at a window end replace the scale by
    the Cholesky factor (or square root) of the window's covariance (regularised, and
    diagonal while a dense window has too few draws: :func:`metric_covariance`, §7.4) and
    restart the estimate. ``mask``: block structure of a dense metric, or
    ``AUTO_METRIC`` (:func:`metric_covariance`), which reads the window's autocorrelation
    from ``decorrelation`` (the window's ``DecorrelationState``, if the kernel keeps one).
    Where the state keeps ``gradients`` (the window's estimate of the potential's gradient
    ``grad`` at the draws, :func:`gradients_init`) the metric also reads
    them: a diagonal layout takes nutpie's estimate in every window but warmup's last
    (``core.adaptation.window_gradient_variances``, §7.4), the automatic metric's dense
    layout the gradient-based estimate of §7.6.
    ``regularize=False``: the raw window estimates (NumPyro's ``regularize_mass_matrix``).
    Returns ``(welford, gradients, scale, window_ended)``."""
    welford = welford_update(welford, x, schedule.weight(i))
    # the state keeps ``gradients`` only where the metric reads them (:func:`reads_gradients`)
    with_gradients = gradients is not None and grad is not None
    if with_gradients:  # a dense layout keeps the draws beside their gradients (cross-covariance)
        joint = namespace(x).concatenate([x, grad], axis=-1) if welford_is_dense(gradients) else grad
        gradients = welford_update(gradients, joint, schedule.weight(i))
    ended = schedule.window_end(i)
    if ended is False:
        return welford, gradients, scale, ended
    dense = welford_is_dense(welford)

    def refit():  # the window's metric (eigenvalues, Cholesky): only where a window ends
        tau = was_dense = None
        if mask is AUTO_METRIC and decorrelation is not None:
            tau = position_autocorrelation_time(decorrelation)
            was_dense = has_correlations(scale) if dense else None
        last = schedule.last_window_end(i)
        cov = metric_covariance(welford, mask=mask, tau=tau, was_dense=was_dense,
                                gradients=gradients if with_gradients and dense else None,
                                regularize=regularize, last=last)
        if with_gradients and not dense:  # a diagonal layout: nutpie's estimate, except at the last window's end
            cov = select(last, cov, window_gradient_variances(welford, gradients, regularize))
        empty_gradients = welford_init(gradients.mean, dense=dense) if with_gradients else gradients
        # the estimate restarts, except past the ends it continues (``MetricSchedule.continued``)
        kept = select(schedule.continues(i), (welford, gradients), (welford_init(x, dense=dense), empty_gradients))
        return (*kept, scale_from_covariance(cov, dense=dense))

    welford, gradients, scale = select_lazy(ended, refit, lambda: (welford, gradients, scale))
    return welford, gradients, scale, ended


def dual_averaging_restart(step_size):
    """Dual averaging started at ``step_size``, shrinking towards ``10 * step_size``
    (NumPyro/Stan convention: early iterates explore larger steps)."""
    xp = namespace(step_size)
    log_step = xp.log(step_size)
    return dual_averaging_init(log_step, log_step + math.log(10.0))


def select_rows(cond, a, b):
    """``select`` whose array condition (one per chain) broadcasts over trailing axes."""
    if a is b:
        return a
    if isinstance(cond, bool) or not isinstance(a, tuple):
        if isinstance(cond, bool):
            return select(cond, a, b)
        xp = namespace(cond, a, b)
        c = cond.reshape(cond.shape + (1,) * (a.ndim - cond.ndim))
        return xp.where(c, a, b)
    return type(a)(*[select_rows(cond, x, y) for x, y in zip(a, b)])


#: collapse guard (``esh_math.md`` §7.3): once a metric has been estimated, a step size
#: below ``COLLAPSED_STEP`` in the whitened frame (where the target has unit scale and tuned
#: steps are 0.1-1) means the acceptance rate is limited by something other than the
#: integration error, and dual averaging restarts at ``RESTART_STEP``.
COLLAPSED_STEP = 1e-3
RESTART_STEP = 0.1
#: a metric window that ends with fewer warmup iterations left does not restart dual
#: averaging (``finish_step_size``): right after a restart its iterates explore steps up to
#: 10x larger (Stan's convention), and the averaged iterate of two of them was 7x the right
#: step (``AdjustedESH``, ``num_warmup=20``, whose Stan schedule ends its one window two
#: iterations before the end, on a 2-D Gaussian: every sampling draw rejected)
MIN_ITERATIONS_AFTER_RESTART = 5
#: the trajectory-length statistics leave out this many draws after each step-size restart
#: (:meth:`MetricSchedule.settling`)
RESTART_SETTLING_DRAWS = 10


#: :func:`steep_gradient`'s factor on a whitened typical set's gradient norm ``sqrt(d)``
STEEP_GRADIENT = 10.0


def whitened_gradient_norm(scale, grad):
    """``|L^T g|``, one per chain."""
    xp = namespace(grad)
    return xp.sqrt(xp.sum(precond_adjoint(scale, grad) ** 2, axis=-1))


def steep_gradient(scale, grad):
    """Whether the whitened gradient ``|L^T g|`` exceeds :data:`STEEP_GRADIENT` times
    ``sqrt(d)``, its size in a typical set the metric fits (for a Gaussian ``E|L^T g|^2 = d``).
    Far up a wall it is many orders larger; in a typical set under a metric that misses a
    correlation of 0.999 about 22 times ``sqrt(d)`` along the narrow direction."""
    return whitened_gradient_norm(scale, grad) > STEEP_GRADIENT * math.sqrt(grad.shape[-1])


def finish_step_size(schedule, i, step, dual, ended, config, collapse_guard=False, kick_scale=None):
    """Restart dual averaging after a new metric; at the last warmup iteration switch to
    the averaged iterate. With ``collapse_guard`` (TunedHMC), after the first metric
    window an averaged step below :data:`COLLAPSED_STEP` restarts dual averaging at
    :data:`RESTART_STEP`. The averaged iterate, not the current one: dual averaging's
    current step dips far below its average right after a restart, and on posteriordb's
    ``kilpisjarvi`` (right whitened step 0.005) such dips restarted two chains of four at
    0.1 late in warmup (steps 0.06 and 0.23 after warmup, R-hat 1.79). AdjustedESH runs without it: on posteriordb's ``kilpisjarvi``
    (posterior correlation above 0.999 under a diagonal metric) its right whitened step is
    0.004, a transient dip below 1e-3 restarted one chain at 0.1 late in warmup, and it
    sampled at 0.28 with every proposal rejected (R-hat 1.53).

    Why the guard: dual averaging assumes that a smaller step raises the acceptance rate.
    Where the potential is rough (float32 cancellation: NumPyro's ``test_binomial_stable``
    computes ``log C(n, k)`` from ``lgamma`` terms of 7e7, whose rounding leaves +-4 of
    noise in ``E``), any move off the current rounding plateau is rejected at the same rate
    whatever the step, so the step fell to 1e-7, the U-turn length ran at the cap (511
    gradients per draw) and the chain froze. Measured there (float32, 200 + 200, one
    chain): with the initial step search but without the guard the posterior mean of ``p``
    was 0.58-0.98 of the truth on seeds 1-4, frozen at 511 gradients per draw; with the
    guard 0.98-1.02 on seeds 0-8 (NumPyro's tolerance: 0.95-1.05), 1-10 gradients per
    draw. Float64 runs were right with or without it (seeds 0-5).

    ``kick_scale`` (the whitened gradient's norm ``|L^T g|`` at each chain's position)
    spares a chain whose small step is the gradient's doing: where one step's kick
    ``eps |L^T g|`` (the current step: the average lags a chain coming down a wall) is at
    least the momentum's unit scale, the step is resolving a steep potential. On a rounding
    plateau the kick of a collapsed step is far below it (``test_binomial_stable``: a step of
    1e-7 against a gradient of 1e6, though that chain sits in a far tail as steep as a wall:
    :func:`steep_gradient` alone cannot tell the two apart). Restarted at
    :data:`RESTART_STEP`, a chain still on a wall rejected every proposal for the rest of the
    run: posteriordb's ``arma11`` from a potential of 1e53 (gradient 5e55)."""
    if config.tune_step_size:
        restart = ended & schedule.restarts_step_size(i)
        dual = select(restart, dual_averaging_restart(step), dual)
        xp = namespace(dual.log_step_avg)
        step = select(i == config.num_warmup - 1, xp.exp(dual.log_step_avg), step)
        if collapse_guard and config.tune_metric:
            collapsed = (xp.exp(dual.log_step_avg) < COLLAPSED_STEP) & schedule.after_first_window(i)
            if kick_scale is not None:
                collapsed = collapsed & ~(step * kick_scale >= 1.0)
            restart = step * 0.0 + RESTART_STEP
            dual = select_rows(collapsed, dual_averaging_restart(restart), dual)
            step = xp.where(collapsed, restart, step)
    return step, dual


class StepSizeSearch(NamedTuple):
    """State of :func:`step_size_search_update` (one entry per chain)."""

    step: Any  # step size of the next trial
    best: Any  # largest acceptable step size tried so far (0: none)
    direction: Any  # +1: doubling, -1: halving, 0: before the first trial
    trials: Any  # number of trials so far
    done: Any  # bool


def step_size_search_init(step_size):
    """A search for a reasonable step size starting at ``step_size`` (array, one per chain)."""
    zero = step_size * 0.0
    return StepSizeSearch(step_size, zero, zero, zero, zero > 1.0)


def step_size_search_update(state, energy_error, max_trials=40):
    """One trial of the reasonable-step-size heuristic (Hoffman & Gelman 2014, Alg. 4; NumPyro's
    ``find_reasonable_step_size``), ``esh_math.md`` §7: ``energy_error`` is ``dH`` of ONE
    leapfrog step of size ``state.step`` from the initial point with a random momentum. A
    step is acceptable when ``exp(-dH) > 0.8`` (a non-finite ``dH`` is not). The first trial
    fixes the direction: double while acceptable, or halve until acceptable; the search ends
    at the first change, or after ``max_trials`` trials (``2^40 ~ 1e12``, so a flat or
    non-finite target cannot loop forever). :func:`step_size_search_result` is the largest
    acceptable step tried (the last one when none was)."""
    xp = namespace(state.step, energy_error)
    ok = -energy_error > math.log(0.8)  # False for NaN
    direction = xp.where(state.direction == 0.0, xp.where(ok, 1.0, -1.0), state.direction)
    best = xp.where(ok, state.step, state.best)
    trials = state.trials + 1.0
    done = xp.where(direction > 0.0, xp.logical_not(ok), ok) | (trials >= max_trials)
    step = xp.where(done, state.step, state.step * 2.0**direction)
    new = StepSizeSearch(step, best, direction, trials, done)
    return select(state.done, state, new)


def step_size_search_result(state):
    """The step size a finished :func:`step_size_search_update` search found."""
    return namespace(state.best).where(state.best > 0.0, state.best, state.step)


# ---------------------------------------------------------------------------------------
# AdjustedESH


#: ``AdjustedESH``'s default trajectory length, in units of ``sqrt(d)`` in the whitened
#: frame, with a diagonal and with a dense metric. Measured on the ESS of ``x`` and ``x^2``
#: (``docs/kernels/adjusted_esh.md``): 1 is best on the diagonal benchmark targets. A dense
#: estimate in high dimension leaves a few directions several times wider than the metric
#: says (a 500-draw window at d = 100 still has relative eigenvalues near 0.005), and short
#: trajectories do not cross them: on the 100-D rotated Gaussian of
#: ``tests/test_numpyro_dense.py`` factor 1 gave R-hat 1.24 and min ESS 12 from 1000 + 500
#: draws, factor 2 R-hat 1.003 and min ESS 2639 from 1000 + 1000. The automatic metric
#: (``dense_mass="auto"``) takes the diagonal factor: it goes dense only from ``5 d``
#: window draws per chain (§7.6), not from the ``2 d`` of ``dense_mass=True``; on the
#: logistic regression benchmark with a dense metric, factor 1 gave 135 and factor 2 104
#: (min ESS of ``x`` and ``x^2`` per 1000 gradients, seed 0).
TRAJECTORY_FACTOR = {"diagonal": 1.0, "dense": 2.0}


def default_trajectory_factor(factor, dense, metric_mask=None):
    """``factor`` if given, else :data:`TRAJECTORY_FACTOR` for the metric's kind: the dense
    factor only for a metric dense throughout, not for the automatic one (``metric_mask`` is
    ``AUTO_METRIC``), which takes the diagonal factor."""
    if factor is not None:
        return factor
    return TRAJECTORY_FACTOR["dense" if dense and metric_mask is not AUTO_METRIC else "diagonal"]


class AdjustedESHAdaptState(NamedTuple):
    step_size: Any
    trajectory_length: Any
    scale: Any  # preconditioner L (vector, or lower-triangular matrix if dense)
    dual: Any  # DualAveragingState
    welford: Any  # WelfordState of the current metric window
    decorrelation: Any  # DecorrelationState of the current metric window
    gradients: Any = None  # WelfordState of the window's gradients (dense layouts; §7.6)
    sites: Any = None  # NumPyro models: state_fields.SiteLayout (static), for the dict form

    # NumPyro's names (core/state_fields.py)
    inverse_mass_matrix = state_fields.inverse_mass_matrix
    mass_matrix_sqrt = state_fields.mass_matrix_sqrt
    mass_matrix_sqrt_inv = state_fields.mass_matrix_sqrt_inv
    __getitem__ = state_fields.field_lookup


class AdjustedWarmupConfig(NamedTuple):
    num_warmup: int
    target_accept_prob: float
    tune_step_size: bool
    tune_metric: bool
    tune_trajectory: bool
    trajectory_factor: float
    steps_before_metric: float = 4.0  # trajectory = this many steps until a metric exists
    metric_mask: Any = None  # block structure of a dense metric (``metric_covariance``)
    max_steps: int = 1024  # the kernel's cap on steps per transition
    regularize_metric: bool = True  # Stan's shrinkage of each window estimate (§7.4)
    continue_last: bool = False  # refit the metric within Stan's last window (``MetricSchedule.build``)

    def descends(self, i):
        """True in the descent phase: the warmup iterations before the first metric window
        (Stan's initial buffer), where ``core.metropolis.descent_accept`` applies."""
        return i < MetricSchedule.build(self.num_warmup).start


def reads_gradients(dense, mask):
    """Whether a metric layout keeps a window estimate of the gradients at the draws: a
    diagonal layout (their variances, §7.4) and the automatic metric (``mask`` is
    ``AUTO_METRIC``) on a dense layout (their covariance, §7.6), not a dense metric the user
    asked for. The warmup init functions decide with it (:func:`gradients_init`);
    :func:`metric_update` reads the decision back from the state (None: not kept)."""
    return not dense or mask is AUTO_METRIC


def gradients_init(x, dense, mask):
    """The window estimate of the gradients where the layout reads it (:func:`reads_gradients`),
    else None: for a diagonal layout their variances (the draws' are the window's own
    estimate; ``core.adaptation.window_gradient_variances``), for a dense one the covariance
    of the draws and their gradients side by side (``[x, g]``, ``2d`` long), whose
    cross-covariance also sets the window's bend (``core.adaptation.curved``)."""
    if not reads_gradients(dense, mask):
        return None
    if not dense:
        return welford_init(x)
    return welford_init(namespace(x).concatenate([x, x], axis=-1), dense=True)


def adjusted_warmup_init(x, step_size, trajectory_length, dense, scale=None, mask=None):
    """Initial tuning state: the metric ``scale`` (identity when None), dual averaging
    started at ``step_size``; ``mask`` is the metric's block structure
    (``metric_covariance``), which decides whether a window estimate of the gradients'
    covariance is kept (:func:`gradients_init`)."""
    return AdjustedESHAdaptState(
        step_size, trajectory_length, initial_scale(x, dense) if scale is None else scale,
        dual_averaging_restart(step_size), welford_init(x, dense=dense), decorrelation_init(x),
        gradients_init(x, dense, mask),
    )


def adjusted_warmup_update(adapt, i, x, accept_prob, config, grad=None):
    """One warmup iteration of ``AdjustedESH`` after a transition that ended at ``x`` (the
    potential's gradient there ``grad``) with Metropolis acceptance probability
    ``accept_prob``:

    * step size: dual averaging to ``target_accept_prob``, restarted at each metric window
      end, its averaged iterate used from the last warmup iteration on
      (:func:`finish_step_size`);
    * metric: Stan windows (:func:`metric_update`);
    * trajectory length: from the autocorrelation time of the slowest statistic over each
      metric window (:func:`_trajectory_update`).
    """
    schedule = MetricSchedule.build(config.num_warmup, config.continue_last)
    step, dual = adapt.step_size, adapt.dual
    if config.tune_step_size:
        dual = dual_averaging_update(dual, config.target_accept_prob - accept_prob)
        step = namespace(dual.log_step).exp(dual.log_step)
    welford, gradients, scale, ended = adapt.welford, adapt.gradients, adapt.scale, False
    if config.tune_metric:
        welford, gradients, scale, ended = metric_update(
            schedule, i, welford, scale, x, config.metric_mask, adapt.decorrelation, gradients, grad,
            config.regularize_metric)
    step, dual = finish_step_size(schedule, i, step, dual, ended, config)
    length, decorrelation = adapt.trajectory_length, adapt.decorrelation
    if config.tune_trajectory:
        length, decorrelation = _trajectory_update(schedule, i, x, step, length, decorrelation, config)
    return adapt._replace(step_size=step, trajectory_length=length, scale=scale, dual=dual,
                          welford=welford, decorrelation=decorrelation, gradients=gradients)


#: ``AdjustedESH`` lengthens its trajectories while the slowest statistic needs more
#: draws to decorrelate than allowed here: ``(x, (x - mean)^2)``
#: (``_trajectory_update``, §7.5). ``x`` gets 3, as MCLMC's and MAMS's length rules
#: allow it (2-2.5); ``x^2`` gets 10, because on a Gaussian its time rises again past the
#: typical-set length, so a lower allowance lengthens without end there. On the benchmark
#: Gaussians at the default length both read 2-3; on posteriordb's ``gp_pois_regr``
#: (a latent Gaussian process) ``x`` reads 4-6 per chain, its slowest coordinate 12-47, and
#: a fixed length of 2.8 times the default gave 2.9 times its ESS per gradient; on
#: ``kilpisjarvi`` (posterior correlation above 0.999 under a diagonal metric) both read
#: about 400.
ADJUSTED_DECORRELATION_DRAWS = (3.0, 10.0)


def _trajectory_update(schedule, i, x, step, length, decorrelation, config):
    """AdjustedESH's trajectory length (``esh_math.md`` §7.5). Until the first metric
    window ends: ``steps_before_metric`` steps (short, cheap trajectories while the chain
    is still converging; ``trajectory_factor * sqrt(d)`` with a fixed metric). At the first
    window end: ``L0 = trajectory_factor * sqrt(d)`` in the new whitened frame (the size of
    a whitened target's typical set; the default factor was measured on the ESS of ``x``
    and ``x^2``). At each later window end: ``L <- max(L0, L sqrt(tau))`` with ``tau`` the
    autocorrelation time of the slower of ``x`` and ``(x - mean)^2`` over the window, in
    units of the draws each is allowed (:data:`ADJUSTED_DECORRELATION_DRAWS`,
    :func:`slowest_autocorrelation_time`), at most ``max_steps`` steps of the current size,
    and at most ``ADJUSTED_MAX_LENGTHENING`` times the last length (the early windows'
    metrics, from 25-100 draws, leave even the 100-D ill-conditioned Gaussian
    random-walking: uncapped, its four chains' lengths reached 20-32 by the third window and
    were still 10-16 at the last, seed 0). The same update once more at the last warmup
    iteration, with ``tau`` over the final fast buffer, that one only shortening
    (:func:`lengthen_for_random_walk`): every window's ``tau`` was measured under the
    metric that window replaces, so without it a length grown while the metric was poor
    (``kilpisjarvi``: diagonal, then dense at the last window end) stayed grown under the
    good metric.

    A chain in the random-walk regime (a posterior long and narrow in the whitened frame:
    a strongly correlated regression under a diagonal metric, or a metric still far off)
    has ``tau ∝ L^-2``, and the square root brings ``tau`` to its allowance in one
    window; as the metric improves, ``tau`` falls and ``L`` shrinks back towards ``L0``.
    Never below ``L0``: on a Gaussian ``tau`` of ``x^2`` is not monotone in ``L`` (half a
    period leaves ``x`` antithetic and ``x^2`` where it was), and a fixed-point rule
    ``L <- L sqrt(c tau)`` without the floor ran away (measured on the 100-D
    ill-conditioned Gaussian: ``L`` grew from 10 to 20, and the min ESS of ``x`` and
    ``x^2`` per 1000 gradients fell from 167 to 69).
    """
    xp = namespace(step)
    d = x.shape[-1]
    decorrelation, tau = window_decorrelation(schedule, i, x, decorrelation, ADJUSTED_DECORRELATION_DRAWS)
    typical = step * 0.0 + config.trajectory_factor * math.sqrt(d)
    ended = schedule.window_end(i)
    grown = lengthen_for_random_walk(length, typical, tau, ADJUSTED_MAX_LENGTHENING, grow=ended)
    grown = xp.minimum(grown, xp.maximum(config.max_steps * step, typical))
    first = (i == schedule.window_ends[0]) if schedule.window_ends else False
    length = select(schedule.length_update(i), select(first, typical, grown), length)
    # before the first window end: short trajectories while a metric is being learnt, the
    # typical-set size where the metric is fixed
    early = config.steps_before_metric * step if config.tune_metric else typical
    length = select(schedule.after_first_window(i) | ended, length, early)
    return length, decorrelation


def window_decorrelation(schedule, i, x, decorrelation, allowed):
    """Feed the draw ``x`` of iteration ``i`` to the metric window's decorrelation estimate
    and read it: ``(decorrelation, tau)``, where ``tau`` is the window's
    :func:`slowest_autocorrelation_time` so far, relative to the ``allowed`` draws of ``x``
    and ``x^2``; the returned state restarts at each window end (``tau`` is then the
    finished window's). After the last window it measures the final fast buffer
    (:meth:`MetricSchedule.measure_weight`)."""
    decorrelation = decorrelation_update(decorrelation, x, schedule.measure_weight(i))
    tau = slowest_autocorrelation_time(decorrelation, allowed)
    return select(schedule.window_end(i), decorrelation_init(x), decorrelation), tau


#: AdjustedESH's length grows by at most this factor at a window end (§7.5): a window
#: measures ``tau`` under the metric it then replaces, and the early windows' metrics
#: (25-100 draws) leave even a Gaussian slow enough for ``x``'s allowance of 3 draws.
ADJUSTED_MAX_LENGTHENING = math.sqrt(2.0)


def lengthen_for_random_walk(length, floor, tau, max_factor=math.inf, grow=True):
    """``max(floor, length min(sqrt(tau), max_factor))``, with ``tau`` in units of the
    allowed draws, or ``length`` where ``tau`` is 0 (no estimate): the trajectory-length
    update of ``esh_math.md`` §7.5. Where ``grow`` is False (AdjustedESH's update over the
    final fast buffer, at the last warmup iteration) never longer: that buffer's draws
    follow the step size's restart (its first trials, about 10x the last step size, are
    rejected: ``dual_averaging_restart``), and its 50 draws are few: with allowances
    ``(3, 10)`` a two-way update lengthened one chain of four on the 100-D standard
    Gaussian (seed 0) from 10 to 11.5 there (``tau(x)`` read 4.0; 2.2 over the sampling
    draws). That was measured before the restart's settling draws were left out of ``tau``
    (:meth:`MetricSchedule.settling`); the rule was kept, not re-measured since."""
    xp = namespace(length, tau)
    one = tau * 0.0 + 1.0
    factor = xp.minimum(xp.sqrt(tau), max_factor * one)
    factor = select(grow, factor, xp.minimum(factor, one))
    return xp.where(tau > 0, xp.maximum(length * factor, length * 0.0 + floor), length)


# ---------------------------------------------------------------------------------------
# ESH
#
# ESH is unadjusted: its step size must be tuned for a small energy error, which during
# the transient from a poor initial point makes steps tiny and the descent slow (observed:
# a strongly correlated regression did not reach its typical set in 1000 warmup draws).
# So ESH warms up in two phases. Phase 1 (the first 3/4 of warmup) runs exact
# Metropolis-adjusted isokinetic transitions with the AdjustedESH tuning: they converge
# from afar, and their draws (unweighted samples of p) feed the metric windows. Phase 2
# runs ESH itself on the final metric to tune its step size by the energy-error predictor
# (§7.1), starting from the phase-1 step size, and the physical time per draw.


class ESHAdaptState(NamedTuple):
    step_size: Any  # ESH step size (follows the phase-1 step size until phase 2)
    trajectory_length: Any  # physical time per draw
    refresh_length: Any  # decoherence length of the velocity refresh (inf: none)
    adjusted: Any  # AdjustedESHAdaptState of phase 1; holds the preconditioner
    predictor: Any  # StepSizePredictorState
    log_time: Any  # log of the total physical time of the phase-2 steps
    step_count: Any  # number of those steps
    energy_sum: Any  # sum of the potential energy of the phase-2 draws
    draw_count: Any  # number of those draws
    decorrelation: Any  # DecorrelationState of the phase-2 draws
    bias: Any  # core.bias_guard.BiasProbeState of the phase-2 draws

    @property
    def scale(self):
        return self.adjusted.scale

    @property
    def inverse_mass_matrix(self):
        """The adapted ``M^{-1}`` (phase 1's, which phase 2 samples under; see
        :class:`AdjustedESHAdaptState`)."""
        return self.adjusted.inverse_mass_matrix

    @property
    def mass_matrix_sqrt(self):
        return self.adjusted.mass_matrix_sqrt

    @property
    def mass_matrix_sqrt_inv(self):
        return self.adjusted.mass_matrix_sqrt_inv

    __getitem__ = state_fields.field_lookup


class ESHWarmupConfig(NamedTuple):
    num_warmup: int
    desired_energy_var: float
    steps_per_draw: float
    tune_step_size: bool
    tune_metric: bool
    tune_trajectory: bool
    target_accept_prob: float  # phase 1
    trajectory_factor: float  # phase 1
    metric_mask: Any = None  # block structure of a dense metric (``metric_covariance``)
    max_steps: int = 1024  # the kernel's cap on steps per transition
    regularize_metric: bool = True  # Stan's shrinkage of each window estimate (§7.4)
    lengthen: bool = True  # lengthen the draws for slow statistics (False: ``num_steps`` given)
    continue_last: bool = False  # phase 1 refits within Stan's last window (``esh_refits_last_window``)

    @property
    def num_adjusted(self):
        """Warmup iterations of phase 1 (adjusted transitions)."""
        return int(round(0.75 * self.num_warmup))

    def adjusted_config(self):
        return AdjustedWarmupConfig(
            num_warmup=self.num_adjusted,
            target_accept_prob=self.target_accept_prob,
            tune_step_size=self.tune_step_size,
            tune_metric=self.tune_metric,
            tune_trajectory=True,
            trajectory_factor=self.trajectory_factor,
            metric_mask=self.metric_mask,
            max_steps=self.max_steps,
            regularize_metric=self.regularize_metric,
            continue_last=self.continue_last,
        )


@functools.lru_cache(maxsize=None)  # ``_warmup_config()`` is built several times per draw
def esh_refits_last_window(num_adjusted, dense, dim):
    """Whether ESH's phase 1 of ``num_adjusted`` iterations refits its metric within Stan's last
    window (``MetricSchedule.build``'s ``continue_last``, ``esh_math.md`` §7.5): not where a dense
    layout's refit could not be dense, its draws (200 at the default warmup) fewer than the
    :func:`core.adaptation.auto_dense_min_draws` a dense estimate needs. There the refit gave a
    diagonal metric between two that could be dense, and cost the collinear regressions of 91
    and 141 coefficients 7-8% of their ESS with warmup counted (``docs/benchmarks.md``)."""
    schedule = MetricSchedule.build(num_adjusted, continue_last=True)
    if not schedule.continued:
        return False
    k = schedule.window_ends.index(schedule.continued[0])
    first = schedule.window_ends[k - 1] + 1 if k else schedule.start
    return not (dense and schedule.continued[0] + 1 - first < auto_dense_min_draws(dim))


def esh_warmup_init(x, step_size, trajectory_length, refresh_length, dense, scale=None, mask=None):
    zero = step_size * 0.0
    return ESHAdaptState(
        step_size, trajectory_length, refresh_length,
        adjusted_warmup_init(x, step_size, 4.0 * step_size, dense, scale, mask),
        step_size_predictor_init(step_size), zero - float("inf"), zero, zero, zero,
        decorrelation_init(x), bias_probe_init(x),
    )


def esh_warmup_adjusted_update(adapt, i, x, accept_prob, config, grad=None):
    """Phase 1: AdjustedESH tuning after an adjusted transition to ``x`` (gradient ``grad``)."""
    adjusted = adjusted_warmup_update(adapt.adjusted, i, x, accept_prob, config.adjusted_config(), grad)
    step = adjusted.step_size if config.tune_step_size else adapt.step_size
    return adapt._replace(step_size=step, adjusted=adjusted)


#: ESH lengthens its draws until the slowest statistic decorrelates in about this many
#: draws, for ``x`` and ``(x - mean)^2`` (``esh_warmup_update``)
ESH_DECORRELATION_DRAWS = (3.0, 3.0)
#: ... by at most this factor. In low dimension the physical time of a step varies by
#: orders of magnitude with the energy (``e^r``, ``r = (E_ref - E)/d``), and a few phase-2
#: steps far in the tail can inflate the mean step time that converts the length into time:
#: on a 2-D Gaussian with correlation -0.98 one chain of four (mean phase-2 step time 5.4
#: against 0.19 in the others) was tuned to 631 time units and ran every sampling draw
#: into the 1024-step cap. 64 bounds that waste, and covers the lengthening the correlated
#: posteriors of ``esh_math.md`` §7.5 needed.
ESH_MAX_LENGTHENING = 64.0


def esh_warmup_update(adapt, i, energy_error_sq_per_dim, num_steps, log_time, diverging, config,
                      *, energy, draw, start_energy, shadow=None, non_finite=False):
    """Phase 2: after an ESH draw of ``num_steps`` steps with mean squared energy error per
    step and dimension ``energy_error_sq_per_dim`` and ``log_time`` the log of the total
    physical time its steps spanned (``non_finite``: the divergence, if any, reached a
    non-finite state):

    * step size: the energy-error predictor (§7.1; a non-finite divergence backs off
      without lowering its cap, see ``step_size_predictor_update``);
    * time per draw: ``steps_per_draw`` times the mean physical time of a step over the
      phase-2 draws whose mean squared energy error per dimension is below 100x the
      target (a step with a large error but no divergence would otherwise blow the mean
      up by ``e^(dH/d)``), fixed at the last warmup iteration; longer where the slowest of
      ``x`` and ``(x - mean)^2`` needed ``tau`` phase-2 draws (``draw``, the draw made) to
      decorrelate: at least the mean phase-2 draw time times
      ``tau``, in units of ``ESH_DECORRELATION_DRAWS`` (``esh_math.md`` §7.5), and at most
      ``ESH_MAX_LENGTHENING`` times the ``steps_per_draw`` time (without
      ``config.lengthen``, where the user gave ``num_steps``: that time exactly). Phase-2
      draws restart the clock at each draw, so that time is in units of ``e^r`` at typical
      energies; the mean draw ``energy`` is kept to start the sampling clock at the same reference
      (:func:`esh_sampling_log_speed`). The draw's time is converted to that reference
      before it is counted, ``log_time + (E_ref - E_start)/d`` with ``E_ref`` the mean so
      far and ``start_energy`` the draw's, as the sampling clock will run: otherwise a few
      draws that start far in the tail (whose clock, restarted at ``r = 0`` there, runs
      ``e^{(E_start - E)/d}`` fast at typical energies) dominate the mean step time in low
      dimension (2-D Gaussian with correlation -0.98: one chain's mean step time 5.4
      against 0.19 in the others, and every sampling draw ran into the step cap).
    * bias guard: ``shadow`` is the draw's ``S`` (:func:`core.bias_guard.shadow_statistic`;
      None where no probe ran, the step size not being tuned); at the last warmup iteration
      the tuned step is shortened where the predicted bias of
      some coordinate's mean or variance exceeds the budget (``esh_math.md`` §7.8). The time
      per draw stays: the shorter steps cover it in more steps.
    """
    step, predictor = adapt.step_size, adapt.predictor
    if config.tune_step_size:
        predictor, step = step_size_predictor_update(
            predictor, step, energy_error_sq_per_dim, diverging,
            desired_energy_var=config.desired_energy_var, non_finite=non_finite,
        )
    log_time = log_time + esh_sampling_log_speed(adapt, start_energy, draw.shape[-1])
    # Only draws whose energy error is near the target inform the time per draw: phase-2
    # draws restart the clock, so a single step with a large energy error dH (not a
    # divergence) inflates its physical time by e^(dH/d) and would dominate the mean.
    calm = energy_error_sq_per_dim < 100.0 * config.desired_energy_var
    kept = (not diverging) if isinstance(diverging, bool) else ~diverging
    good = calm & kept
    xp = namespace(adapt.log_time)
    log_time = xp.logaddexp(adapt.log_time, select(good, log_time, -float("inf")))
    step_count = adapt.step_count + select(good, num_steps * 1.0, 0.0)
    draw_count = adapt.draw_count + select(good, 1.0, 0.0)
    decorrelation = decorrelation_update(adapt.decorrelation, draw)
    last = i == config.num_warmup - 1
    bias = adapt.bias
    if shadow is not None:  # the probe ran (``core.esh_draw.probe_gradients``)
        probed = xp.isfinite(shadow) & xp.all(xp.isfinite(draw), axis=-1) & kept
        sd = scale_diagonal(adapt.scale, is_dense(adapt.scale, draw))
        bias = bias_probe_update(bias, draw, shadow, sd, probed)
        step, bias = select_lazy(
            last, lambda: guarded_step_size(bias, step, draw.shape[-1], config.desired_energy_var),
            lambda: (step, bias))
    length = adapt.trajectory_length
    if config.tune_trajectory:
        has = step_count > 0
        per_step = select(has, xp.exp(log_time - xp.log(xp.where(has, step_count, 1.0))), step)
        tuned = base = config.steps_per_draw * per_step
        if config.lengthen:
            per_draw = select(draw_count > 0,
                              xp.exp(log_time - xp.log(xp.where(draw_count > 0, draw_count, 1.0))), per_step)
            tau = slowest_autocorrelation_time(decorrelation, ESH_DECORRELATION_DRAWS)
            tuned = xp.minimum(xp.maximum(base, per_draw * tau), ESH_MAX_LENGTHENING * base)
        length = select(last, tuned, length)
    return adapt._replace(
        step_size=step, trajectory_length=length, predictor=predictor,
        log_time=log_time, step_count=step_count,
        energy_sum=adapt.energy_sum + select(good, energy, 0.0),
        draw_count=draw_count, decorrelation=decorrelation, bias=bias,
    )


def esh_sampling_log_speed(adapt, energy, d):
    """Log speed ``r`` to start a sampling draw with at potential ``energy``: ``(E_mean - E)/d``.

    On the energy shell ``E + d r = const`` this sets ``r = 0`` at the mean phase-2 draw
    energy, the reference in which the time per draw was tuned (§2.1: ``e^r ∝ p^{1/d}``).
    Anchoring on the last warmup point instead would scale the clock by
    ``e^{(E_last - E_mean)/d}``, a factor of several in 2-D. Applied at every sampling draw
    it also removes the energy error accumulated by the integrator, which a carried ``r``
    absorbs and which over a long run starves draws of steps (``esh_math.md`` §4.4: one
    factor per draw, depending on the accumulated error only, so it biases nothing).
    """
    xp = namespace(adapt.energy_sum)
    has = adapt.draw_count > 0
    mean = adapt.energy_sum / xp.where(has, adapt.draw_count, 1.0)
    return xp.where(has, (mean - energy) / d, 0.0 * energy)

