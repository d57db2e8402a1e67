"""One ``TunedHMC`` transition, written once for both PPLs (``esh_math.md`` §7.2-7.3, §8).

Fresh Gaussian momentum in the whitened frame, ``n = ceil(h T / eps)`` leapfrog steps
(``h`` from the Halton sequence, jittered in (0, 1)), Metropolis test on the change of
``H = E(x) + |p|^2/2``. With U-turn tracking (single-chain tuning of ``T``, some warmup
iterations) the trajectory continues past its proposal until it makes a U-turn in the
whitened frame, ``<L^{-1}(x_k - x_0), p_k> < 0`` (NUTS's criterion), or reaches
``max_steps``; only the proposal at step ``n`` is tested.

The functions take one chain (NumPyro, under ``vmap``) or a batch of chains (Pyro, leading
axis ``C``); the loop is the caller's (NumPyro's ``lax.while_loop`` while :func:`running`,
Pyro's recorded graph of one masked :func:`step`). Random numbers come in from the caller.
"""

import math
from typing import Any, NamedTuple

from esh_kernels.core.adaptation import jittered_num_steps
from esh_kernels.core.backend import namespace
from esh_kernels.core.integrators import euclidean_leapfrog, finite_state, per_vector
from esh_kernels.core.metropolis import beyond_rounding, log_accept_prob, position_rounding
from esh_kernels.core.preconditioning import precond_adjoint, precond_inverse
from esh_kernels.core import state_fields
from esh_kernels.core.warmup import select_rows, steep_gradient


class TunedHMCState(NamedTuple):
    """State of ``TunedHMC``: one chain (NumPyro; a vectorized run adds a leading chain
    axis) or a batch of chains with leading axis ``C`` (Pyro). Fields as in
    :class:`esh_kernels.core.isokinetic.AdjustedESHState`, plus ``energy``."""

    i: Any
    z: Any
    potential_energy: Any
    integrator: Any
    diverging: Any
    accept_prob: Any
    mean_accept_prob: Any
    n_steps: Any  # gradient evaluations spent on this draw (U-turn tracking included)
    energy: Any  # Hamiltonian E(x) + |p|^2/2 at the start of the transition
    energy_error: Any
    step_curvature: Any  # :attr:`Outcome.step_curvature` of this draw's proposal
    adapt_state: Any  # core.tuned_warmup.TunedHMCAdaptState
    rng_key: Any = None
    monitor: Any = None

    num_steps = state_fields.num_steps  # NumPyro's names (core/state_fields.py)
    z_grad = state_fields.z_grad
    __getitem__ = state_fields.field_lookup


class Carry(NamedTuple):
    k: Any  # leapfrog steps taken (a float, so that a recorded torch graph has one dtype)
    last: Any  # IntegratorState where the trajectory is (momentum in ``u``)
    proposal: Any  # IntegratorState at step ``n``
    k_turn: Any  # step of the first U-turn (0: none yet)
    curvature: Any  # largest eps^2 * (curvature along the step) over steps 1..n (:func:`step`)


class Outcome(NamedTuple):
    """A finished transition: the chain's new state and what the warmup uses."""

    new: Any  # IntegratorState after the accept/reject (momentum of the proposal in ``u``)
    proposal: Any  # IntegratorState proposed
    accept_prob: Any
    adapt_accept_prob: Any  # what the step-size adaptation reads (:func:`finish`)
    energy_error: Any  # change of H; +inf when the proposal is not finite
    diverging: Any
    valid: Any  # finite and not divergent: usable for trajectory-length tuning
    duration: Any  # integration time of the proposal
    uturn_time: Any  # integration time to the first U-turn (0 when not tracked or unknown)
    start_energy: Any  # H at the start
    step_curvature: Any  # largest eps^2 * (curvature along the step) of the proposal's steps


def _gradient_finite(integ):
    xp = namespace(integ.x)
    return xp.isfinite(integ.energy) & xp.all(xp.isfinite(integ.grad), axis=-1)


def whitening(scale, dense):
    """What :func:`step` needs to map position differences to the whitened frame: ``L^{-1}``
    for a dense metric (inverted once per transition), ``L`` itself for a diagonal one."""
    return namespace(scale).linalg.inv(scale) if dense else scale


def _whiten(white, dense, v):
    if dense:
        return (white @ v[..., None])[..., 0]
    return precond_inverse(white, v)


def start(integ, momentum, h, step_size, trajectory_length, max_steps, num_steps=None):
    """The carry at the start and the number of steps ``n`` of the proposal:
    ``ceil(h T / eps)`` (``jittered_num_steps`` with mean length ``T/2``), or ``num_steps``
    where the user fixed it; at most ``max_steps``."""
    xp = namespace(integ.x)
    zero = xp.zeros_like(integ.energy)
    n = jittered_num_steps(h + zero, 0.5 * trajectory_length, step_size, max_steps, num_steps)
    init = integ._replace(u=momentum)
    return Carry(zero, init, init, zero, zero), n


def running(c, n, track, max_steps):
    """Steps to go (to ``n``, or to the U-turn where ``track``) and a finite state."""
    more = (c.k < n) | (track & (c.k_turn == 0) & (c.k < max_steps))
    return more & _gradient_finite(c.last)


#: ``eps^2 lambda`` beyond which leapfrog on a quadratic of curvature ``lambda`` (whitened)
#: is unstable: the energy error grows without bound along the trajectory
LEAPFROG_STABILITY_LIMIT = 4.0


def step_curvature(last, new, step_size, scale):
    """``eps^2 rho`` for the leapfrog step from ``last`` to ``new``, where ``rho`` is the
    target's curvature along the step in the whitened frame: ``<dx, dg> / |L^{-1} dx|^2``
    (the Rayleigh quotient of the Hessian averaged over the step, ``esh_math.md`` §7.9). With
    ``L^{-1} dx = eps p_half``, the half-step momentum ``p_half = (p_k + p_{k+1})/2 + (eps/4)
    L^T dg``, this is ``eps <p_half, L^T dg> / |p_half|^2``. Leapfrog on a quadratic of
    curvature ``lambda`` is stable only for ``eps^2 lambda <`` :data:`LEAPFROG_STABILITY_LIMIT`;
    a step across a ridge or into a tail narrower than where the step size was tuned reads
    above it. 0 where the step is not finite."""
    xp = namespace(new.x)
    dgw = precond_adjoint(scale, new.grad - last.grad)  # L^T dg
    p_half = 0.5 * (last.u + new.u) + 0.25 * per_vector(step_size, dgw) * dgw
    norm2 = xp.sum(p_half * p_half, axis=-1)
    value = step_size * xp.sum(p_half * dgw, axis=-1) / xp.where(norm2 > 0, norm2, 1.0)
    return xp.where(xp.isfinite(value), value, 0.0)


def step(c, n, x0, step_size, scale, white, dense, value_and_grad, track, track_uturn):
    """One leapfrog step; ``track_uturn`` (a Python bool) adds the U-turn test. The proposal's
    steps (``k <= n``) also update the largest :func:`step_curvature`."""
    xp = namespace(c.last.x)
    new = euclidean_leapfrog(c.last, step_size, value_and_grad, scale)
    k = c.k + 1.0
    curvature = xp.where(k <= n, xp.maximum(c.curvature, step_curvature(c.last, new, step_size, scale)),
                         c.curvature)
    proposal = select_rows(k == n, new, c.proposal)
    k_turn = c.k_turn
    if track_uturn:
        turned = xp.sum(_whiten(white, dense, new.x - x0) * new.u, axis=-1) < 0
        k_turn = xp.where(track & (k_turn == 0) & turned, k, k_turn)
    return Carry(k, new, proposal, k_turn, curvature)


def finish(c, start_integ, momentum, n, step_size, uniform_accept, track, divergence_threshold, scale):
    """The Metropolis test (``uniform_accept`` in ``[0, 1)``) and the warmup statistics.
    A trajectory stopped early by a non-finite state proposes that state (rejected); one
    that never turned before ``max_steps`` counts as turning there; one that stopped on a
    non-finite energy tells nothing about the U-turn (0).

    ``adapt_accept_prob``, what the step-size adaptation reads, counts an energy error
    within the floating-point resolution of ``H`` as 0 (``beyond_rounding``, with the
    rounding of the positions, :func:`~esh_kernels.core.metropolis.position_rounding`, at
    both ends) where the chain starts far steeper than a typical set
    (:func:`~esh_kernels.core.warmup.steep_gradient`, read in the metric ``scale``). In a
    typical set the floor would hide real integration errors (a float32 model with 10^6
    observations, ``|E| = 2e6``: a floor of 4). On a steep wall (posteriordb's ``arma11`` at
    a potential of 1.7e53, gradient 5e55) a step of 1e-36 does not move the position and
    rejects on the kinetic energy's growth alone (``dH = 1e39``), one of 1e-35 moves it by a
    few units in the last place and rejects on that rounding (``dH = 4.5e39``, against
    ``|g| ulp(x) = 1e40``), while steps of 1e-33 to 1e-29 all descend with ``dH < 0``. Read
    as they are, these errors drove dual averaging down to 1e-59, where the chain never moved
    again."""
    xp = namespace(c.last.x)
    end = select_rows(c.k >= n, c.proposal, c.last)
    kinetic0 = 0.5 * xp.sum(momentum * momentum, axis=-1)
    kinetic1 = 0.5 * xp.sum(end.u * end.u, axis=-1)
    ok = finite_state(end) & xp.all(xp.isfinite(end.u), axis=-1)
    energy_error = xp.where(ok, end.energy - start_integ.energy + kinetic1 - kinetic0, math.inf)
    log_alpha = log_accept_prob(energy_error)
    accept = xp.log(uniform_accept) < log_alpha
    diverging = energy_error > divergence_threshold
    k_turn = xp.where(track & (c.k_turn == 0) & _gradient_finite(c.last), c.k, c.k_turn)
    resolution = position_rounding(start_integ) + position_rounding(end)
    adapt_error = xp.where(steep_gradient(scale, start_integ.grad),
                           beyond_rounding(energy_error, start_integ.energy, end.energy, resolution),
                           energy_error)
    return Outcome(
        new=select_rows(accept, end, start_integ), proposal=end, accept_prob=xp.exp(log_alpha),
        adapt_accept_prob=xp.exp(log_accept_prob(adapt_error)),
        energy_error=energy_error, diverging=diverging, valid=~diverging & ok,
        duration=xp.minimum(c.k, n) * step_size, uturn_time=k_turn * step_size,
        start_energy=start_integ.energy + kinetic0, step_curvature=c.curvature,
    )


def step_energy_error(integ, momentum, step_size, scale, value_and_grad):
    """Change of ``H`` over one leapfrog step from ``integ`` with ``momentum``: a trial of
    the initial step-size search (``core/warmup.py``, ``esh_math.md`` §7.3)."""
    xp = namespace(integ.x)
    end = euclidean_leapfrog(integ._replace(u=momentum), step_size, value_and_grad, scale)
    kinetic0 = 0.5 * xp.sum(momentum * momentum, axis=-1)
    return end.energy - integ.energy + 0.5 * xp.sum(end.u * end.u, axis=-1) - kinetic0
