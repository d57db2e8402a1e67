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


def adaptation_accept_prob(accept_prob, finite_end, sum_point_accept, num_steps):
    """The acceptance statistic that step-size dual averaging sees for one trajectory.

    A trajectory that stays finite gives its Metropolis ``accept_prob``. One that reached a
    non-finite energy, gradient or position (and ended there, rejected) gives instead the
    mean acceptance ``min(1, e^{-dH_j})`` of the ``num_steps`` points it reached, the
    non-finite one counting 0 (``sum_point_accept`` is their sum), as NUTS's statistic
    averages over its tree. Counting such a trajectory as 0 makes the statistic blind to the
    step size where the non-finite values come from a region of the target (the fraction of
    trajectories that reach it depends on their length, not their step): dual averaging then
    drives the step towards zero (issue 14 case 1, ``esh_math.md`` §10). The mean falls with
    the share of the one failing point, which shrinks as the step does, so the step settles;
    a step so large that the first point already fails still gets 0.
    """
    xp = namespace(accept_prob, sum_point_accept)
    n = num_steps * 1.0
    mean = sum_point_accept / xp.where(n > 0, n, 1.0)
    return xp.where(finite_end, accept_prob, mean)
