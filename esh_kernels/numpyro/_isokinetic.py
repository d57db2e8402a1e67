"""One Metropolis-adjusted isokinetic transition (:mod:`esh_kernels.core.isokinetic`,
``esh_math.md`` §6.4) in a ``lax.while_loop``, shared by ``AdjustedESH`` (every transition)
and ``ESH`` (its warmup, see ``core/warmup.py``)."""

import jax.numpy as jnp
from jax import lax, random

from esh_kernels.core import isokinetic


def isokinetic_transition(start, key, step_size, trajectory_length, scale, value_and_grad, max_steps,
                          descend=False, num_steps=None):
    """One transition of one chain from ``start`` (:class:`core.isokinetic.Proposal`, its
    ``num_steps`` an int32); ``num_steps``: a fixed number of steps (None: jittered)."""
    k_u, k_n, k_acc = random.split(key, 3)
    dtype = start.x.dtype
    carry, n = isokinetic.start(
        start, random.normal(k_u, start.x.shape, dtype), random.uniform(k_n, (), dtype),
        step_size, trajectory_length, max_steps, num_steps,
    )
    carry = lax.while_loop(
        lambda c: isokinetic.running(c, n),
        lambda c: isokinetic.step(c, start.energy, step_size, scale, value_and_grad),
        carry,
    )
    prop = isokinetic.finish(carry, start, random.uniform(k_acc, (), dtype), descend)
    return prop._replace(num_steps=prop.num_steps.astype(jnp.int32))
