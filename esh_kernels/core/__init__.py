"""Backend-neutral math shared by every kernel (JAX and torch).

Every function here takes arrays of one backend (``jax.numpy``, ``torch`` or ``numpy``)
and uses only operations common to them, looked up with :func:`namespace`. Random numbers
are never drawn here: callers pass standard normals or uniforms in, so the same inputs give
the same outputs on every backend (tested to 1e-10 in float64).
"""

from esh_kernels.core.backend import namespace
from esh_kernels.core.dynamics import (
    kinetic_energy_change,
    log_physical_time,
    ur_half_step,
)
from esh_kernels.core.integrators import (
    IntegratorState,
    esh_leapfrog,
    euclidean_leapfrog,
)
from esh_kernels.core.preconditioning import (
    precond_adjoint,
    precond_forward,
    precond_inverse,
    scale_from_covariance,
)
from esh_kernels.core.sphere import partial_refresh, refresh_noise_scale, unit_vector
from esh_kernels.core.metropolis import log_accept_prob
from esh_kernels.core.reservoir import reservoir_take

__all__ = [
    "namespace",
    "ur_half_step",
    "log_physical_time",
    "kinetic_energy_change",
    "IntegratorState",
    "esh_leapfrog",
    "euclidean_leapfrog",
    "precond_forward",
    "precond_adjoint",
    "precond_inverse",
    "scale_from_covariance",
    "unit_vector",
    "partial_refresh",
    "refresh_noise_scale",
    "log_accept_prob",
    "reservoir_take",
]
