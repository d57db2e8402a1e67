"""Metropolis acceptance from an energy error (``esh_math.md`` §6.4)."""

from esh_kernels.core.backend import namespace

#: an energy error above this flags a transition or draw divergent (NumPyro's and Stan's
#: default; ``esh_math.md`` §6.4)
DIVERGENCE_THRESHOLD = 1000.0


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


def descent_accept(accept, descend, finite_end, energy_end, energy_start):
    """The accept decision of an isokinetic transition in the descent phase of warmup
    (``esh_math.md`` §7.5): while ``descend``, a proposal that ends finite at a lower
    potential energy than it started from is accepted whatever its energy error;
    ``accept`` (the Metropolis decision) holds otherwise.

    Why: from a start far above the typical set the isokinetic energy error of a step along
    a convex wall is positive at every step size (the trapezoid rule over-estimates the
    energy given to the kinetic term, ``(d-1) dr``, while the velocity turns downhill), so
    an exact kernel never leaves it: on posteriordb's ``arma11`` two chains of four started
    by ``init_to_uniform`` at ``|theta| > 1``, where the potential is 2e57, and stayed there
    for 1000 warmup iterations at every step size from 1e-8 to 2. ESH dynamics itself
    descends such walls (the paper's §3); only the Metropolis test stops it. Warmup draws
    before the first metric window feed nothing but the step size (their draws are
    discarded), so accepting descents there biases no estimate; the step size still adapts
    to the Metropolis acceptance rate.
    """
    return accept | (descend & finite_end & (energy_end < energy_start))


#: an energy error no larger than ``ROUNDING_FACTOR * eps * (|E_start| + |E_end|)`` is read as
#: rounding of the two potential energies it is the difference of (``eps``: the dtype's machine
#: epsilon). Measured on posteriordb's ``earn_height``, ``kilpisjarvi`` and ``blr`` at their
#: initial points and modes: a float32 potential is off its float64 value by 1.5-4 ``eps |E|``
#: (16 ``eps |E|`` where the likelihood's terms cancel), so an energy error of pure rounding
#: stays below about 8 ``eps |E|`` (``esh_math.md`` §7.5).
ROUNDING_FACTOR = 8.0


def beyond_rounding(energy_error, energy_start, energy_end, resolution=0.0):
    """``energy_error``, or 0 where it is within the rounding error of the potential energies
    it is computed from (:data:`ROUNDING_FACTOR`); what step-size adaptation reads in warmup's
    descent phase (``esh_math.md`` §7.5), and TunedHMC's for a chain far up a wall (§7.3,
    "Steep walls").

    Why: far out in the tails the potential energy is huge and, in float32, its rounding
    error is too: on posteriordb's ``earn_height`` a chain started by ``init_to_uniform``
    sits at ``E = 5.6e7``, where float32's spacing is 4 and the energy error of a step reads
    0.1-100 whatever the step size. Dual averaging took that for integration error and
    shrank the step to 1e-9, where no position changes, and the chain stayed there for all of
    warmup and sampling (ESH; R-hat 1.55). Read as 0, the rounding leaves the step free to
    grow until the integration error exceeds it. An error above the floor is used as it is, so
    in float64 (floor ``3.6e-15 |E|``) nothing changes in practice.

    ``resolution`` adds what the rounding of the positions does to the potential energies
    (:func:`position_rounding`), in units of the relative rounding ``eps``.
    """
    xp = namespace(energy_error)
    eps = float(xp.finfo(energy_error.dtype).eps)
    floor = ROUNDING_FACTOR * eps * (xp.abs(energy_start) + xp.abs(energy_end) + resolution)
    rounding = xp.isfinite(floor) & (xp.abs(energy_error) <= floor)
    return xp.where(rounding, 0.0 * energy_error, energy_error)


def position_rounding(integ):
    """``sum_i |g_i x_i|``: the change of the potential energy when each coordinate of the
    position moves by its own relative rounding (times ``eps``, :func:`beyond_rounding`).
    Far up a steep wall it dominates: the position moves on a grid of ``ulp(x)`` while the
    gradient is huge."""
    xp = namespace(integ.x)
    return xp.sum(xp.abs(integ.grad * integ.x), axis=-1)


def mean_accept_update(mean, accept_prob, i, num_warmup):
    """Running mean of the acceptance probability, restarted when sampling starts (the
    ``mean_accept_prob`` field, shown by the progress bar). ``i`` is a Python or a traced
    integer."""
    restart = i == num_warmup
    count = i + 1 - num_warmup * (i >= num_warmup)
    mean = (1.0 - restart) * mean
    return mean + (accept_prob - mean) / count
