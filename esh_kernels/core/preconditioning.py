"""Preconditioning as a linear change of variables ``x = L y`` (``esh_math.md`` §6.1).

``scale`` is ``L`` with ``L L^T = M^{-1}`` (the estimated posterior covariance): ``None``
(identity), a vector (diagonal ``L``) or a lower-triangular matrix (dense ``L``). The
dynamics run in the whitened frame ``y``: positions move by ``L u`` (:func:`precond_forward`)
and gradients are pulled back by ``L^T g`` (:func:`precond_adjoint`).

Shapes: vectors are ``(..., d)``. A scale with at most as many axes as the vector is
diagonal (broadcast over leading axes); a scale with one axis more is dense, ``(..., d, d)``.
"""

from esh_kernels.core.backend import namespace


def is_dense(scale, x):
    """Whether ``scale`` is a dense ``L`` for vectors like ``x``: one axis more (module docstring)."""
    return scale.ndim == x.ndim + 1


def precond_forward(scale, u):
    """``L u``: a whitened-frame velocity as a position displacement."""
    if scale is None:
        return u
    if is_dense(scale, u):
        return (scale @ u[..., None])[..., 0]
    return scale * u


def precond_adjoint(scale, g):
    """``L^T g``: a position-space gradient in the whitened frame."""
    if scale is None:
        return g
    if is_dense(scale, g):
        return (g[..., None, :] @ scale)[..., 0, :]
    return scale * g


def precond_inverse(scale, x):
    """``L^{-1} x``: a position (or a difference of positions) in the whitened frame."""
    if scale is None:
        return x
    if is_dense(scale, x):
        xp = namespace(scale, x)
        return (xp.linalg.inv(scale) @ x[..., None])[..., 0]
    return x / scale


def scale_diagonal(scale, dense):
    """Marginal scale of each coordinate under the metric ``L`` (a vector, or a dense
    lower-triangular matrix when ``dense``): ``sqrt(diag(L L^T))``."""
    xp = namespace(scale)
    return xp.sqrt(xp.sum(scale * scale, axis=-1)) if dense else xp.abs(scale)


def scale_from_covariance(cov, dense=None):
    """``L`` from a covariance estimate: ``sqrt(var)`` for variances, ``cholesky(cov)`` for a
    covariance matrix. ``dense=None`` tells them apart by ``cov.ndim`` (1: variances), which
    is right for one chain; a batch of chains (variances ``(C, d)``, matrices
    ``(C, d, d)``) passes ``dense`` explicitly."""
    xp = namespace(cov)
    if dense is None:
        dense = cov.ndim != 1
    if not dense:
        return xp.sqrt(cov)
    return xp.linalg.cholesky(cov)
