"""The ESH / isokinetic velocity update with the gradient frozen (``esh_math.md`` §3).

Velocity is stored as a unit direction ``u`` and a log speed ``r`` (``v = e^r u``). With
the gradient ``g`` frozen for a scaled duration ``h``, the sub-flow

    du/dtau = -(1/D) (I - u u^T) g,      dr/dtau = -(1/D) u . g

has a closed form (§3.1). ``D = d`` gives the paper's ESH dynamics (weighted by physical
time, §4); ``D = d - 1`` gives the isokinetic dynamics that leaves ``p(x) Unif(S^{d-1})``
invariant without weights (§2.2, §6).

Numerics (§3.2-3.3), with ``e = -g/|g|``, ``delta = h|g|/D``, ``zeta = e^-delta`` and
``S+- = |u +- e|^2 / 2`` (``= 1 +- u.e`` for unit vectors, but never below zero in floating
point, which is what breaks ``log`` in float32, BlackJAX #1038):

    u_new ∝ (1 - zeta)(S+ + zeta S-) e + 2 zeta u                      (renormalised)
    dr    = delta - log 2 + log(S+ + zeta^2 S-)                         (log-add-exp form)

The log-add-exp form stays exact for ``u = -e`` with ``zeta^2`` underflowing
(``dr = -delta`` exactly). A negative duration (a negative sub-step coefficient, or
running the flow backwards) uses the symmetry of the sub-flow: running ``u`` back for
``|h|`` is running ``-u`` forward for ``|h|`` and negating the result, with the same
``dr``; so ``zeta <= 1`` always and nothing overflows. A zero gradient leaves ``u`` and ``r`` unchanged (``S+- = 1``;
the single-norm shortcut would give ``dr = -log 2`` there). If the unnormalised ``u_new``
is exactly zero (``u = -e`` and ``zeta`` underflowed) the true answer is ``u`` itself.
"""

import math

from esh_kernels.core.backend import namespace, norm

_LOG2 = math.log(2.0)


def _geometry(u, g):
    """``e = -g/|g|`` (zero where ``g = 0``), ``|g|`` and ``S+-`` (shape ``(...)``).

    ``|g|`` is taken in units of ``max |g_i|`` where the plain sum of squares overflows:
    in float32 a gradient above 1.8e19 has an infinite squared norm (posteriordb's
    ``arma11`` at ``|theta| > 1``, potential 3.7e31, gradient 1.2e34: ``e`` was 0 or NaN,
    every step diverged and the chain's step size fell to 0 for good); elsewhere the plain
    norm, to the bit."""
    xp = namespace(u, g)
    gnorm = norm(xp, g)
    big = xp.amax(xp.abs(g), axis=-1, keepdims=True)
    overflowed = ~xp.isfinite(gnorm) & xp.isfinite(big)
    unit = xp.where(overflowed & (big > 0), big, 1.0)
    gnorm = xp.where(overflowed, unit * norm(xp, g / unit), gnorm)
    has_grad = gnorm > 0
    e = -g / xp.where(has_grad, gnorm, 1.0)
    s_plus = xp.where(has_grad, 0.5 * norm(xp, u + e) ** 2, 1.0)[..., 0]
    s_minus = xp.where(has_grad, 0.5 * norm(xp, u - e) ** 2, 1.0)[..., 0]
    return xp, e, gnorm[..., 0], s_plus, s_minus


def ur_half_step(u, r, g, h, D, with_time=False):
    """Exact update of ``(u, r)`` over scaled time ``h`` with the gradient ``g`` frozen.

    Args:
      u: unit velocity, shape ``(..., d)`` (whitened coordinates when preconditioned).
      r: log speed, shape ``(...)``.
      g: gradient of the potential ``E`` at the current position, same frame as ``u``.
      h: scaled duration (scalar or shape ``(...)``); may be negative.
      D: denominator, ``d`` for ESH and ``d - 1`` for the isokinetic dynamics.
      with_time: also return the log physical time spent (needs ``h > 0``).

    Returns:
      ``(u_new, r_new, delta_r)``, plus ``log_dt`` (:func:`log_physical_time`) when
      ``with_time``. ``delta_r = r_new - r`` is computed directly (no cancellation).
    """
    sign = (h >= 0) * 2.0 - 1.0  # works for Python floats and arrays alike
    if hasattr(sign, "ndim") and sign.ndim:
        sign = sign[..., None]
    u = sign * u
    xp, e, gnorm, s_plus, s_minus = _geometry(u, g)
    delta = (h * ((h >= 0) * 2.0 - 1.0)) * gnorm / D
    zeta = xp.exp(-delta)
    u_raw = ((1.0 - zeta) * (s_plus + zeta * s_minus))[..., None] * e + (2.0 * zeta)[..., None] * u
    u_norm = norm(xp, u_raw)
    u_new = sign * xp.where(u_norm > 0, u_raw / xp.where(u_norm > 0, u_norm, 1.0), u)
    delta_r = delta - _LOG2 + xp.logaddexp(xp.log(s_plus), xp.log(s_minus) - 2.0 * delta)
    if not with_time:
        return u_new, r + delta_r, delta_r
    return u_new, r + delta_r, delta_r, _log_time(xp, r, h, delta, s_plus, s_minus)


def _log_time(xp, r, h, delta, s_plus, s_minus):
    # int_0^h e^{r(tau)} dtau = e^r h (sinh delta + c (cosh delta - 1)) / delta
    #   = e^r h e^delta / 2 * [(1 - zeta) / delta] * (S+ + zeta S-)      (§3.5)
    nonzero = delta != 0
    safe = xp.where(nonzero, delta, 1.0)
    ratio = xp.where(nonzero, xp.expm1(-safe) / (-safe), 1.0)
    return (
        r
        + (math.log(h) if isinstance(h, (int, float)) else xp.log(h))
        + delta
        - _LOG2
        + xp.log(ratio)
        + xp.logaddexp(xp.log(s_plus), xp.log(s_minus) - delta)
    )


def log_physical_time(u, r, g, h, D):
    """Log of the physical time ``int e^{r(tau)} dtau`` spent in one u,r sub-step (§3.5).

    Physical time advances as ``dt = e^r dtau`` (the constant ``1/d`` of §2.2 is dropped:
    only ratios of times are ever used). As ``|g| -> 0`` this tends to ``r + log h``.
    Requires ``h > 0``.
    """
    xp, _, gnorm, s_plus, s_minus = _geometry(u, g)
    return _log_time(xp, r, h, h * gnorm / D, s_plus, s_minus)


def kinetic_energy_change(delta_r, D):
    """Change of the kinetic term ``K = D r`` for a change ``delta_r`` of the log speed.

    For ESH (``D = d``) ``H = E + d r`` is the conserved Hamiltonian (§2.1); for the
    isokinetic dynamics (``D = d - 1``) ``(d - 1) sum(dr)`` is the kinetic energy change
    entering the Metropolis ratio (§6.4). Either way the energy error is ``dE + D dr``.
    """
    return D * delta_r
