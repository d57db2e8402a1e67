"""The users' mass-matrix arguments, turned into this package's metric, for both PPLs
(``docs/api_notes.md`` §1; NumPyro's ``HMC`` / ``NUTS`` and Pyro's ``NUTS`` docstrings
define the forms):

* ``dense_mass`` (Pyro: ``full_mass``): ``"auto"`` (the default), ``True`` / ``False``, or a
  list of tuples of site names, each tuple one dense block (sites in no tuple get a
  diagonal metric). The blocks become a 0/1 mask on the estimated covariance
  (``core.adaptation.metric_covariance``); ``"auto"`` a dense layout whose windows each
  choose dense or diagonal (:func:`metric_layout`).
* ``inverse_mass_matrix`` (NumPyro kernels): the initial (with ``adapt_mass_matrix=False``
  the fixed) inverse mass matrix ``M^{-1}``: an array (1-D diagonal or 2-D dense, in the
  order of the flattened unconstrained position) or a dict ``{tuple of site names: array}``.
  It becomes the preconditioner ``L`` with ``L L^T = M^{-1}`` (``esh_math.md`` §6.1: the
  kernels move in the whitened frame ``x = L y``): the square root of a diagonal, the
  Cholesky factor of a matrix.

``sites`` is ``{site name: flat indices}`` of the unconstrained position, which each
adapter builds from its own layout. The argument checks run once, at set-up, in NumPy;
:class:`esh_kernels.core.state_fields.SiteLayout` reads an adapted metric back (any
backend's arrays) in NumPyro's and Pyro's dict layout.
"""

import numpy as np

from esh_kernels.core.adaptation import AUTO_METRIC
from esh_kernels.core.auxiliary import pad_matrix
from esh_kernels.core.backend import namespace


#: ``dense_mass="auto"`` stays diagonal above this many dimensions. Its estimate needs ``3 d``
#: window draws (``core.adaptation.AUTO_DENSE_MIN_DRAWS_PER_DIM``): 450 at 150 dimensions,
#: which the last window of a 1000-iteration warmup holds (500 draws; ESH's phase 1, 450), so
#: above 150 a default warmup could not choose it. Below, the layout is a ``d x d`` factor
#: even where every window keeps the diagonal, and costs ``O(d^2)`` per leapfrog step:
#: bitwise the same draws, and on a 200-D standard Gaussian (no data, the cheapest
#: gradient) 4 chains x (1000 + 1000) took 11 s instead of 7 (AdjustedESH) and 20 s instead
#: of 7 (TunedHMC). Where the windows go dense it pays many times over: on a regression with
#: 140 collinear predictors (``docs/benchmarks.md``, "Notes on the automatic metric up to
#: 150 dimensions") ESS of ``x`` and ``x^2`` per 1000 gradients rose 19-40x. The limit was
#: 50 until 2026-12-06. ``dense_mass=True`` has no limit.
AUTO_DENSE_MAX_DIM = 150


def check_dense_mass(dense_mass):
    """``(dense, blocks)``: whether the metric is a matrix (``"auto"``: chosen by
    :func:`metric_layout` once the dimension is known), and the list of site-name tuples
    of a block-structured one (None otherwise)."""
    if isinstance(dense_mass, str) and dense_mass == AUTO_METRIC:
        return AUTO_METRIC, None
    if isinstance(dense_mass, (bool, np.bool_)):
        return bool(dense_mass), None
    blocks = [dense_mass] if isinstance(dense_mass, tuple) else dense_mass
    if isinstance(blocks, list) and blocks and all(
        isinstance(b, tuple) and b and all(isinstance(n, str) for n in b) for b in blocks
    ):
        return True, [tuple(b) for b in blocks]
    raise ValueError(
        f"`dense_mass` / `full_mass` must be \"auto\", True, False or a list of tuples of site names "
        f"(dense blocks, as in NumPyro's and Pyro's NUTS), got {dense_mass!r}"
    )


def metric_layout(dense, dim, inverse_mass_matrix=None, pooled=False):
    """``(dense, auto)`` for a model of ``dim`` unconstrained dimensions: ``dense`` as
    :func:`check_dense_mass` gave it, except that ``"auto"`` becomes a dense layout whose
    every window chooses its dense estimate or its diagonal (``auto`` True;
    ``core.adaptation.prefers_dense``, ``esh_math.md`` §7.6) up to
    :data:`AUTO_DENSE_MAX_DIM` dimensions, and a diagonal metric above them or where the
    user gives an ``inverse_mass_matrix`` (as with ``dense_mass=False``; a dense one needs
    ``dense_mass=True``) or the windows pool the chains (``pooled``: ``TunedHMC(...,
    cross_chain=True)``, whose pooled windows have no autocorrelation estimate to count
    their effective draws)."""
    if dense != AUTO_METRIC:
        return dense, False
    if inverse_mass_matrix is not None or pooled or not 2 <= dim <= AUTO_DENSE_MAX_DIM:
        return False, False
    return True, True


def _indices(sites, names, what):
    if sites is None:
        raise ValueError(f"{what} names sites, but the position is not a dict of sites "
                         "(a `potential_fn` on an array): give an array instead")
    unknown = [n for n in names if n not in sites]
    if unknown:
        raise ValueError(f"{what}: unknown latent site(s) {unknown}; the model's continuous "
                         f"latent sites are {sorted(sites)}")
    return np.concatenate([sites[n] for n in names])


def block_mask(blocks, sites, dim):
    """0/1 ``(dim, dim)`` mask: ones inside each block and on the diagonal."""
    mask = np.eye(dim)
    for names in blocks:
        ix = _indices(sites, names, "`dense_mass`")
        mask[np.ix_(ix, ix)] = 1.0
    return mask


def initial_scale(inverse_mass_matrix, dense, sites, dim, dtype, auxiliary=0):
    """The preconditioner ``L`` (``L L^T = M^{-1}``) for the user's ``inverse_mass_matrix``:
    a ``(dim,)`` vector when ``dense`` is False, a lower-triangular ``(dim, dim)`` matrix
    otherwise. Sites a dict leaves out keep the identity, and so do the last ``auxiliary``
    coordinates (:mod:`esh_kernels.core.auxiliary`), which the user's matrix does not cover."""
    dim = dim - auxiliary
    if isinstance(inverse_mass_matrix, dict):
        full = np.eye(dim)
        for names, value in inverse_mass_matrix.items():
            names = (names,) if isinstance(names, str) else tuple(names)
            ix = _indices(sites, names, "`inverse_mass_matrix`")
            full[np.ix_(ix, ix)] = _as_matrix(value, len(ix), f"inverse_mass_matrix[{names}]")
        matrix = full
    else:
        matrix = _as_matrix(inverse_mass_matrix, dim, "inverse_mass_matrix")
    matrix = pad_matrix(matrix, auxiliary)
    off_diagonal = matrix - np.diag(np.diag(matrix))
    if not dense:
        if np.any(off_diagonal != 0.0):
            raise ValueError("a dense `inverse_mass_matrix` needs `dense_mass=True` (or the "
                             "sites' block in `dense_mass`); with a diagonal metric give its "
                             "diagonal")
        return np.sqrt(np.diag(matrix)).astype(dtype)
    try:
        return np.linalg.cholesky(matrix).astype(dtype)
    except np.linalg.LinAlgError:
        raise ValueError("`inverse_mass_matrix` is not symmetric positive definite") from None


def _as_matrix(value, size, what):
    """A ``(size, size)`` matrix from a diagonal or a matrix, checked."""
    value = np.asarray(value, dtype=np.float64)
    if value.shape == (size,):
        value = np.diag(value)
    if value.shape != (size, size):
        raise ValueError(f"`{what}` must have shape ({size},) or ({size}, {size}), "
                         f"got {value.shape}")
    if not np.all(np.isfinite(value)) or np.any(np.diag(value) <= 0.0):
        raise ValueError(f"`{what}` must be finite with a positive diagonal")
    if not np.allclose(value, value.T):
        raise ValueError(f"`{what}` must be symmetric")
    return value


def inverse_mass_matrix(scale, dense):
    """``M^{-1} = L L^T`` from the preconditioner ``scale`` (``L``): ``L**2`` for a diagonal
    layout (``(..., d)``), ``L @ L^T`` for a dense one (``(..., d, d)``)."""
    if not dense:
        return scale * scale
    return scale @ namespace(scale).swapaxes(scale, -1, -2)
