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
"""

import math
from typing import Any, NamedTuple

from esh_kernels.core.backend import namespace, norm

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
    target = ENERGY_VAR_COEFF * xp.maximum(bias, BIAS_FLOOR) ** ENERGY_VAR_EXPONENT
    low, high = STEP_FACTOR_RANGE
    ratio = target / xp.where(w > 0, w, 1.0)
    factor = xp.where(w > 0, xp.minimum(xp.maximum(ratio ** (1.0 / 6.0), low), high), high)
    return xp.where(non_finite, NON_FINITE_STEP_FACTOR, factor)


def gradient_metric(x, grad):
    """Diagonal inverse mass matrix (the variances the preconditioner whitens) from the
    ensemble: ``sqrt(Var(x_i) / Var(dE/dx_i))``, the estimate nutpie uses from a chain's
    draws and gradients (``nuts-rs`` ``transform/adapt/diagonal.rs``), here across the
    chains at one iteration. On a Gaussian with variances ``s_i^2`` (diagonal) it equals
    ``s_i^2`` whatever the ensemble's own spread, since ``dE/dx_i = (x_i - mu_i)/s_i^2``;
    so it is right from the first iteration of a cold start, where the ensemble variance
    (LAPS's choice) is the initialisation's. A coordinate with no spread in ``x`` or in
    the gradient gets 1.
    """
    xp = namespace(x)
    var_x, var_g = ensemble_variance(x), ensemble_variance(grad)
    ok = (var_x > 0) & (var_g > 0)
    ratio = var_x / xp.where(ok, var_g, 1.0)
    return xp.where(ok & xp.isfinite(ratio), xp.sqrt(xp.where(ok, ratio, 1.0)), 1.0)


def typical_length(x, scale, factor=1.0):
    """``factor * sqrt(sum_i Var(x_i) / scale_i^2)``: the size of the ensemble's typical set
    in the whitened frame (``scale`` the diagonal preconditioner, ``L L^T = M^-1``). LAPS sets
    its decoherence length this way (``alpha * sqrt(mean_i Var(x_i)) * sqrt(d)``, unwhitened);
    for a whitened Gaussian it is ``factor * sqrt(d)``, ``AdjustedESH``'s default trajectory
    length (``esh_math.md`` §7.5)."""
    xp = namespace(x)
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
    shift = xp.where(above, math.log(2.0), -math.log(2.0))
    proposal = xp.where(bracketed, 0.5 * (xp.where(bracketed, low, 0.0) + xp.where(bracketed, high, 0.0)),
                        log_step + shift)
    done = bracket.done | (xp.abs(accept - target) < tolerance)
    return StepBracket(low, high, done), xp.where(done, log_step, proposal)
