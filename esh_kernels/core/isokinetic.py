"""One Metropolis-adjusted isokinetic transition, written once for both PPLs (``esh_math.md`` §6.4).

A fresh unit velocity, ``ceil(U 2L/eps)`` isokinetic steps (``D = d - 1``, jittered length
``jittered_num_steps``), then a Metropolis test on the energy error ``dE + (d-1) sum(dr)``.
``AdjustedESH`` makes every transition this way, ``ESH`` its warmup phase 1.

A non-finite energy, gradient or position ends the trajectory early; it is rejected and
flagged divergent, as is an energy error above ``core.metropolis.DIVERGENCE_THRESHOLD``. The functions
take one chain (NumPyro, under ``vmap``) or a batch of chains (Pyro, leading axis ``C``);
the loop is the caller's (NumPyro's ``lax.while_loop`` while :func:`running`, Pyro's
recorded graph of one masked :func:`step`). Random numbers come in from the caller.
"""

import math
from typing import Any, NamedTuple

from esh_kernels.core.adaptation import jittered_num_steps
from esh_kernels.core.backend import namespace
from esh_kernels.core.dynamics import kinetic_energy_change
from esh_kernels.core.integrators import esh_leapfrog, finite_state
from esh_kernels.core.metropolis import (
    DIVERGENCE_THRESHOLD,
    adaptation_accept_prob,
    beyond_rounding,
    descent_accept,
    log_accept_prob,
)
from esh_kernels.core.sphere import unit_vector
from esh_kernels.core import state_fields
from esh_kernels.core.warmup import select_lazy, select_rows

class AdjustedESHState(NamedTuple):
    """State of ``AdjustedESH``: one chain (NumPyro; a vectorized run adds a leading chain
    axis) or a batch of chains with leading axis ``C`` (Pyro). ``i`` is the iteration (a
    Python int in Pyro); ``z`` the draw: NumPyro's unconstrained pytree, Pyro's flat
    ``(C, d)`` tensor; ``integrator`` the dynamics' position with its
    cached potential energy and gradient. ``rng_key`` (NumPyro's key) and ``monitor``
    (NumPyro's self-check statistics, ``core/self_check.py``) are ``None`` in Pyro, which
    draws from torch's generator and keeps its monitor on the kernel."""

    i: Any
    z: Any
    potential_energy: Any
    integrator: Any
    diverging: Any
    accept_prob: Any
    mean_accept_prob: Any
    n_steps: Any  # gradient evaluations spent on this draw
    energy_error: Any
    step_curvature: Any  # :attr:`Proposal.step_curvature` of this draw's proposal
    adapt_state: Any  # core.warmup.AdjustedESHAdaptState
    rng_key: Any = None
    monitor: Any = None

    num_steps = state_fields.num_steps  # NumPyro's names (core/state_fields.py)
    z_grad = state_fields.z_grad
    energy = state_fields.isokinetic_energy
    __getitem__ = state_fields.field_lookup


class Proposal(NamedTuple):
    state: Any  # IntegratorState after the accept/reject
    accept_prob: Any
    num_steps: Any  # gradient evaluations spent
    energy_error: Any  # dE + (d-1) sum(dr); +inf when non-finite
    diverging: Any
    adapt_accept_prob: Any  # statistic for step-size adaptation (``adaptation_accept_prob``)
    step_curvature: Any  # the largest :func:`step_curvature` of the trajectory's steps


class Carry(NamedTuple):
    k: Any  # steps taken (a float, so that a recorded torch graph has one dtype)
    integ: Any
    sum_dr: Any  # change of the log speed since the start
    sum_accept: Any  # sum over the steps of the acceptance probability at each point
    curvature: Any  # the largest :func:`step_curvature` of the steps so far


def energy_error(integ, start_energy, sum_dr):
    """``dE + (d-1) sum(dr)`` from the start, ``+inf`` where the state is not finite."""
    xp = namespace(integ.x)
    d = integ.x.shape[-1]
    error = integ.energy - start_energy + kinetic_energy_change(sum_dr, d - 1)
    return xp.where(finite_state(integ), error, math.inf)


def start(integ, normal, uniform_steps, step_size, trajectory_length, max_steps, num_steps=None):
    """The carry at the start (velocity ``normal/|normal|``, ``r = 0``) and the number of
    steps, from standard normals and a uniform in ``[0, 1)`` (``jittered_num_steps``, or
    ``num_steps`` where the user fixed it)."""
    xp = namespace(integ.x)
    zero = xp.zeros_like(integ.energy)
    n = jittered_num_steps(1.0 - uniform_steps, trajectory_length, step_size, max_steps, num_steps)
    return Carry(zero, integ._replace(u=unit_vector(normal), r=zero), zero, zero, zero), n


def running(c, num_steps):
    return (c.k < num_steps) & finite_state(c.integ)


def step_curvature(last, new):
    """``<dx, dg> / (d - 1)`` for the isokinetic step from ``last`` to ``new``: the
    Euclidean ``eps^2 rho`` of :func:`esh_kernels.core.hmc.step_curvature` (``rho``, the
    curvature along the step in the whitened frame, is ``<dx, dg> / eps^2`` here, where the
    whitened velocity has unit length) over ``d - 1``, because a unit-speed isokinetic
    particle on a whitened Gaussian of curvature ``lambda`` oscillates at ``omega^2 =
    lambda / (d - 1)`` (the typical set's radius is ``sqrt(d)``), so its leapfrog is stable for
    ``eps^2 omega^2 < 4`` as the Euclidean one is for ``eps^2 lambda < 4`` (``esh_math.md``
    §7.9). The analogy holds for large ``d``; in a few dimensions healthy runs read up to 3-4.5
    at acceptance 0.85. 0 where the step is not finite."""
    xp = namespace(new.x)
    d = new.x.shape[-1]
    value = xp.sum((new.x - last.x) * (new.grad - last.grad), axis=-1) / max(d - 1, 1)
    return xp.where(xp.isfinite(value), value, 0.0)


def step(c, start_energy, step_size, scale, value_and_grad):
    """One isokinetic leapfrog step, with the acceptance probability of the point reached."""
    xp = namespace(c.integ.x)
    d = c.integ.x.shape[-1]
    integ, dr = esh_leapfrog(c.integ, step_size, value_and_grad, d - 1, scale)
    sum_dr = c.sum_dr + dr
    accept = xp.exp(log_accept_prob(energy_error(integ, start_energy, sum_dr)))
    curvature = xp.maximum(c.curvature, step_curvature(c.integ, integ))
    return Carry(c.k + 1.0, integ, sum_dr, c.sum_accept + accept, curvature)


def finish(c, start_integ, uniform_accept, descend=False):
    """The Metropolis test (``uniform_accept`` in ``[0, 1)``) and the statistic step-size
    adaptation uses (``adaptation_accept_prob``). With ``descend`` (warmup's descent
    phase) a move downhill is accepted (``descent_accept``), and adaptation reads an energy
    error within the rounding of the potential energies as 0 (``beyond_rounding``)."""
    xp = namespace(c.integ.x)
    end = c.integ
    error = energy_error(end, start_integ.energy, c.sum_dr)
    log_alpha = log_accept_prob(error)
    accept = xp.log(uniform_accept) < log_alpha
    accept = descent_accept(accept, descend, finite_state(end), end.energy, start_integ.energy)
    new = select_rows(accept, end, start_integ)
    accept_prob = xp.exp(log_alpha)
    adapt_prob = select_lazy(  # only the descent phase discounts rounding
        descend,
        lambda: xp.exp(log_accept_prob(beyond_rounding(error, start_integ.energy, end.energy))),
        lambda: accept_prob,
    )
    return Proposal(new, accept_prob, c.k, error, error > DIVERGENCE_THRESHOLD,
                    adaptation_accept_prob(adapt_prob, finite_state(end), c.sum_accept, c.k), c.curvature)
