"""One Metropolis-adjusted isokinetic ESH transition (``esh_math.md`` §6.4), shared by
``AdjustedESH`` (every transition) and ``ESH`` (its warmup, see ``core/warmup.py``)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax, random

from esh_kernels.core.adaptation import jittered_num_steps
from esh_kernels.core.dynamics import kinetic_energy_change
from esh_kernels.core.integrators import esh_leapfrog, finite_state
from esh_kernels.core.metropolis import adaptation_accept_prob, descent_accept, log_accept_prob
from esh_kernels.core.sphere import unit_vector

DIVERGENCE_THRESHOLD = 1000.0


class Proposal(NamedTuple):
    state: Any  # IntegratorState after the accept/reject
    accept_prob: Any
    num_steps: Any  # gradient evaluations spent
    energy_error: Any  # dE + (d-1) sum(dr); +inf when non-finite
    diverging: Any
    adapt_accept_prob: Any  # statistic for step-size adaptation (``adaptation_accept_prob``)


def isokinetic_transition(start, key, step_size, trajectory_length, scale, value_and_grad, max_steps,
                          descend=False):
    """Fresh unit velocity, ``ceil(U 2L/eps)`` isokinetic steps (``D = d - 1``), Metropolis
    test on the energy error. A non-finite energy, gradient or position ends the trajectory
    early and is rejected and flagged divergent, as is an energy error above 1000. Also
    returns the statistic step-size adaptation uses (``adaptation_accept_prob``). With
    ``descend`` (warmup's descent phase) a move downhill is accepted (``descent_accept``)."""
    k_u, k_n, k_acc = random.split(key, 3)
    d = start.x.shape[0]
    dtype = start.x.dtype
    u0 = unit_vector(random.normal(k_u, start.x.shape, dtype))
    uniform = 1.0 - random.uniform(k_n, (), dtype)  # in (0, 1]
    n = jittered_num_steps(uniform, trajectory_length, step_size, max_steps).astype(jnp.int32)

    def error(integ, sum_dr):
        energy_error = integ.energy - start.energy + kinetic_energy_change(sum_dr, d - 1)
        return jnp.where(finite_state(integ), energy_error, jnp.inf)

    def cond(c):
        k, integ, _, _ = c
        return (k < n) & finite_state(integ)

    def body(c):
        k, integ, dr, sum_accept = c
        integ, step_dr = esh_leapfrog(integ, step_size, value_and_grad, d - 1, scale)
        dr = dr + step_dr
        return k + 1, integ, dr, sum_accept + jnp.exp(log_accept_prob(error(integ, dr)))

    zero = jnp.zeros((), dtype)
    k, end, sum_dr, sum_accept = lax.while_loop(
        cond, body, (jnp.array(0, jnp.int32), start._replace(u=u0, r=zero), zero, zero)
    )
    energy_error = error(end, sum_dr)
    log_alpha = log_accept_prob(energy_error)
    accept = jnp.log(random.uniform(k_acc, (), dtype)) < log_alpha
    accept = descent_accept(accept, descend, finite_state(end), end.energy, start.energy)
    new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), end, start)
    accept_prob = jnp.exp(log_alpha)
    return Proposal(new, accept_prob, k, energy_error, energy_error > DIVERGENCE_THRESHOLD,
                    adaptation_accept_prob(accept_prob, finite_state(end), sum_accept, k))
