"""One Metropolis-adjusted isokinetic ESH transition for a batch of chains
(``esh_math.md`` §6.4), shared by ``AdjustedESH`` (every transition) and ``ESH`` (warmup
phase 1): the torch twin of ``esh_kernels/numpyro/_isokinetic.py``.

Host synchronisation: one per transition, the largest number of steps over the chains
(fetched together with any numbers the caller wants on the host), before the loop. Chains
that have done their steps or hit a non-finite state are frozen by masking while the
others finish, as the NumPyro ``while_loop`` under ``vmap`` does.
"""

import math
from typing import Any, NamedTuple

import torch

from esh_kernels.core.adaptation import jittered_num_steps
from esh_kernels.core.dynamics import kinetic_energy_change
from esh_kernels.core.integrators import IntegratorState, esh_leapfrog, finite_state
from esh_kernels.core.metropolis import adaptation_accept_prob, descent_accept, log_accept_prob
from esh_kernels.core.sphere import unit_vector
from esh_kernels.pyro._base import where
from esh_kernels.pyro._model import Compiled

DIVERGENCE_THRESHOLD = 1000.0


class Proposal(NamedTuple):
    state: Any  # IntegratorState after the accept/reject
    accept_prob: Any
    num_steps: Any  # gradient evaluations spent
    energy_error: Any  # dE + (d-1) sum(dr); +inf when non-finite
    diverging: Any
    adapt_accept_prob: Any  # statistic for step-size adaptation (``adaptation_accept_prob``)


class IsokineticDraws(NamedTuple):
    """The random numbers of one transition (injectable for tests)."""

    normal: Any  # (C, d) standard normals for the fresh unit velocity
    uniform_steps: Any  # (C,) uniforms in [0, 1) for the jittered number of steps
    uniform_accept: Any  # (C,) uniforms in [0, 1) for the Metropolis test


def draw_isokinetic(rng, x):
    C, d = x.shape
    return IsokineticDraws(rng.normal(x, (C, d)), rng.uniform(x, (C,)), rng.uniform(x, (C,)))


def _energy_error(integ, energy0, sum_dr, d):
    """``dE + (d-1) sum(dr)`` from the start, ``+inf`` where the state is not finite."""
    energy_error = integ.energy - energy0 + kinetic_energy_change(sum_dr, d - 1)
    return torch.where(finite_state(integ), energy_error, torch.full_like(energy_error, math.inf))


class IsokineticTransition:
    """The transition with its leapfrog step compiled once (``jit_compile``)."""

    def __init__(self, value_and_grad, example, mode, jit_options=None, ignore_jit_warnings=False):
        """``example = (start IntegratorState, step_size (C,), scale)`` fixes shapes."""
        self.value_and_grad = value_and_grad
        start, step_size, scale = example
        zero = torch.zeros_like(start.energy)
        u = torch.ones_like(start.x) / math.sqrt(start.x.shape[-1])
        args = (start.x, u, zero, start.energy, start.grad, zero, zero, zero, zero + 1.0,
                start.energy, step_size, scale)
        self.step = Compiled(self._step_fn, args, mode, "isokinetic leapfrog step",
                             jit_options, ignore_jit_warnings)

    def _step_fn(self, x, u, r, energy, grad, k, sum_dr, sum_accept, n, energy0, step_size, scale):
        d = x.shape[-1]
        integ = IntegratorState(x, u, r, energy, grad)
        active = (k < n) & finite_state(integ)
        new, dr = esh_leapfrog(integ, step_size, self.value_and_grad, d - 1, scale)
        new_sum_dr = sum_dr + dr
        point_accept = torch.exp(log_accept_prob(_energy_error(new, energy0, new_sum_dr, d)))
        integ = where(active, new, integ)
        sum_dr = torch.where(active, new_sum_dr, sum_dr)
        sum_accept = torch.where(active, sum_accept + point_accept, sum_accept)
        return (*integ, k + active.to(k.dtype), sum_dr, sum_accept)

    def __call__(self, start, draws, step_size, trajectory_length, scale, max_steps, fetch=(),
                 descend=False):
        """Returns ``(Proposal, host)`` where ``host`` are the values of the scalar tensors
        ``fetch`` (read in the same synchronisation as the number of steps). With
        ``descend`` (warmup's descent phase) a move downhill is accepted (``descent_accept``)."""
        d = start.x.shape[-1]
        u0 = unit_vector(draws.normal)
        n = jittered_num_steps(1.0 - draws.uniform_steps, trajectory_length, step_size, max_steps)
        host = torch.stack([n.max()] + [f.reshape(()).to(n.dtype) for f in fetch]).tolist()
        zero = torch.zeros_like(start.energy)
        carry = (start.x, u0, zero, start.energy, start.grad, zero, zero, zero)
        for _ in range(int(host[0])):
            carry = self.step(*carry, n, start.energy, step_size, scale)
        end = IntegratorState(*carry[:5])
        k, sum_dr, sum_accept = carry[5], carry[6], carry[7]
        energy_error = _energy_error(end, start.energy, sum_dr, d)
        log_alpha = log_accept_prob(energy_error)
        accept = torch.log(draws.uniform_accept) < log_alpha
        accept = descent_accept(accept, descend, finite_state(end), end.energy, start.energy)
        new = where(accept, end, start)
        accept_prob = torch.exp(log_alpha)
        proposal = Proposal(new, accept_prob, k, energy_error, energy_error > DIVERGENCE_THRESHOLD,
                            adaptation_accept_prob(accept_prob, finite_state(end), sum_accept, k))
        return proposal, host[1:]
