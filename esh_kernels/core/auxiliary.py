"""Auxiliary coordinates for models of fewer dimensions than the dynamics need
(``esh_math.md`` §2.3): ESH and isokinetic dynamics are singular in one dimension (the
velocity is a unit vector, ``±1``, and can never change sign), yet NUTS users run 1-D
models and expect the one-word swap to work.

A kernel whose dynamics need ``min_dim`` dimensions samples a model of ``d`` unconstrained
dimensions, ``0 < d < min_dim``, jointly with ``min_dim - d`` independent standard normal
coordinates ``y`` appended to the flat position: the extended target ``p(x) N(y; 0, I)`` has
``p`` as its ``x`` marginal, so dropping ``y`` from every draw leaves draws of ``p`` with the
kernel's own guarantee (exact for ``AdjustedESH``, the step-size bias budget for ``ESH``).
``y`` costs no evaluation of the model: its energy and gradient are closed-form. It starts
at a draw of its own law (a start at exactly 0 gives it a gradient of exactly 0, and with a
step size so large that the velocity update saturates, the velocity then lies exactly along
``x``: a trajectory that turns back meets the gradient exactly head-on, a measure-zero case
where ``AdjustedESH`` accepted a jump up by 44 000 in energy; NumPyro's ``test_diverging``),
and is never shown to the user (the draws, ``z`` and the sites hold ``x`` only; the reported
``potential_energy`` is the model's, :func:`model_energy`).

The functions work on NumPy, JAX and torch arrays alike.
"""

import numpy as np

from esh_kernels.core.backend import namespace


def auxiliary_dims(d, min_dim):
    """How many auxiliary coordinates a model of ``d`` unconstrained dimensions gets: none
    for ``d = 0`` (nothing to sample) or ``d >= min_dim``."""
    return min_dim - d if 0 < d < min_dim else 0


def auxiliary_energy(x, d):
    """``|y|^2 / 2`` of the coordinates of ``x`` (``(..., d + a)``) after the first ``d``:
    the standard normal auxiliary coordinates' potential energy, ``(...)``."""
    y = x[..., d:]
    return 0.5 * (y * y).sum(-1)


def model_energy(x, energy, d):
    """The model's potential energy at ``x`` (``(..., d + a)``) from the dynamics' ``energy``
    there, which counts the auxiliary coordinates' ``|y|^2 / 2``: what the kernels report as
    ``potential_energy`` (NumPyro's extra field, Pyro's diagnostics, ArviZ's ``lp``), so that
    it is the model's own potential whether or not the kernel appended coordinates. A model
    without them gets ``energy`` itself."""
    if x.shape[-1] == d:
        return energy
    return energy - auxiliary_energy(x, d)


def with_new_auxiliary(x, energy, grad, x_new, d):
    """The dynamics' energy and gradient at ``x_new`` from those at ``x`` (``energy``,
    ``grad``), where the two share their first ``d`` (the model's) coordinates and differ only
    in the auxiliary ones: the auxiliary part is closed-form (``|y|^2 / 2``, gradient ``y``),
    so no evaluation of the model is needed (ESH's restart of a Gibbs draw)."""
    xp = namespace(x_new)
    return (model_energy(x, energy, d) + auxiliary_energy(x_new, d),
            xp.concatenate([grad[..., :d], x_new[..., d:]], axis=-1))


def pad_matrix(matrix, auxiliary):
    """A ``(d, d)`` matrix extended by the identity on ``auxiliary`` trailing coordinates
    (NumPy): the auxiliary coordinates' metric is their unit covariance."""
    d = matrix.shape[0]
    full = np.eye(d + auxiliary, dtype=matrix.dtype)
    full[:d, :d] = matrix
    return full
