"""JAX-side names for the shared warmup control in :mod:`esh_kernels.core.warmup`."""

from esh_kernels.core.adaptation import dual_averaging_update
from esh_kernels.core.warmup import (
    MetricSchedule,
    dual_averaging_restart,
    initial_scale,
    metric_update,
)


def dual_averaging_step(da_state, accept_prob, target):
    """One dual-averaging update towards ``target`` acceptance."""
    return dual_averaging_update(da_state, target - accept_prob)


__all__ = [
    "MetricSchedule",
    "dual_averaging_restart",
    "dual_averaging_step",
    "initial_scale",
    "metric_update",
]
