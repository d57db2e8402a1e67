"""Unit velocities and their partial refresh (``esh_math.md`` §3.4, §6.3).

Randomness comes in as standard normals ``z`` drawn by the caller's backend.
"""

from esh_kernels.core.backend import namespace, norm


def unit_vector(z):
    """A uniform direction on the sphere from a standard normal ``z`` (``z / |z|``)."""
    xp = namespace(z)
    return z / norm(xp, z)


def refresh_noise_scale(duration, decoherence_length, d):
    """``nu = sqrt((exp(2 s / L) - 1) / d)`` for a refresh over scaled time ``s`` (§6.3).

    The refreshed direction ``(u + nu z)/|u + nu z|`` has ``E[u_new . u] ~ exp(-s/L)``, so
    ``L`` is the distance over which the direction decorrelates. ``L = inf`` gives 0.
    """
    xp = namespace(duration, decoherence_length)
    return xp.sqrt(xp.expm1(2.0 * duration / decoherence_length) / d)


def partial_refresh(u, z, nu):
    """Partial refresh ``(u + nu z)/|u + nu z|``; it leaves ``Unif(S^{d-1})`` invariant."""
    xp = namespace(u, z)
    w = u + (nu[..., None] if hasattr(nu, "ndim") and nu.ndim else nu) * z
    return w / norm(xp, w)
