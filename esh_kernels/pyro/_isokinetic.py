"""One Metropolis-adjusted isokinetic transition (:mod:`esh_kernels.core.isokinetic`,
``esh_math.md`` §6.4) for a batch of chains, its step recorded once; shared by
``AdjustedESH`` (every transition) and ``ESH`` (warmup phase 1).

Host synchronisation: one per transition, the largest number of steps over the chains
(fetched together with any numbers the caller wants on the host), before the loop. Chains
that have done their steps or hit a non-finite state are frozen by masking while the
others finish, as the NumPyro ``while_loop`` under ``vmap`` does.
"""

import math
from typing import Any, NamedTuple

import torch

from esh_kernels.core import isokinetic
from esh_kernels.core.integrators import IntegratorState
from esh_kernels.pyro._base import where
from esh_kernels.pyro._model import Compiled


class IsokineticDraws(NamedTuple):
    """The random numbers of one transition (injectable for tests)."""

    normal: Any  # (C, d) standard normals for the fresh unit velocity
    uniform_steps: Any  # (C,) uniforms in [0, 1) for the jittered number of steps
    uniform_accept: Any  # (C,) uniforms in [0, 1) for the Metropolis test


def draw_isokinetic(rng, x):
    C, d = x.shape
    return IsokineticDraws(rng.normal(x, (C, d)), rng.uniform(x, (C,)), rng.uniform(x, (C,)))


class IsokineticTransition:
    """The transition with its leapfrog step compiled once (``jit_compile``)."""

    def __init__(self, value_and_grad, example, mode, jit_options=None, ignore_jit_warnings=False):
        """``example = (start IntegratorState, step_size (C,), scale)`` fixes shapes."""
        self.value_and_grad = value_and_grad
        start, step_size, scale = example
        zero = torch.zeros_like(start.energy)
        u = torch.ones_like(start.x) / math.sqrt(start.x.shape[-1])
        args = (start.x, u, zero, start.energy, start.grad, zero, zero, zero, zero, zero + 1.0,
                start.energy, step_size, scale)
        self.step = Compiled(self._step_fn, args, mode, "isokinetic leapfrog step",
                             jit_options, ignore_jit_warnings)

    def _step_fn(self, x, u, r, energy, grad, k, sum_dr, sum_accept, curvature, n, energy0, step_size, scale):
        c = isokinetic.Carry(k, IntegratorState(x, u, r, energy, grad), sum_dr, sum_accept, curvature)
        stepped = isokinetic.step(c, energy0, step_size, scale, self.value_and_grad)
        c = where(isokinetic.running(c, n), stepped, c)
        return (*c.integ, c.k, c.sum_dr, c.sum_accept, c.curvature)

    def __call__(self, start, draws, step_size, trajectory_length, scale, max_steps, fetch=(),
                 descend=False, num_steps=None):
        """Returns ``(Proposal, host)`` where ``host`` are the values of the scalar tensors
        ``fetch`` (read in the same synchronisation as the number of steps). With
        ``descend`` (warmup's descent phase) a move downhill is accepted (``descent_accept``);
        ``num_steps``: a fixed number of steps (None: jittered)."""
        c, n = isokinetic.start(start, draws.normal, draws.uniform_steps, step_size,
                                trajectory_length, max_steps, num_steps)
        host = torch.stack([n.max()] + [f.reshape(()).to(n.dtype) for f in fetch]).tolist()
        flat = (*c.integ, c.k, c.sum_dr, c.sum_accept, c.curvature)
        for _ in range(int(host[0])):
            flat = self.step(*flat, n, start.energy, step_size, scale)
        c = isokinetic.Carry(flat[5], IntegratorState(*flat[:5]), *flat[6:])
        return isokinetic.finish(c, start, draws.uniform_accept, descend), host[1:]
