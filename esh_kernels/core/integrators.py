"""One-gradient-per-step leapfrogs (``esh_math.md`` §3.4, §6.1).

Both integrators take a ``value_and_grad(x) -> (E, dE/dx)`` callable from the backend
(``jax.value_and_grad`` of the potential, or torch autograd) and reuse the gradient cached
in the state, so one step costs exactly one gradient evaluation.
"""

from typing import Any, NamedTuple

from esh_kernels.core.backend import namespace
from esh_kernels.core.dynamics import ur_half_step
from esh_kernels.core.preconditioning import precond_adjoint, precond_forward


def per_vector(step_size, x):
    """A step size as a factor of vectors ``x`` of shape ``(..., d)``: unchanged if it is a
    scalar (or a 0-d array, e.g. one chain under ``vmap``); a batch of per-chain step sizes
    of shape ``(...)`` gets a trailing axis so that it scales each chain's vector."""
    if getattr(step_size, "ndim", 0) and step_size.ndim == x.ndim - 1:
        return step_size[..., None]
    return step_size


class IntegratorState(NamedTuple):
    """Position ``x``, velocity (unit ``u`` with log speed ``r``, or momentum ``u`` with
    ``r`` unused), potential ``energy`` and its gradient ``grad`` at ``x``."""

    x: Any
    u: Any
    r: Any
    energy: Any
    grad: Any


def finite_state(integ):
    """Per chain: the energy, gradient and position of ``integ`` are all finite.

    Read from one sum per chain: a NaN or an infinity in any entry makes the sum NaN or
    infinite. (So does a sum of finite entries that overflows the dtype, about 1e308 in
    float64 and 3e38 in float32: a state that large has diverged too.) Two sums and one
    ``isfinite`` instead of three ``isfinite`` and two reductions: half the operations,
    which Pyro's recorded steps pay one by one (``docs/pyro.md``)."""
    xp = namespace(integ.x)
    return xp.isfinite(integ.energy + xp.sum(integ.grad, axis=-1) + xp.sum(integ.x, axis=-1))


def esh_leapfrog(state, step_size, value_and_grad, D, scale=None, with_time=False, position_map=None):
    """Scaled-time ESH leapfrog: half u,r step, full x step, half u,r step (§3.4).

    ``D = d`` is the paper's ESH step, ``D = d - 1`` the isokinetic (MCLMC) step. With a
    preconditioner ``scale`` the velocity lives in the whitened frame (§6.1). The step size
    is a scalar, or one per chain (shape ``(...)`` for a batch of chains ``(..., d)``).

    Returns ``(new_state, delta_r)`` where ``delta_r`` is the total change of ``r`` (the
    energy error of the step is ``dE + D delta_r``). With ``with_time`` it also returns
    ``(log_dt_old, log_dt_new)``: the log physical time (§3.5) of the first half-step,
    spent at the old position, and of the second, spent at the new one. Crediting each
    half to the position where it was spent is the exact time accounting of the split
    flow (the total is ``logaddexp`` of the two).

    ``position_map(x, u) -> (x, u)``, if given, is applied right after the position update,
    before the new gradient is taken: e.g. reflection at box walls (billiards), which
    preserves volume and so keeps the step's invariance and Jarzynski weights exact.
    """
    x, u, r, _, grad = state
    half = 0.5 * step_size
    first = ur_half_step(u, r, precond_adjoint(scale, grad), half, D, with_time)
    u, r = first[0], first[1]
    x = x + per_vector(step_size, x) * precond_forward(scale, u)
    if position_map is not None:
        x, u = position_map(x, u)
    energy, grad = value_and_grad(x)
    second = ur_half_step(u, r, precond_adjoint(scale, grad), half, D, with_time)
    new_state = IntegratorState(x, second[0], second[1], energy, grad)
    delta_r = first[2] + second[2]
    if not with_time:
        return new_state, delta_r
    return new_state, delta_r, (first[3], second[3])


def euclidean_leapfrog(state, step_size, value_and_grad, scale=None):
    """Velocity-Verlet for ``H = E(x) + |p|^2/2`` with the momentum ``p`` (in ``state.u``)
    in the whitened frame: ``p -= (eps/2) L^T g; x += eps L p; p -= (eps/2) L^T g``.
    The step size is a scalar or one per chain (shape ``(...)``)."""
    x, p, r, _, grad = state
    step_size = per_vector(step_size, x)
    half = 0.5 * step_size
    p = p - half * precond_adjoint(scale, grad)
    x = x + step_size * precond_forward(scale, p)
    energy, grad = value_and_grad(x)
    p = p - half * precond_adjoint(scale, grad)
    return IntegratorState(x, p, r, energy, grad)
