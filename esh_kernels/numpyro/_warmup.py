"""Warmup bookkeeping shared by the NumPyro kernels: the Stan-style metric windows and
dual-averaging step size, written on top of ``esh_kernels.core.adaptation``.

NumPyro never tells a kernel that warmup ended (``docs/api_notes.md`` §1.3): each kernel
keeps an iteration counter ``i`` and calls these helpers while ``i < num_warmup``.
"""

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from esh_kernels.core.adaptation import (
    dual_averaging_init,
    dual_averaging_update,
    welford_covariance,
    welford_init,
    welford_update,
    window_schedule,
)
from esh_kernels.core.preconditioning import scale_from_covariance


class MetricSchedule(NamedTuple):
    """Static (Python) description of the metric windows for ``num_warmup`` iterations."""

    window_ends: Any  # numpy int array
    start: int
    stop: int

    @classmethod
    def build(cls, num_warmup):
        ends, start, stop = window_schedule(num_warmup)
        return cls(np.asarray(ends, dtype=np.int32), start, stop)

    def collecting(self, i):
        """True while iteration ``i`` feeds the metric estimate."""
        return (i >= self.start) & (i < self.stop)

    def window_end(self, i):
        """True at the last iteration of a metric window."""
        if self.window_ends.size == 0:
            return jnp.zeros_like(i, dtype=bool)
        return jnp.any(i == jnp.asarray(self.window_ends))


def initial_scale(x, dense):
    """Identity preconditioner shaped for ``x`` (vector or matrix)."""
    return jnp.eye(x.shape[-1], dtype=x.dtype) if dense else jnp.ones_like(x)


def metric_update(schedule, i, welford, scale, x):
    """Feed the draw ``x`` to the window estimate; at a window end replace the scale by
    the Cholesky factor (or square root) of the regularised covariance and restart the
    estimate. Returns ``(welford, scale, window_ended)``."""
    welford = welford_update(welford, x, jnp.where(schedule.collecting(i), 1.0, 0.0).astype(x.dtype))
    ended = schedule.window_end(i)
    new_scale = scale_from_covariance(welford_covariance(welford, regularize=True))
    scale = jnp.where(ended, new_scale, scale)
    empty = welford_init(x, dense=welford.m2.ndim == 2)
    welford = type(welford)(*[jnp.where(ended, e, w) for e, w in zip(empty, welford)])
    return welford, scale, ended


def dual_averaging_restart(step_size):
    """Dual averaging started at ``step_size`` and shrinking towards ``10 * step_size``
    (NumPyro/Stan convention: early iterates explore larger steps)."""
    log_step = jnp.log(step_size)
    return dual_averaging_init(log_step, log_step + jnp.log(10.0))


def dual_averaging_step(da_state, accept_prob, target):
    """One dual-averaging update towards ``target`` acceptance; returns the new state."""
    return dual_averaging_update(da_state, target - accept_prob)


__all__ = [
    "MetricSchedule",
    "initial_scale",
    "metric_update",
    "dual_averaging_restart",
    "dual_averaging_step",
    "welford_init",
]
