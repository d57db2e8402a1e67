"""Metropolis acceptance from an energy error (``esh_math.md`` §6.4)."""

from esh_kernels.core.backend import namespace


def log_accept_prob(energy_error):
    """``min(0, -dH)``; a non-finite energy error is rejected (``-inf``).

    ``dH = dE + dK`` is the change of the total energy along the proposal: for the
    isokinetic dynamics ``dK = (d-1) sum(dr)``, for Euclidean HMC ``dK = |p'|^2/2 - |p|^2/2``.
    """
    xp = namespace(energy_error)
    finite = xp.isfinite(energy_error)
    safe = xp.where(finite, energy_error, 0.0)
    return xp.where(finite, xp.where(safe > 0, -safe, 0.0 * safe), -float("inf"))
