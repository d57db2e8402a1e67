"""Ensemble formulas: hyperparameters and a bias estimate read off many chains at once
(``esh_math.md`` §7.7; the ensemble mode of ``esh_kernels.numpyro.run_ensemble``).

With thousands of chains, an average over the chains at one iteration estimates an
expectation under the chains' current distribution ``q``. Where LAPS (Robnik & Seljak,
"Faster parallel MCMC: Metropolis adjustment is best served warm", arXiv 2601.16696;
BlackJAX 1.7.1 ``adaptation/laps.py``, ``laps_burn_in.py``) tunes its kernels from such
averages, so do these functions. Every function takes a batch: positions ``x`` and
potential-energy gradients ``grad = dE/dx`` of shape ``(C, d)``, the chain axis first, and
returns per-coordinate ``(d,)`` arrays or scalars. They draw no random numbers and are
written against :func:`esh_kernels.core.backend.namespace`, like the rest of the core.

The warm start's step (:func:`warm_init`, :func:`warm_step`) and the adjusted tuning's
update (:func:`tune_init`, :func:`tune_update`) are here too, with their constants, so
that ``esh_kernels.numpyro.run_ensemble`` and ``esh_kernels.pyro.run_ensemble`` run one
algorithm; each backend adds its random numbers and its loop.
"""

import math
from typing import Any, NamedTuple

from esh_kernels.core.adaptation import diagonal, gradient_covariance, gradient_variances
from esh_kernels.core.backend import namespace, norm
from esh_kernels.core.checks import check_int, check_positive
from esh_kernels.core.integrators import IntegratorState, esh_leapfrog
from esh_kernels.core.isokinetic import energy_error
from esh_kernels.core.mass_matrix import AUTO_DENSE_MAX_DIM
from esh_kernels.core.options import AdjustedESHOptions
from esh_kernels.core.sphere import partial_refresh, refresh_noise_scale, unit_vector
from esh_kernels.core.warmup import default_trajectory_factor, select_rows

#: a bias estimate is clipped to at least this before it sets the energy-error target
#: (the noise-corrected estimate can be 0 or negative once the ensemble has converged)
BIAS_FLOOR = 1e-6
#: the unadjusted step-size rule's target ``Var[dH]/d = ENERGY_VAR_COEFF * B^(3/8)``
#: (LAPS's ``C = 0.1`` and exponent, ``laps_burn_in.Adaptation.update``)
ENERGY_VAR_COEFF = 0.1
ENERGY_VAR_EXPONENT = 3.0 / 8.0
#: one update changes the unadjusted step size by a factor in this range (LAPS's clip);
#: a non-finite step anywhere in the ensemble halves it
STEP_FACTOR_RANGE = (0.3, 3.0)
NON_FINITE_STEP_FACTOR = 0.5
#: the warm start's first step size, in units of ``sqrt(d)`` in the whitened frame (LAPS
#: starts at ``0.01 sqrt(d)``); the step-size rule multiplies it by up to 3 per step
WARM_INITIAL_STEP = 0.01
#: the warm start's velocity decoherence length, in units of the ensemble's whitened
#: typical-set size (:func:`typical_length`; LAPS's ``alpha``)
WARM_LENGTH_FACTOR = 1.9
#: the warm start ends once the bias estimate has been below ``bias_tol`` this many
#: consecutive steps: one reading of a noise-corrected estimate can dip below by chance
WARM_PATIENCE = 3
#: ``AdjustedESH``'s own defaults: acceptance target and trajectory length in units of the
#: whitened typical-set size (``trajectory_factor``, ``esh_math.md`` §7.5)
TARGET_ACCEPT = AdjustedESHOptions().target_accept_prob
#: the adjusted phase's preconditioner is a matrix up to this many dimensions (the layout
#: of ``AdjustedESH``'s ``dense_mass="auto"``, which Pyro's tuning transition runs), a vector
#: above
DENSE_MAX_DIM = AUTO_DENSE_MAX_DIM
#: ... and holds the ensemble's correlations only up to this many: at thousands of chains each
#: chain's ``d x d`` factor costs ``O(d^2)`` per step (2048 x 100 x 100 = 2e7 numbers),
#: which outweighs the cheap gradients this mode is for, and the 100-D rows of
#: ``docs/benchmarks.md`` ran with a diagonal metric. (``AdjustedESH``'s own limit was 50
#: until 2026-12-06; this one stayed.)
CORRELATION_MAX_DIM = 50
DENSE_MIN_CHAINS_PER_DIM = 20
MAX_STEPS = AdjustedESHOptions().max_steps
#: the adjusted tuning starts at this many steps per trajectory (the bisection doubles or
#: halves the step from there)
TUNE_INITIAL_STEPS = 10.0


def check_run_arguments(num_samples, chunk, max_warm_steps, max_tune_steps, bias_tol, ess_target,
                        rhat_target):
    """The budget and stopping arguments of ``run_ensemble`` (NumPyro's and Pyro's), checked
    so that an error names the argument; returned in the same order."""
    rhat_target = check_positive("rhat_target", rhat_target, allow_none=False)
    if rhat_target <= 1.0:
        raise ValueError(f"rhat_target must be above 1 (R-hat is about 1 at convergence), got {rhat_target!r}")
    return (check_int("num_samples", num_samples, 1), check_int("chunk", chunk, 1),
            check_int("max_warm_steps", max_warm_steps, 1), check_int("max_tune_steps", max_tune_steps, 1),
            check_positive("bias_tol", bias_tol, allow_none=False),
            check_positive("ess_target", ess_target, allow_none=False), rhat_target)


def check_dimension(d):
    """The ensemble mode needs ``d >= 2`` unconstrained dimensions: its warm start and
    tuning run isokinetic dynamics (singular in 1-D) on the model's own coordinates, and a
    1-D model gains nothing from an ensemble's cross-chain estimates that a plain run lacks."""
    if d < 2:
        raise ValueError(
            f"the ensemble mode needs at least 2 unconstrained dimensions, the model has {d}: "
            "sample a 1-D model with AdjustedESH in MCMC (it adds an auxiliary coordinate, "
            "esh_kernels.core.auxiliary) or with TunedHMC")


def targets_met(check, rhat_target, ess_target, bias_tol):
    """The sampling phase's stopping rule (``run_ensemble`` of both backends): the largest
    split R-hat of a chunk check below ``rhat_target``, its smallest ESS at least
    ``ess_target`` and the final ensemble's bias estimate below ``bias_tol``."""
    return check["rhat_max"] < rhat_target and check["ess_min"] >= ess_target and check["bias"] < bias_tol


def ensemble_mean(a):
    """Mean over the chain axis (axis 0)."""
    xp = namespace(a)
    return xp.sum(a, axis=0) / a.shape[0]


def ensemble_variance(a):
    """Variance over the chain axis (axis 0), normalised by the number of chains."""
    return ensemble_mean((a - ensemble_mean(a)) ** 2)


def equipartition(x, grad):
    """Per coordinate, the centred virial ``e_i = <(x_i - xbar_i) dE/dx_i>`` over the chains
    and the squared standard error of that mean.

    Under the target ``p ∝ exp(-E)``, integration by parts gives ``E_p[x_i dE/dx_i] = 1``
    and ``E_p[dE/dx_i] = 0``, so ``E_p[(x_i - c) dE/dx_i] = 1`` for any constant ``c``
    (equipartition; LAPS's ``equipartition_diagonal`` uses ``c = 0``). Centring on the
    ensemble mean removes the term ``xbar_i <dE/dx_i>``, whose noise grows with the
    distance of the posterior from the origin. On a Gaussian with variance ``s^2`` an
    ensemble with variance ``v`` gives ``e = v / s^2``: ``1 - e`` is the relative error of
    the second central moment. The result does not change when a coordinate is rescaled.
    """
    t = (x - ensemble_mean(x)) * grad
    return ensemble_mean(t), ensemble_variance(t) / x.shape[0]


def bias_estimate(x, grad):
    """An estimate of the ensemble's squared bias, averaged over coordinates, from the
    two identities of :func:`equipartition` (no knowledge of the target beyond ``dE/dx``):

    ``B = mean_i [ gbar_i^2 / Var(g_i) - 1/C ] + mean_i [ ((1 - e_i)^2 - se_i^2) / 2 ]``

    * first term: the ensemble mean of the gradient, which vanishes under ``p``, in units
      of its spread; on a Gaussian it is ``(m_i - mu_i)^2 / v_i``, the squared bias of the
      mean in units of the ensemble's variance;
    * second term: half the squared equipartition error; on a Gaussian
      ``(1 - v/s^2)^2 / 2``, which is the MCLMC papers' ``b2 = (E_q[x^2] - E_p[x^2])^2 /
      Var_p[x^2]`` for a centred coordinate.

    Each term has its Monte Carlo noise floor subtracted (``1/C`` and ``se_i^2``, the
    expected value of each term when ``q = p``), so ``B`` is about 0, not about ``1/C``,
    for an ensemble that has converged, and ``B < tol`` can be met with few chains. The
    average over coordinates (not the maximum) keeps the estimate's own noise small.
    """
    xp = namespace(x)
    e, e_se2 = equipartition(x, grad)
    g_mean = ensemble_mean(grad)
    g_var = ensemble_variance(grad)
    has = g_var > 0
    mean_term = xp.where(has, g_mean**2 / xp.where(has, g_var, 1.0) - 1.0 / x.shape[0], 0.0)
    variance_term = 0.5 * ((1.0 - e) ** 2 - e_se2)
    return xp.sum(mean_term + variance_term) / x.shape[-1]


def step_size_factor(energy_error, d, bias, non_finite):
    """The factor that updates the shared step size of the unadjusted (isokinetic) phase
    after one step of every chain, from the energy errors ``dH`` of that step (shape
    ``(C,)``; 0 for a chain whose step was not finite), as LAPS's burn-in does
    (``laps_burn_in.Adaptation.update``; ``esh_math.md`` §7.1 for the single-chain
    version): with ``W = Var_chains(dH) / d`` and ``W* = ENERGY_VAR_COEFF * B^(3/8)``,

    ``factor = clip((W* / W)^(1/6), 0.3, 3)``,  ``NON_FINITE_STEP_FACTOR`` if any chain's step
    was not finite (``non_finite``, a scalar bool).

    ``Var[dH] ∝ eps^6`` for a second-order integrator, hence the 1/6 power. The target
    falls with the bias ``B`` (:func:`bias_estimate`): far from the typical set the steps
    are long (the bias they add is small next to the one being removed), close to it they
    shorten so that the discretisation bias stays below the estimate.
    """
    xp = namespace(energy_error)
    w = ensemble_variance(energy_error) / d
    target = ENERGY_VAR_COEFF * xp.clip(bias, BIAS_FLOOR, None) ** ENERGY_VAR_EXPONENT
    low, high = STEP_FACTOR_RANGE
    ratio = target / xp.where(w > 0, w, 1.0)
    factor = xp.where(w > 0, xp.clip(ratio ** (1.0 / 6.0), low, high), high)
    return xp.where(non_finite, NON_FINITE_STEP_FACTOR, factor)


def gradient_metric(x, grad):
    """Diagonal inverse mass matrix (the variances the preconditioner whitens) from the
    ensemble: :func:`core.adaptation.gradient_variances` (nutpie's estimate from a chain's
    draws and gradients) across the chains at one iteration. It is right from the first
    iteration of a cold start, where the ensemble variance (LAPS's choice) is the
    initialisation's. A coordinate with no spread in ``x`` or in the gradient gets 1.
    """
    return gradient_variances(ensemble_variance(x), ensemble_variance(grad), 1.0)


def ensemble_covariance(a):
    """Covariance matrix ``(d, d)`` over the chain axis of ``a`` ``(C, d)``, normalised by
    the number of chains."""
    c = a - ensemble_mean(a)
    return (c.T @ c) / a.shape[0]


def dense_gradient_metric(x, grad):
    """Dense inverse mass matrix from the ensemble: :func:`core.adaptation.gradient_covariance`
    of ``Cov(x)`` and ``Cov(dE/dx)`` across the chains (the dense form of nutpie's
    estimate; :func:`gradient_metric` is its diagonal form, ``esh_math.md`` §7.7): ``S = Σ``
    on a Gaussian with covariance ``Σ`` whatever the ensemble's own spread. Where it is not
    defined (a coordinate without spread) it falls back to the diagonal estimate as a
    matrix."""
    xp = namespace(x)
    s, ok, _ = gradient_covariance(ensemble_covariance(x), ensemble_covariance(grad))
    return xp.where(ok, s, xp.diag(gradient_metric(x, grad) ** 2))


def tune_metric(x, grad):
    """The adjusted phase's preconditioner ``L`` (``L L^T = M^-1``) from the warm ensemble:
    up to :data:`DENSE_MAX_DIM` dimensions a lower-triangular matrix, the Cholesky factor
    of :func:`dense_gradient_metric` where it holds correlations (:func:`holds_correlations`:
    at most :data:`CORRELATION_MAX_DIM` dimensions and :data:`DENSE_MIN_CHAINS_PER_DIM`
    chains per dimension), else of :func:`gradient_metric`'s diagonal; above, the diagonal
    ``sqrt(gradient_metric)``."""
    xp = namespace(x)
    if x.shape[-1] > DENSE_MAX_DIM:
        return xp.sqrt(gradient_metric(x, grad))
    if holds_correlations(*x.shape):
        return xp.linalg.cholesky(dense_gradient_metric(x, grad))
    return xp.diag(xp.sqrt(gradient_metric(x, grad)))


def holds_correlations(num_chains, d):
    """Whether :func:`tune_metric` estimates the correlations (a dense metric proper) for
    ``num_chains`` chains in ``d`` dimensions."""
    return d <= CORRELATION_MAX_DIM and num_chains >= DENSE_MIN_CHAINS_PER_DIM * d


def sampling_metric(scale, num_chains):
    """``(scale, dense)`` for the sampling phase's ``AdjustedESH`` from the tuned ``scale``
    (:func:`tune_metric`): a matrix where it holds correlations, else its diagonal as a
    vector, whose draws are the same and whose steps cost ``O(d)`` instead of ``O(d^2)``."""
    if scale.ndim == 2 and not holds_correlations(num_chains, scale.shape[-1]):
        return diagonal(scale), False
    return scale, scale.ndim == 2


def typical_length(x, scale, factor=1.0):
    """``factor * sqrt(sum_i Var(z_i))``, ``z = L^{-1} x`` the whitened positions: the size
    of the ensemble's typical set in the whitened frame (``scale`` the preconditioner ``L``,
    a vector or a lower-triangular matrix, ``L L^T = M^-1``). LAPS sets its decoherence
    length this way (``alpha * sqrt(mean_i Var(x_i)) * sqrt(d)``, unwhitened); for a
    whitened Gaussian it is ``factor * sqrt(d)``, ``AdjustedESH``'s default trajectory
    length (``esh_math.md`` §7.5)."""
    xp = namespace(x)
    if scale.ndim == 2:
        z = xp.linalg.solve(scale, (x - ensemble_mean(x)).T)  # (d, C), centred
        return factor * xp.sqrt(xp.sum(z * z) / x.shape[0])
    return factor * xp.sqrt(xp.sum(ensemble_variance(x) / scale**2))


def warm_start_direction(x, grad, scale):
    """Initial unit velocities (whitened frame) of a warm start, as LAPS initialises them
    (``laps_burn_in.initialize``): along the whitened gradient ``-L^T dE/dx``, downhill in the
    coordinates where the ensemble is too wide (``e_i > 1``, :func:`equipartition`) and
    uphill where it is too narrow, so each coordinate starts towards equipartition. A chain
    with a zero gradient keeps a zero vector here; the caller gives it a random direction."""
    xp = namespace(x)
    e, _ = equipartition(x, grad)
    sign = xp.where(e > 1.0, 1.0, -1.0)
    v = -sign * scale * grad
    size = norm(xp, v)
    return v / xp.where(size > 0, size, 1.0)


class StepBracket(NamedTuple):
    """State of :func:`step_bracket_update`: bounds on ``log eps`` (``-inf``/``+inf`` until
    found) and whether the ensemble's acceptance has reached its target."""

    low: Any
    high: Any
    done: Any


def step_bracket_init(log_step):
    """No bounds yet, not done (arrays like ``log_step``)."""
    inf = log_step * 0.0 + math.inf
    return StepBracket(-inf, inf, inf < 0)


def step_bracket_update(bracket, log_step, accept, target, tolerance=0.03):
    """One update of the adjusted phase's shared step size from the ensemble's mean
    acceptance ``accept`` at ``log_step``: a bisection on ``log eps`` for a decreasing
    function that needs no initial bracket (LAPS's ``bisection_monotonic_fn``): while
    one bound is missing, double or halve the step; then bisect. Done once the acceptance
    is within ``tolerance`` of ``target``; from then on the step stays where it was.
    With thousands of chains the mean acceptance of one transition is nearly noiseless,
    so a handful of transitions settle it. Returns ``(bracket, next_log_step)``.
    """
    xp = namespace(log_step)
    above = accept > target
    low = xp.where(above, xp.maximum(bracket.low, log_step), bracket.low)
    high = xp.where(above, bracket.high, xp.minimum(bracket.high, log_step))
    bracketed = xp.isfinite(low) & xp.isfinite(high)
    double = log_step * 0.0 + math.log(2.0)  # like log_step (a scalar would be float32 in torch)
    shift = xp.where(above, double, -double)
    proposal = xp.where(bracketed, 0.5 * (xp.where(bracketed, low, 0.0) + xp.where(bracketed, high, 0.0)),
                        log_step + shift)
    done = bracket.done | (xp.abs(accept - target) < tolerance)
    return StepBracket(low, high, done), xp.where(done, log_step, proposal)


class WarmState(NamedTuple):
    """The ensemble during the warm start: every chain's integrator state (leading chain
    axis ``C``; ``r`` unused) and the hyperparameters shared by all chains, re-read from
    the ensemble after each step."""

    integ: Any  # IntegratorState: x, unit velocity u (whitened frame), r, energy, grad
    step_size: Any  # whitened frame, 0-d
    scale: Any  # diagonal preconditioner L, ``L^2`` the inverse mass matrix, ``(d,)``
    length: Any  # velocity decoherence length, 0-d
    below: Any  # consecutive steps with the bias estimate below the tolerance, 0-d
    bias: Any  # bias estimate (:func:`bias_estimate`) of the current ensemble, 0-d


def warm_init(x, energy, grad, normal):
    """The warm start's first state at positions ``x`` ``(C, d)`` with their potential
    energies and gradients (``esh_math.md`` §7.7): the preconditioner of
    :func:`gradient_metric`, velocities from :func:`warm_start_direction` (a uniform one
    from the standard normals ``normal`` ``(C, d)`` where the gradient is 0), the first
    step size ``WARM_INITIAL_STEP * sqrt(d)`` and the length ``WARM_LENGTH_FACTOR`` times
    :func:`typical_length`."""
    xp = namespace(x)
    scale = xp.sqrt(gradient_metric(x, grad))
    u = warm_start_direction(x, grad, scale)
    u = xp.where(xp.sum(u * u, axis=-1, keepdims=True) > 0, u, unit_vector(normal))
    length = typical_length(x, scale, WARM_LENGTH_FACTOR)
    zero = xp.zeros_like(length)
    return WarmState(IntegratorState(x, u, xp.zeros_like(energy), energy, grad),
                     zero + WARM_INITIAL_STEP * math.sqrt(x.shape[-1]), scale, length, zero,
                     bias_estimate(x, grad))


def warm_step(s, value_and_grad, direction_normal, refresh_normal, bias_tol):
    """One unadjusted isokinetic step of every chain (``D = d - 1``, one gradient each,
    ``value_and_grad`` on the ``(C, d)`` batch), its partial velocity refresh over the
    decoherence length, then the ensemble's update of the shared step size
    (:func:`step_size_factor`), preconditioner and length, and of the count of steps with
    the bias estimate below ``bias_tol`` (``esh_math.md`` §7.7). A chain whose step is not
    finite stays where it was with a fresh direction (from ``direction_normal``), counts
    as a zero energy error, and halves the step size. ``refresh_normal``: the refresh's
    standard normals. Both are ``(C, d)``."""
    xp = namespace(s.integ.x)
    d = s.integ.x.shape[-1]
    new, dr = esh_leapfrog(s.integ, s.step_size, value_and_grad, d - 1, s.scale)
    error = energy_error(new, s.integ.energy, dr)  # +inf where the step is not finite
    ok = xp.isfinite(error)
    integ = select_rows(ok, new, s.integ._replace(u=unit_vector(direction_normal)))
    error = xp.where(ok, error, 0.0)
    nu = refresh_noise_scale(s.step_size, s.length, d)
    integ = integ._replace(u=partial_refresh(integ.u, refresh_normal, nu))
    bias = bias_estimate(integ.x, integ.grad)
    step_size = s.step_size * step_size_factor(error, d, bias, ~xp.all(ok))
    scale = xp.sqrt(gradient_metric(integ.x, integ.grad))
    below = xp.where(bias < bias_tol, s.below + 1.0, 0.0 * s.below)
    return WarmState(integ, step_size, scale, typical_length(integ.x, scale, WARM_LENGTH_FACTOR),
                     below, bias)


def tune_init(x, grad):
    """The adjusted phase's hyperparameters read off the warm ensemble (``esh_math.md``
    §7.7): the preconditioner ``scale`` (:func:`tune_metric`: a matrix up to
    :data:`DENSE_MAX_DIM` dimensions), the mean trajectory length ``AdjustedESH``'s
    trajectory factor for that kind of metric (dense where it holds correlations,
    :func:`holds_correlations`) times :func:`typical_length` (its
    ``trajectory_factor * sqrt(d)`` for a whitened target) and the first ``log`` step size
    of the bisection, ``TUNE_INITIAL_STEPS`` steps per trajectory. Returns
    ``(scale, length, log_step)``."""
    xp = namespace(x)
    scale = tune_metric(x, grad)
    length = typical_length(x, scale, default_trajectory_factor(None, dense=holds_correlations(*x.shape)))
    return scale, length, xp.log(length / TUNE_INITIAL_STEPS)


def tune_update(bracket, log_step, accept_prob):
    """:func:`step_bracket_update` towards ``TARGET_ACCEPT`` from the per-chain acceptance
    probabilities ``accept_prob`` ``(C,)`` of one ``AdjustedESH`` transition of every chain
    at ``exp(log_step)``. Returns ``(bracket, next_log_step, mean acceptance)``."""
    accept = ensemble_mean(accept_prob)
    bracket, log_step = step_bracket_update(bracket, log_step, accept, TARGET_ACCEPT)
    return bracket, log_step, accept
