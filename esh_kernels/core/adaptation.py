"""Warmup adaptation primitives shared by every kernel (``esh_math.md`` §7, §8).

All are pure functions on small tuples of arrays, so JAX can ``jit``/``vmap`` them and
torch can call them eagerly. The window schedule is plain Python (it depends only on the
number of warmup iterations).
"""

from typing import Any, NamedTuple

from esh_kernels.core.backend import namespace


# ---------------------------------------------------------------------------------------
# Dual averaging (Nesterov 2009; Hoffman & Gelman 2014, the NUTS/Stan step-size rule)


class DualAveragingState(NamedTuple):
    log_step: Any  # current iterate x_t = log step size
    log_step_avg: Any  # averaged iterate (used once adaptation ends)
    error_avg: Any  # running average of (target - statistic)
    count: Any  # number of updates t
    center: Any  # shrinkage point mu, usually log(10 * eps0)


def dual_averaging_init(log_step, center):
    """Start dual averaging at ``log_step`` shrinking towards ``center``."""
    zero = log_step * 0.0
    return DualAveragingState(log_step, log_step, zero, zero, center + zero)


def dual_averaging_update(state, error, t0=10.0, gamma=0.05, kappa=0.75):
    """One update with ``error = target - statistic`` (e.g. target acceptance minus the
    observed one): a positive error shrinks the step size."""
    xp = namespace(state.log_step, error)
    t = state.count + 1.0
    w = 1.0 / (t + t0)
    error_avg = (1.0 - w) * state.error_avg + w * error
    log_step = state.center - xp.sqrt(t) / gamma * error_avg
    eta = t ** (-kappa)
    log_step_avg = eta * log_step + (1.0 - eta) * state.log_step_avg
    return DualAveragingState(log_step, log_step_avg, error_avg, t, state.center)


# ---------------------------------------------------------------------------------------
# Welford mean and (co)variance


class WelfordState(NamedTuple):
    count: Any
    mean: Any  # (d,)
    m2: Any  # (d,) sums of squared deviations, or (d, d) for a dense estimate


def welford_is_dense(state):
    """Whether a window estimate is dense: its ``m2`` has one axis more than its mean (with
    or without a leading chain axis)."""
    return state.m2.ndim == state.mean.ndim + 1


def welford_init(x, dense=False):
    """Empty accumulator shaped like the vector ``x`` (a template, its values unused)."""
    xp = namespace(x)
    zero = x * 0.0
    m2 = zero[..., :, None] * zero[..., None, :] if dense else zero
    return WelfordState(xp.sum(zero, axis=-1), zero, m2)


def welford_update(state, x, weight=1.0):
    """Add ``x`` with ``weight`` in ``{0, 1}`` (0 leaves the state unchanged, so jitted code
    can gate updates without branching). ``weight`` may be batched like ``state.count``."""
    xp = namespace(x)
    w = state.count * 0.0 + weight
    count = state.count + w
    step = (w / xp.where(count > 0, count, 1.0))[..., None]
    delta = x - state.mean
    mean = state.mean + step * delta
    delta2 = x - mean
    if state.m2.ndim == state.mean.ndim + 1:
        m2 = state.m2 + w[..., None, None] * delta[..., :, None] * delta2[..., None, :]
    else:
        m2 = state.m2 + w[..., None] * delta * delta2
    return WelfordState(count, mean, m2)


def stan_jitter(count):
    """Stan's regularisation weight ``1e-3 * 5/(n+5)`` after ``n`` window draws
    (``esh_math.md`` §7.4): :func:`welford_covariance` and :func:`window_gradient_covariance`
    add it, times a variance, to every diagonal entry."""
    return 1e-3 * 5.0 / (count + 5.0)


def welford_covariance(state, regularize=True):
    """Sample (co)variance; with ``regularize``, Stan's shrinkage for a diagonal estimate,
    ``v = n/(n+5) var + 1e-3 * 5/(n+5)`` (keeps every variance positive), and for a dense
    one the same jitter in units of those variances: ``n/(n+5) cov + 1e-3 * 5/(n+5) diag(v)``
    (``esh_math.md`` §7.4; Stan's ``I`` for a coordinate that never moved in the window, whose
    ``v`` is only the jitter). Stan adds ``1e-3 * 5/(n+5) I`` in the model's own units, which
    swamps the narrow direction of a correlated pair with small scales: on posteriordb's
    ``kilpisjarvi`` (slope sd 0.007, correlation -0.9999 with the intercept) it adds 1e-5
    to a conditional variance of 1e-8 and turns the correlation into -0.91, and the
    "whitened" target keeps a direction 30x narrower than its others. The relative
    jitter regularises the correlation matrix as Stan's does an identity-scaled target;
    a dense estimate's diagonal is then ``v (n/(n+5) var/v + 1e-3 * 5/(n+5))``, not ``v``,
    so :func:`diagonal_of` gives a dense state's diagonal metric."""
    xp = namespace(state.m2)
    n = state.count
    cov = state.m2 / xp.where(n > 2.0, n - 1.0, 1.0)[(...,) + (None,) * (state.m2.ndim - n.ndim)]
    if not regularize:
        return cov
    dense = cov.ndim == state.mean.ndim + 1
    variance = diagonal(cov) if dense else cov
    shrink, jitter = _stan_weights(n, variance)
    stan = shrink * variance + jitter
    if not dense:
        return stan
    # a coordinate that never moved in the window has no scale of its own: Stan's units
    units = xp.where(variance > 0.0, stan, 1.0)
    return shrink[..., None] * cov + _diag_matrix(jitter * units)


def _stan_weights(count, variance):
    """Stan's shrinkage ``n/(n+5)`` and jitter ``1e-3 * 5/(n+5)`` after ``n = count`` window
    draws, shaped to broadcast against variances ``(..., d)``."""
    shape = (...,) + (None,) * (variance.ndim - count.ndim)
    return (count / (count + 5.0))[shape], stan_jitter(count)[shape]


def stan_shrinkage(variance, count):
    """Stan's regularised diagonal estimate ``n/(n+5) v + 1e-3 * 5/(n+5)`` of variances
    ``v`` (``(..., d)``) from ``n = count`` window draws (``esh_math.md`` §7.4)."""
    shrink, jitter = _stan_weights(count, variance)
    return shrink * variance + jitter


def gradient_variances(var_x, var_g, fallback):
    """nutpie's diagonal estimate of the posterior variances from draws and the potential's
    gradients at them, ``sqrt(Var(x_i) / Var(dE/dx_i))`` (``nuts-rs``
    ``transform/adapt/diagonal.rs``; ``esh_math.md`` §7.4, §7.7), ``fallback`` where either
    variance is zero or their ratio is not finite. On a Gaussian with variances ``s_i^2``,
    ``dE/dx_i = (x_i - mu_i) / s_i^2``, so it is ``s_i^2`` whatever the draws' own spread:
    draws that drifted through a window, or an ensemble still at its initialisation, do not
    inflate it."""
    xp = namespace(var_x, var_g)
    ok = (var_x > 0) & (var_g > 0)
    ratio = var_x / xp.where(ok, var_g, 1.0)
    ok = ok & xp.isfinite(ratio)
    return xp.where(ok, xp.sqrt(xp.where(ok, ratio, 1.0)), fallback)


def window_gradient_variances(state, gradients, regularize=True):
    """The variances a diagonal metric takes from a window that is not warmup's last
    (``esh_math.md`` §7.4): :func:`gradient_variances` of the window's draws (``state``) and
    of the potential's gradients at them (``gradients``, their diagonal ``WelfordState``,
    :func:`core.warmup.gradients_init`), the draws' variance where it is not defined, with
    Stan's shrinkage (:func:`stan_shrinkage`) unless ``regularize`` is False."""
    var_x = welford_covariance(state, regularize=False)
    estimate = gradient_variances(var_x, welford_covariance(gradients, regularize=False), var_x)
    return stan_shrinkage(estimate, state.count) if regularize else estimate


def diagonal_of(state, regularize=True):
    """The diagonal estimate (Stan's regularised one unless ``regularize`` is False,
    :func:`welford_covariance`) of a window kept as a dense state, as a ``d x d`` matrix:
    the metric a dense layout uses where it keeps the diagonal (too few draws, or
    :func:`prefers_dense` says no)."""
    variances = WelfordState(state.count, state.mean, diagonal(state.m2))
    return _diag_matrix(welford_covariance(variances, regularize=regularize))


def diagonal(m):
    """``(..., d, d)`` -> its diagonal ``(..., d)``."""
    return namespace(m).sum(m * _identity_like(m[..., 0]), axis=-1)


def _diag_matrix(v):
    """``(..., d)`` -> ``(..., d, d)`` with ``v`` on the diagonal."""
    return v[..., :, None] * _identity_like(v)


def has_correlations(scale):
    """Whether a ``d x d`` metric factor (``(..., d, d)``) has a non-zero off-diagonal
    entry: a dense metric, not a diagonal one kept in a dense layout."""
    xp = namespace(scale)
    off = xp.abs(scale * (1.0 - _identity_like(scale[..., 0])))
    return xp.sum(xp.sum(off, axis=-1), axis=-1) > 0


def _identity_like(mean):
    """The ``d x d`` identity for vectors like ``mean`` (``(..., d)``), on its device."""
    xp = namespace(mean)
    return xp.diag(xp.ones_like(mean[(0,) * (mean.ndim - 1)]))


#: a dense metric estimate needs this many window draws per dimension (``esh_math.md`` §7.4)
DENSE_MIN_DRAWS_PER_DIM = 2.0


def metric_covariance(state, num_chains=1, mask=None, tau=None, was_dense=None, gradients=None,
                      regularize=True, last=False):
    """The covariance a window's draws give the metric (``esh_math.md`` §7.4): Stan's
    regularised estimate (:func:`welford_covariance`; the raw sample covariance with
    ``regularize=False``, NumPyro's ``regularize_mass_matrix=False``), except that a dense estimate from
    fewer than ``DENSE_MIN_DRAWS_PER_DIM * b`` draws per chain keeps only its diagonal
    (``num_chains``: how many chains' draws ``state`` pools, see :func:`welford_pool`;
    ``b``: the size of the largest dense block, ``d`` without ``mask``).

    ``mask`` (``(d, d)`` of 0/1, symmetric, ones on the diagonal) makes a block-structured
    dense metric (NumPyro's ``dense_mass=[("a", "b"), ...]``): covariances outside the
    blocks are set to zero, so the Cholesky factor is block-diagonal too. ``mask =
    AUTO_METRIC`` keeps the dense estimate only where :func:`prefers_dense` says so, the
    diagonal otherwise (per chain; ``tau``: the window draws' autocorrelation time, if
    known; ``was_dense``: whether the window ran under a dense metric). With ``gradients``,
    warmup's ``last`` window (the metric sampling runs under) keeps the diagonal where its
    draws show a bending target (:func:`curved`; ``gradients`` then holds the window's
    draws and gradients side by side, :func:`window_gradient_covariance`); earlier windows
    do not ask, as the bend of a chain still far out is that of the road in, not of the
    posterior.

    A dense estimate from ``n`` independent draws in ``d`` dimensions has relative
    eigenvalues down to about ``(1 - sqrt(d/n))^2`` (Marchenko-Pastur; autocorrelated draws
    do worse), zero for ``n <= d``, where Stan's jitter
    leaves ``~1e-3 * 5/n``: the whitened target then has standard deviations of hundreds in
    the unseen directions, a trajectory of ``2 sqrt(d)`` whitened units cannot cross them,
    and the next window, drawn in that frame, does not see them either. With ``n >= 2d``
    the worst relative eigenvalue is about 0.09 (whitened sd 3.4). Measured on a 100-D
    rotated Gaussian with eigenvalues ``logspace(-2, 2)`` (AdjustedESH, 4 chains, 1000 +
    1000, x64): Stan's rule alone R-hat 3.2, min ESS 2; this rule with 2d: R-hat 1.003,
    min ESS 2639 at 4.8 gradients per draw; with 4d: R-hat 1.002, min ESS 3215 at 5.3, but
    its last (500-draw) warmup window ran on a diagonal metric at 75 gradients per draw
    instead of 6. Pooled chains (``TunedHMC``'s
    cross-chain rule) count per chain: their early draws, one leapfrog step each, are
    strongly autocorrelated; counting pooled draws left TunedHMC at 412 gradients per
    draw on that target, counting per chain at 79. Variances (diagonal estimates) are
    returned unchanged.
    """
    xp = namespace(state.m2)
    cov = welford_covariance(state, regularize=regularize)
    if cov.ndim == state.mean.ndim:
        return cov
    block = state.mean.shape[-1]
    if isinstance(mask, str):  # AUTO_METRIC
        if gradients is None:
            dense = prefers_dense(cov, state.count, num_chains, tau, was_dense)
            return xp.where(dense[..., None, None], cov, diagonal_of(state, regularize))
        metric, ok, residual = window_gradient_covariance(state, gradients, regularize)
        # one eigenvalue call for the three matrices: JAX's CPU eigensolver spreads a batch
        # over XLA's thread pool and waits for it, so two such calls that XLA runs at once
        # can take every worker and wait on each other for ever (seen on 2 cores: vectorized
        # chains froze with all threads idle); data dependencies keep them in sequence
        eig = xp.linalg.eigvalsh(xp.stack([correlation(cov), correlation(metric), residual]))
        kappa = condition_of(eig[:2])
        bend = xp.where(ok, eig[2][..., -1], 0.0)  # eigvalsh: ascending
        flat = ~(last & curved(bend, state.count, state.mean.shape[-1], tau))
        dense = flat & prefers_dense(cov, state.count, num_chains, tau, was_dense, kappa=kappa[0])
        use = ok & flat & prefers_dense(metric, state.count, num_chains, kappa=kappa[1])
        chosen = xp.where(dense[..., None, None], cov, diagonal_of(state, regularize))
        return xp.where(use[..., None, None], metric, chosen)
    if mask is not None:
        cov = cov * mask
        block = int(max(mask.sum(axis=-1)))
    needed = DENSE_MIN_DRAWS_PER_DIM * block * num_chains
    enough = (state.count >= needed)[..., None, None]
    return xp.where(enough, cov, diagonal_of(state, regularize))


def gradient_covariance(cov_x, cov_grad, cross=None):
    """The symmetric positive-definite ``S`` with ``S cov_grad S = cov_x`` (both
    ``(..., d, d)``), i.e. the matrix geometric mean
    ``A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2}`` of ``B = cov_x`` and ``A^{-1}``,
    ``A = cov_grad`` (``esh_math.md`` §7.6, §7.7; the dense form of nutpie's
    ``sqrt(Var x / Var grad)``). On a Gaussian with covariance ``Σ``,
    ``dE/dx = Σ^{-1}(x - mu)``, so ``A = Σ^{-1} B Σ^{-1}`` and ``S = Σ`` whatever part of the
    target the draws covered: a chain that random-walked through a window, or an ensemble
    still at its initialisation, gets the posterior's covariance, where ``B`` alone gets
    only the part it saw. Returns ``(S, ok, residual)``; ``ok`` (per matrix) is False where
    no estimate is positive definite and finite (``S`` is then ``B``).

    With ``cross``, the draws' cross-covariance ``Cov(x, g)``:

    * where the geometric mean fails, or ``A`` is too ill-conditioned for the precision
      (``eps cond(A) > GEOMETRIC_MEAN_MAX_ERROR``), ``S`` is the inverse of the gradient's
      linear fit in ``x``, ``H = B^{-1} Cov(x, g)`` (symmetrised in the frame whitened by
      ``B``; ``S = Σ`` on a Gaussian too), where that is positive definite. ``A`` holds the
      posterior's condition number squared (``g = H x``): in float32 a window that covered
      a sliver of a 0.998-correlated ridge (posteriordb's ``earn_height``) gave an ``A`` with
      condition number 5e7 that the eigensolver read as indefinite, or, on a test Gaussian
      like it, variances half the truth; the fit needs only ``B``'s condition number (25)
      and ``H``'s (7e3), and gives the truth to float32 precision.
    * ``residual`` (None without ``cross``) is ``W = B^{1/2} A B^{1/2} - C^T C``,
      ``C = B^{-1/2} Cov(x, g) B^{1/2}``, whose largest eigenvalue is the window's bend
      (:func:`curved`): that of ``B R``, ``R = A - Cov(g, x) B^{-1} Cov(x, g)`` the covariance
      of what is left of the gradient after its linear fit. On a Gaussian ``R = 0`` from
      any draws, however far they drifted; where the curvature varies over the draws, ``R``
      holds the variation, in units of the draws' spread. Its eigenvalues are left to the
      caller, to batch with other eigenvalue calls (:func:`metric_covariance`)."""
    xp = namespace(cov_x)
    # S is equivariant under a diagonal rescaling D (x -> x / D, g -> g D, S -> S / (D D^T)):
    # balance the two diagonals first, D = (Var x / Var g)^(1/4), so that the eigensolvers
    # see correlation-sized matrices, not the model's units squared (float32: scales 30 and
    # 0.007 made Cov(g) too ill-conditioned to invert)
    var_x, var_g = diagonal(cov_x), diagonal(cov_grad)
    usable = (var_x > 0) & (var_g > 0)
    d = xp.where(usable, var_x / xp.where(usable, var_g, 1.0), 1.0) ** 0.25
    outer = d[..., :, None] * d[..., None, :]
    cov_x, cov_grad = cov_x / outer, cov_grad * outer
    # each eigenvalue call takes a stack of the matrices it needs (one call, not two that
    # XLA could run at once: see metric_covariance)
    if cross is None:
        wa, va = xp.linalg.eigh(cov_grad)
    else:
        w, v = xp.linalg.eigh(xp.stack([cov_grad, cov_x]))
        (wa, wb), (va, vb) = w, v
        b_half, b_minus_half, ok_b = _sqrt_and_inverse(wb, vb)
        c = b_minus_half @ (cross / d[..., :, None] * d[..., None, :]) @ b_half
        residual = b_half @ cov_grad @ b_half - xp.swapaxes(c, -1, -2) @ c
        residual = 0.5 * (residual + xp.swapaxes(residual, -1, -2))
        fit = 0.5 * (c + xp.swapaxes(c, -1, -2))
    a_half, a_minus_half, ok_a = _sqrt_and_inverse(wa, va)
    m = a_half @ cov_x @ a_half
    if cross is None:
        wm, vm = xp.linalg.eigh(m)
    else:
        w, v = xp.linalg.eigh(xp.stack([m, fit]))
        (wm, wh), (vm, vh) = w, v
    ok_m = xp.all(wm > 0, axis=-1)
    wm = xp.where(ok_m[..., None], wm, 1.0)
    m_half = (vm * xp.sqrt(wm)[..., None, :]) @ xp.swapaxes(vm, -1, -2)
    s = a_minus_half @ m_half @ a_minus_half
    ok = ok_a & ok_m & _finite(s)
    if cross is not None:
        ok_h = xp.all(wh > 0, axis=-1)
        wh = xp.where(ok_h[..., None], wh, 1.0)
        linear = b_half @ ((vh / wh[..., None, :]) @ xp.swapaxes(vh, -1, -2)) @ b_half
        ok_lin = ok_b & ok_h & _finite(linear)
        # the geometric mean's error grows like eps * cond(A): prefer the fit beyond 1e-3
        fragile = wa[..., -1] * xp.finfo(cov_x.dtype).eps > GEOMETRIC_MEAN_MAX_ERROR * wa[..., 0]
        s = xp.where((ok & ~(fragile & ok_lin))[..., None, None], s, linear)
        residual = xp.where((ok_b & _finite(residual))[..., None, None], residual, 0.0 * residual)
        ok = ok | ok_lin
    s = 0.5 * (s + xp.swapaxes(s, -1, -2)) * outer
    return xp.where(ok[..., None, None], s, cov_x * outer), ok, residual if cross is not None else None


#: the geometric mean of :func:`gradient_covariance` gives way to the linear fit where the
#: float precision times the condition number of the balanced ``Cov(g)`` exceeds this
GEOMETRIC_MEAN_MAX_ERROR = 1e-3


def _sqrt_and_inverse(w, v):
    """``(P^{1/2}, P^{-1/2}, ok)`` of symmetric matrices ``P`` from their eigen-decompositions
    (``w``, ``v``); where ``P`` is not positive definite (``ok`` False) both are of the
    identity's eigenvalues, to be discarded."""
    xp = namespace(w)
    ok = xp.all(w > 0, axis=-1)
    w = xp.where(ok[..., None], w, 1.0)
    vt = xp.swapaxes(v, -1, -2)
    return (v * xp.sqrt(w)[..., None, :]) @ vt, (v / xp.sqrt(w)[..., None, :]) @ vt, ok


def _finite(m):
    """Whether every entry of each ``(..., d, d)`` matrix is finite."""
    xp = namespace(m)
    return xp.all(xp.all(xp.isfinite(m), axis=-1), axis=-1)


def window_gradient_covariance(state, joint, regularize=True):
    """:func:`gradient_covariance` of a window's draws (``state``) and their gradients,
    from ``joint``, the dense ``WelfordState`` of the draws and gradients side by side
    (``[x, g]``, :func:`core.warmup.gradients_init`): from the raw sample covariances
    (Stan's jitter on ``Cov(grad)``, whose correlation matrix has the square of the
    posterior's condition number on a Gaussian, would swamp its narrow directions), then,
    with ``regularize``, the relative jitter of :func:`welford_covariance` on the result.
    Returns ``(S, ok, residual)`` (:func:`gradient_covariance`; ``residual`` sets the bend of
    :func:`curved`)."""
    d = state.mean.shape[-1]
    cov = welford_covariance(joint, regularize=False)
    raw, ok, residual = gradient_covariance(cov[..., :d, :d], cov[..., d:, d:], cov[..., :d, d:])
    if not regularize:
        return raw, ok, residual
    jitter = stan_jitter(state.count)[..., None]
    return raw + _diag_matrix(jitter * diagonal(raw)), ok, residual


#: ``dense_mass="auto"`` (the kernels' default): the metric mask that lets each window
#: choose between its dense estimate and its diagonal (:func:`prefers_dense`)
AUTO_METRIC = "auto"
#: the automatic metric considers a dense estimate from this many window draws per
#: dimension and chain (``esh_math.md`` §7.6, "Why 3d draws"): with 5, a 26-D collinear
#: regression (posteriordb's ``diamonds``) first went dense at the 200-draw window, after
#: a 200-iteration window under its diagonal at 800 gradients per draw (154k-175k warmup
#: gradients per chain, AdjustedESH); with 3 the 100-draw window before it decides (12k-21k)
AUTO_DENSE_MIN_DRAWS_PER_DIM = 3.0
#: ... of which at least this many per dimension effective (draws over their
#: autocorrelation time): fewer leave directions the chain never saw (§7.4)
AUTO_DENSE_MIN_EFFECTIVE_PER_DIM = 1.0
#: ... and takes it where the window's correlation matrix has a condition number this many
#: times what sampling noise alone gives (§7.6)
AUTO_DENSE_CONDITION = 10.0


def correlation(cov):
    """The correlation matrix of each covariance ``cov`` (``(..., d, d)``)."""
    sd = namespace(cov).sqrt(diagonal(cov))
    return cov / (sd[..., :, None] * sd[..., None, :])


def condition_of(eig):
    """Condition number from ascending eigenvalues ``eig`` (``(..., d)``)."""
    return eig[..., -1] / namespace(eig).maximum(eig[..., 0], eig[..., -1] * 1e-12)


def correlation_condition(cov):
    """Condition number of the correlation matrix of each covariance ``cov`` (``(..., d, d)``)."""
    return condition_of(namespace(cov).linalg.eigvalsh(correlation(cov)))


def prefers_dense(cov, count, num_chains=1, tau=None, was_dense=None, kappa=None):
    """Whether a window's covariance ``cov`` (``(..., d, d)``, from ``count`` draws over
    ``num_chains`` chains, ``tau`` their autocorrelation time in draws, None: unknown) is
    better used dense than by its diagonal (``esh_math.md`` §7.6). ``was_dense``: whether
    the metric the window ran under was dense (None: unknown, taken as diagonal).

    A diagonal metric leaves the whitened target with the condition number ``kappa`` of
    the correlation matrix ``R``; a dense estimate from ``n`` independent draws leaves
    about ``((1 + sqrt(d/n)) / (1 - sqrt(d/n)))^2`` (Marchenko-Pastur), which is also what
    ``kappa(R)`` itself reads where the true ``R`` is the identity. Dense where the window
    has ``AUTO_DENSE_MIN_DRAWS_PER_DIM * d`` draws per chain, ``count / tau`` at least
    ``AUTO_DENSE_MIN_EFFECTIVE_PER_DIM * d`` per chain, and ``kappa(R)`` is
    ``AUTO_DENSE_CONDITION`` times that noise level at ``n = count``: the margin covers
    autocorrelated draws, which count for fewer than ``count`` (measured in §7.6).

    A window with too few effective draws cannot tell, and keeps the kind of metric it ran
    under: a chain already dense stays dense (its window's diagonal would be fitted to the
    same few draws and lose the correlation as well; on posteriordb's ``kilpisjarvi``, one
    chain whose dense metric was too narrow random-walked through its last window, ``tau``
    380, and fell back to a diagonal metric with a step size 200x smaller than the other
    chains'). ``kappa``: :func:`correlation_condition` of ``cov``, if already computed."""
    if kappa is None:
        kappa = correlation_condition(cov)
    xp = namespace(kappa)
    d = cov.shape[-1]
    enough = count >= auto_dense_min_draws(d, num_chains)
    ratio = _dimension_ratio(count, d)
    noise = ((1.0 + ratio) / (1.0 - ratio)) ** 2
    correlated = kappa > AUTO_DENSE_CONDITION * noise
    if tau is not None:
        effective = count / xp.maximum(tau, tau * 0.0 + 1.0)
        judged = effective >= AUTO_DENSE_MIN_EFFECTIVE_PER_DIM * d * num_chains
        kept = xp.zeros_like(correlated) if was_dense is None else was_dense
        correlated = xp.where(judged, correlated, kept)
    return enough & correlated


#: ... and keeps the diagonal where the window's bend is this many times the sampling noise
#: of ``Cov(x) Cov(g)`` on a Gaussian (:func:`curved`, §7.6)
AUTO_DENSE_MAX_BEND = 5.0
#: ... judged only in a window with this many effective draws per dimension (:func:`curved`)
BEND_MIN_EFFECTIVE_PER_DIM = 3.0


def curved(bend, count, d, tau=None):
    """Whether a window's draws show a target whose curvature varies too much for a dense
    metric (``esh_math.md`` §7.6): ``bend``, the largest eigenvalue of ``Cov(x) R``
    (``R`` the covariance of the gradient's residual after its best linear fit in ``x``,
    :func:`gradient_covariance`), above ``AUTO_DENSE_MAX_BEND`` times the sampling noise of
    ``Cov(x) Cov(g)`` on a Gaussian at ``count`` draws, ``(1 + sqrt(d/n))^4``, in a window
    with at least ``BEND_MIN_EFFECTIVE_PER_DIM * d`` effective draws (``count / tau``,
    ``tau`` the draws' autocorrelation time; None: not asked). A window with fewer is a
    chain still travelling, whose bend is that of the road (below), and keeps the
    gradients' dense estimate: on ``earn_height`` in float32 the two ESH chains whose last
    windows read bends of 32 and 9.3 had 1.3 and 1.7 effective draws per dimension there
    and sat 6 posterior sds out on the ridge; under the diagonal metric they stayed there.
    ``gp_pois_regr``'s last windows have 5-15 per dimension (all three kernels, seeds 0
    and 1) and the centred eight schools' 7-23.

    ``Cov(x) Cov(g) = Cov(x) (L + R)``, ``L`` the linear part. On a Gaussian ``R = 0`` and
    ``Cov(x) L = (Cov(x) H)^2``: 1 where the draws cover the posterior, about
    ``(1 + sqrt(d/n))^4`` at most from sampling noise, and far above 1 where a chain drifted
    through the window along a narrow ridge (ESH's last phase-1 windows on posteriordb's
    ``earn_height``, 12-52, in float32 and float64), which says nothing about the target's
    shape. ``R`` is what no single metric can whiten: the posterior of a latent Gaussian
    process whose scale parameter multiplies the latent vector (posteriordb's
    ``gp_pois_regr``) reads a bend of 24-34 from 1000 NUTS draws per chain, the centred
    eight schools 9-62 in AdjustedESH's last windows, against 0.01-0.23 for stationary
    windows of regressions, time series and a logistic regression, and 1.1-3.5 for the
    drifting ``earn_height`` windows. A dense metric whitens a bending target by its average
    shape, the step size tuned to the bulk is too large where the curvature is high, and
    the adjusted kernels reject there for dozens of draws in a row (``gp_pois_regr``:
    AdjustedESH R-hat 1.09-1.23, TunedHMC 1.01-1.05, 4 chains x 1000 + 1000). Under the
    diagonal metric the step size is small everywhere and no chain rejects for long: ESH
    1.005, TunedHMC 1.006-1.015, AdjustedESH 1.005-1.008. As ``Cov(x) L`` is positive
    semi-definite, the bend is at most the largest eigenvalue of ``Cov(x) Cov(g)`` (the
    rule's statistic until 2026-12-06): the change can only keep dense a window the
    earlier rule made diagonal."""
    bent = bend > AUTO_DENSE_MAX_BEND * (1.0 + _dimension_ratio(count, d)) ** 4
    if tau is None:
        return bent
    xp = namespace(bent)
    return bent & (count >= BEND_MIN_EFFECTIVE_PER_DIM * d * xp.maximum(tau, tau * 0.0 + 1.0))


def _dimension_ratio(count, d):
    """``sqrt(d / n)`` for a window of ``n = count`` draws (``n`` taken as at least
    ``d + 1``): the Marchenko-Pastur ratio that sets the sampling noise of a ``d x d``
    covariance estimate (:func:`prefers_dense`, :func:`curved`)."""
    xp = namespace(count)
    return xp.sqrt(d / xp.maximum(count, count * 0.0 + d + 1.0))


def auto_dense_min_draws(d, num_chains=1):
    """Window draws the automatic metric needs before it may choose a dense estimate in ``d``
    dimensions (:func:`prefers_dense`): ``AUTO_DENSE_MIN_DRAWS_PER_DIM`` per dimension and chain."""
    return AUTO_DENSE_MIN_DRAWS_PER_DIM * d * num_chains


# ---------------------------------------------------------------------------------------
# Stan-style warmup windows


def window_schedule(num_warmup, init_buffer=75, term_buffer=50, base_window=25, stretch=3.0):
    """Ends (inclusive iteration indices) of the slow metric-adaptation windows, and the
    first iteration of the final fast buffer, Stan's schedule (window lengths doubling).
    A window is stretched to the end where less than ``stretch - 1`` times its length would
    be left after it: Stan's 3 (the next, doubled window must fit); 2 ends a window wherever
    the rest is at least as long (``core.warmup.MetricSchedule.build``'s ``continue_last``).

    Returns ``(window_ends, metric_start, metric_stop)``: the metric is estimated from
    iterations ``metric_start <= i < metric_stop`` and re-estimated (its accumulator reset)
    after each ``i`` in ``window_ends``. With fewer than 20 warmup iterations no metric is
    adapted.
    """
    if num_warmup < 20:
        return [], num_warmup, num_warmup
    if init_buffer + term_buffer + base_window > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = int(0.1 * num_warmup)
        base_window = num_warmup - init_buffer - term_buffer
    stop = num_warmup - term_buffer
    ends, start, size = [], init_buffer, base_window
    while start < stop:
        if stretch * size > stop - start:  # the last window absorbs what is left
            size = stop - start
        ends.append(start + size - 1)
        start, size = start + size, 2 * size
    return ends, init_buffer, stop


# ---------------------------------------------------------------------------------------
# Step size from the energy-error variance (unadjusted kernels, §7.1)


class StepSizePredictorState(NamedTuple):
    weighted_sum: Any  # X: decayed sum of w * xi / eps^6
    weight_sum: Any  # W: decayed sum of w
    max_step: Any  # cap lowered after a divergence


def step_size_predictor_init(step_size):
    """Empty predictor (no cap)."""
    zero = step_size * 0.0
    return StepSizePredictorState(zero, zero, zero + float("inf"))


def step_size_predictor_update(
    state,
    step_size,
    energy_error_sq_per_dim,
    diverged,
    desired_energy_var=5e-4,
    trust_in_estimate=1.5,
    num_effective_samples=150.0,
    non_finite=False,
):
    """One update of the ``Var[dH]/d`` step-size rule (§7.1); returns ``(state, step)``.

    ``xi = dH^2 / (d * desired_energy_var)`` measures the energy error of a step of size
    ``eps`` against the target; for a second-order integrator ``Var[dH] ∝ eps^6`` (per
    step, before averaging), so each observation predicts ``eps * xi^(-1/6)``. Observations
    far from the target are down-weighted (they extrapolate badly), and old ones decay with
    ``gamma = (n_eff - 1)/(n_eff + 1)``. A divergence (``diverged``) lowers the cap to
    ``0.8 eps`` and contributes nothing else. A divergence that reached a non-finite energy,
    gradient or position (``diverged & non_finite``) only backs the next step off to
    ``0.8 eps``, with the cap and the estimate left alone, so the next finite observation
    restores the predicted step: such values usually come from a region of the target (a
    NaN density), which a draw covering a fixed distance reaches at any step size, and a
    cap lowered at each would ratchet the step to zero (issue 14 case 1, ``esh_math.md``
    §10, BlackJAX #973). A step so large that it overflows keeps being backed off while it
    does.
    """
    xp = namespace(step_size, energy_error_sq_per_dim)
    gamma = (num_effective_samples - 1.0) / (num_effective_samples + 1.0)
    wall = diverged & non_finite
    ok = xp.logical_not(diverged) & xp.isfinite(energy_error_sq_per_dim)
    xi = xp.where(ok, energy_error_sq_per_dim, 0.0) / desired_energy_var + 1e-8
    w = xp.exp(-0.5 * (xp.log(xi) / (6.0 * trust_in_estimate)) ** 2)
    w = xp.where(ok, w, 0.0)
    weighted_sum = gamma * state.weighted_sum + w * xi / step_size**6
    weight_sum = gamma * state.weight_sum + w
    max_step = xp.where(ok | wall, state.max_step, 0.8 * step_size)
    has_info = weight_sum > 0
    predicted = (weighted_sum / xp.where(has_info, weight_sum, 1.0)) ** (-1.0 / 6.0)
    new_step = xp.where(has_info, predicted, step_size)
    new_step = xp.minimum(xp.where(ok, new_step, 0.8 * step_size), max_step)
    return StepSizePredictorState(weighted_sum, weight_sum, max_step), new_step


# ---------------------------------------------------------------------------------------
# Trajectory lengths


def jittered_num_steps(uniform, trajectory_length, step_size, max_steps, num_steps=None):
    """Number of steps for one proposal: ``ceil(U * 2 L / eps)``, ``U ~ Uniform(0, 1]``,
    clipped to ``[1, max_steps]``. The mean is about ``L / eps`` steps; jitter avoids the
    resonances of a fixed length (Neal 2011; MAMS §6.4 uses the same idea). ``num_steps``
    (HMC's argument, where the user fixed it): that many steps, at most ``max_steps``."""
    xp = namespace(uniform, trajectory_length, step_size)
    if num_steps is not None:
        return uniform * 0.0 + float(min(num_steps, max_steps))
    n = xp.ceil(uniform * 2.0 * trajectory_length / step_size)
    return xp.clip(n, 1.0, max_steps)


# ---------------------------------------------------------------------------------------
# Pooling Welford accumulators (cross-chain metric estimates)


def welford_pool(state):
    """Merge a batch of Welford accumulators along their leading (chain) axis into one
    (Chan et al.'s parallel update): ``n = sum n_c``, ``mean = sum n_c mean_c / n``,
    ``m2 = sum m2_c + sum n_c (mean_c - mean)(mean_c - mean)^T`` (diagonal: squares).

    The result is the accumulator one chain would hold had it seen every chain's draws,
    so :func:`welford_covariance` of it is the pooled (co)variance estimate.
    """
    xp = namespace(state.mean)
    count = xp.sum(state.count, axis=0)
    safe = xp.where(count > 0, count, 1.0)
    mean = xp.sum(state.count[..., None] * state.mean, axis=0) / safe
    delta = state.mean - mean
    if state.m2.ndim == state.mean.ndim + 1:
        spread = state.count[..., None, None] * delta[..., :, None] * delta[..., None, :]
    else:
        spread = state.count[..., None] * delta * delta
    m2 = xp.sum(state.m2, axis=0) + xp.sum(spread, axis=0)
    return WelfordState(count, mean, m2)


def forgetful_mean_update(state, x, horizon):
    """Running mean of ``x`` that remembers about the last ``horizon`` draws:
    ``n <- min(n + 1, horizon)``, ``mean <- mean + (x - mean) / n`` (``m2`` is left alone).

    An exact mean until ``horizon`` draws, then an exponential moving average with weight
    ``1/horizon``. With ``horizon`` growing like half the iteration count it tracks about
    the last half of a warmup run: early, transient values are forgotten instead of biasing
    the estimate for the rest of the run. ``x`` has a trailing axis (use shape ``(1,)`` for
    a scalar statistic).
    """
    xp = namespace(x)
    horizon = state.count * 0.0 + horizon  # an array like count (torch has no maximum(tensor, float))
    count = xp.minimum(state.count + 1.0, xp.where(horizon > 1.0, horizon, 1.0))
    mean = state.mean + (x - state.mean) / count[..., None]
    return WelfordState(count, mean, state.m2)


# ---------------------------------------------------------------------------------------
# Quasi-random jitter and the ChEES trajectory-length criterion (esh_math.md §8)


def halton(index, max_bits=24):
    """Base-2 Halton (van der Corput) number ``(index + 1)`` in ``(0, 1)``, BlackJAX's
    ``halton_sequence``: reverses the bits of ``index + 1`` behind the binary point.

    ``index`` is an integer array (or Python int). The first values are 1/2, 1/4, 3/4,
    1/8, 5/8, ...: every block of ``2^k`` consecutive values covers ``(0, 1)`` evenly,
    so jittered trajectory lengths average out much faster than with uniform noise.
    Only the lowest ``max_bits`` bits are used (the sequence repeats after
    ``2^max_bits`` values; 24 bits keep ``index // 2^b`` inside int32).
    """
    k = index + 1
    out = 0.0
    for b in range(max_bits):
        out = out + ((k // (2**b)) % 2) * (0.5 / 2**b)
    return out


def chees_gradient(
    x_start,
    x_proposal,
    velocity,
    duration,
    accept_prob,
    valid,
    center_start=None,
    center_proposal=None,
    normalize=True,
):
    """Estimate of ``d ChEES / d log T`` (Hoffman, Radul & Sountsov 2021), ``esh_math.md`` §8.

    ``ChEES(T) = 1/4 E[(|x' - E x'|^2 - |x - E x|^2)^2]``, with ``x'`` the (pre-MH)
    proposal of a trajectory of length ``h T`` started at ``x``. Per proposal ``c``::

        g_c = t_c (|x'_c - m'|^2 - |x_c - m|^2) <x'_c - m', v'_c>

    where ``t_c = h_c T`` is the integration time actually used (the chain rule factor of
    ``d/d log T``) and ``v'_c = dx'/dt`` the velocity at the end of the trajectory. This
    is the ASCENT direction: positive means longer trajectories increase ChEES. (BlackJAX
    flips the momentum at the end of the trajectory and so gets the negative.)

    Arguments (leading axis = proposals/chains, ``C >= 1``; all in the whitened frame,
    where the metric is the identity, so that ``v' = p'``):

    :param x_start: ``(C, d)`` positions at the start of the trajectories.
    :param x_proposal: ``(C, d)`` proposals (before the accept/reject step).
    :param velocity: ``(C, d)`` velocities (whitened momenta) at the proposals.
    :param duration: ``(C,)`` integration times ``n_c * eps``.
    :param accept_prob: ``(C,)`` Metropolis acceptance probabilities (the weights).
    :param valid: ``(C,)`` bool; False (divergent or non-finite) drops a proposal.
    :param center_start: estimate of ``E x`` (``(d,)`` or ``(C, d)``). Default: the mean
        of ``x_start`` over the batch (the cross-chain ensemble estimate).
    :param center_proposal: estimate of ``E x'``. Default: the acceptance-weighted mean
        of the valid proposals. A single chain passes its running mean for both.
    :param normalize: True: return ``sum_c a_c g_c / sum_c a_c`` (the ensemble average,
        BlackJAX). False: return ``sum_c a_c g_c`` (a single chain averaged over time by
        the optimizer, where each iteration's weight is its acceptance probability).
    :returns: a scalar (0 where no proposal carries weight).
    """
    xp = namespace(x_start, x_proposal, velocity)
    ok = valid & xp.isfinite(accept_prob) & xp.all(xp.isfinite(x_proposal), axis=-1)
    ok = ok & xp.all(xp.isfinite(velocity), axis=-1)
    weight = xp.where(ok, accept_prob, 0.0)
    x1 = xp.where(ok[..., None], x_proposal, 0.0)
    v1 = xp.where(ok[..., None], velocity, 0.0)
    if center_start is None:
        center_start = xp.sum(x_start, axis=0) / x_start.shape[0]
    if center_proposal is None:
        total = xp.sum(weight, axis=0)
        center_proposal = xp.sum(weight[..., None] * x1, axis=0) / xp.where(
            total > 0, total, 1.0
        )
    d1 = x1 - center_proposal
    d0 = x_start - center_start
    change = xp.sum(d1 * d1, axis=-1) - xp.sum(d0 * d0, axis=-1)
    g = duration * change * xp.sum(d1 * v1, axis=-1)
    g = xp.where(ok, g, 0.0)
    num = xp.sum(weight * g, axis=0)
    if not normalize:
        return num
    den = xp.sum(weight, axis=0)
    return xp.where(den > 0, num / xp.where(den > 0, den, 1.0), 0.0)


class ChEESState(NamedTuple):
    log_length: Any  # Adam iterate: log trajectory length
    log_length_avg: Any  # moving average of log_length (the length used)
    moment1: Any  # Adam first moment of the gradient
    moment2: Any  # Adam second moment
    count: Any  # number of optimiser updates
    avg_count: Any  # number of updates since the moving average was (re)started


def chees_init(trajectory_length):
    """Trajectory-length optimiser started at ``trajectory_length``."""
    xp = namespace(trajectory_length)
    log_t = xp.log(trajectory_length)
    zero = log_t * 0.0
    return ChEESState(log_t, log_t, zero, zero, zero, zero)


def chees_update(
    state,
    gradient,
    learning_rate=0.025,
    beta1=0.0,
    beta2=0.95,
    decay_rate=0.5,
    max_update=0.35,
    epsilon=1e-20,
):
    """One ascent step of Adam on ``log T`` with the ChEES gradient, then the iterate
    average used by TFP and BlackJAX (``esh_math.md`` §8).

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2`` (both bias-corrected); the step
    ``lr m / sqrt(v + epsilon)`` is clipped to ``+-max_update`` and a non-finite gradient
    or step is skipped. The defaults are TFP's (``b1 = 0``: RMSProp, ``1 - b2 = 0.05``,
    ``lr = 0.025``, clip ``0.35 ~ log(2)/2``). The length to use is
    ``exp(log_length_avg)``, ``avg <- (1 - w) avg + w log T`` with ``w = k^(-decay_rate)``,
    ``k`` the number of updates since the average was (re)started (:func:`chees_restart_average`).
    """
    xp = namespace(state.log_length, gradient)
    t = state.count + 1.0
    finite = xp.isfinite(gradient)
    g = xp.where(finite, gradient, 0.0)
    m1 = beta1 * state.moment1 + (1.0 - beta1) * g
    m2 = beta2 * state.moment2 + (1.0 - beta2) * g * g
    m1_hat = m1 / (1.0 - beta1**t)
    m2_hat = m2 / (1.0 - beta2**t)
    step = learning_rate * m1_hat / xp.sqrt(m2_hat + epsilon)
    step = xp.where(finite & xp.isfinite(step), step, 0.0)
    step = xp.clip(step, -max_update, max_update)
    log_length = state.log_length + step
    k = state.avg_count + 1.0
    w = k ** (-decay_rate)
    log_length_avg = (1.0 - w) * state.log_length_avg + w * log_length
    m1 = xp.where(finite, m1, state.moment1)
    m2 = xp.where(finite, m2, state.moment2)
    return ChEESState(log_length, log_length_avg, m1, m2, t, k)


def chees_restart_average(state, restart):
    """Forget the iterate average where ``restart`` is true (e.g. after the metric changed,
    which changes the optimal length): the next update sets it to the iterate."""
    xp = namespace(state.avg_count)
    return state._replace(avg_count=xp.where(restart, 0.0 * state.avg_count, state.avg_count))


# ---------------------------------------------------------------------------------------
# Autocorrelation time of the slowest statistic, online (AdjustedESH's trajectory length)


class DecorrelationState(NamedTuple):
    """Accumulators over a chain's draws for the ``2d`` features ``x`` and
    ``(x - mean)^2``: the previous draw's features, the sum of squared lag-1 differences,
    and a Welford estimate of the features' variance."""

    previous: Any  # (..., 2d)
    diff_sq: Any  # (..., 2d)
    draws: WelfordState  # over draws, (..., 2d)


def decorrelation_init(x):
    """Empty accumulators for draws like ``x`` (``(..., d)``, a template)."""
    xp = namespace(x)
    features = xp.concatenate([x, x], axis=-1) * 0.0
    return DecorrelationState(features, features, welford_init(features))


def decorrelation_update(state, x, weight=1.0):
    """Add the draw ``x`` (``weight`` in ``{0, 1}`` gates it, as in ``welford_update``).
    The centre of the squared feature is the running mean of the draws so far."""
    xp = namespace(x)
    d = x.shape[-1]
    seen = state.draws.count[..., None] > 0
    centre = xp.where(seen, state.draws.mean[..., :d], x)
    features = xp.concatenate([x, (x - centre) ** 2], axis=-1)
    w = state.draws.count * 0.0 + weight
    step = (w[..., None] > 0) & seen
    diff_sq = state.diff_sq + xp.where(step, (features - state.previous) ** 2, 0.0)
    previous = xp.where(w[..., None] > 0, features, state.previous)
    return DecorrelationState(previous, diff_sq, welford_update(state.draws, features, w))


def _autocorrelation_times(state):
    """Per feature (``x`` then ``(x - mean)^2``), the lag-1 estimate of the integrated
    autocorrelation time (see :func:`slowest_autocorrelation_time`); 0 where nothing moved."""
    xp = namespace(state.diff_sq)
    n = state.draws.count
    var = state.draws.m2 / xp.where(n > 1, n - 1.0, 1.0)[..., None]
    mean_diff_sq = state.diff_sq / xp.where(n > 1, n - 1.0, 1.0)[..., None]
    moved = mean_diff_sq > 0
    return xp.where(moved, 4.0 * var / xp.where(moved, mean_diff_sq, 1.0) - 1.0, 0.0)


def position_autocorrelation_time(state):
    """Mean over coordinates of the autocorrelation time of ``x`` alone, in draws (what
    divides a window's draw count into effective draws for its covariance, §7.6); 0
    before 3 draws."""
    xp = namespace(state.diff_sq)
    tau = _autocorrelation_times(state)
    mean = xp.mean(tau[..., : tau.shape[-1] // 2], axis=-1)
    return xp.where(state.draws.count >= 3, mean, 0.0 * mean)


def slowest_autocorrelation_time(state, allowed=(1.0, 1.0)):
    """Integrated autocorrelation time, in draws, of the slower feature set, each relative
    to the draws it is allowed: the larger of ``mean_i tau(x_i) / allowed[0]`` and ``mean_i
    tau((x_i - mean_i)^2) / allowed[1]`` (plain times with the default ``(1, 1)``). Each
    ``tau`` is the lag-1 (AR(1)) estimate ``tau = (1 + rho_1)/(1 - rho_1) = 4 Var /
    E[(f_t - f_{t-1})^2] - 1`` (``esh_math.md`` §7.5). Unlike a batch-means estimate it does
    not saturate at the batch size, so a chain in the random-walk regime (``rho_1`` near 1)
    reads as slow as it is. Means over coordinates, not the maximum: from the 50-500 draws
    of a metric window the maximum over 200 features of a 100-D Gaussian read 20 where the
    ESS of every feature said 3. Separate allowances because the two feature sets answer a
    longer trajectory differently on a Gaussian: ``tau(x)`` falls (towards antithetic
    draws), ``tau(x^2)`` rises past the typical-set length (§7.5). Returns 0 before 3 draws
    or where nothing moved."""
    xp = namespace(state.diff_sq)
    tau = _autocorrelation_times(state)
    d = tau.shape[-1] // 2
    slowest = xp.maximum(xp.mean(tau[..., :d], axis=-1) / allowed[0],
                         xp.mean(tau[..., d:], axis=-1) / allowed[1])
    return xp.where(state.draws.count >= 3, slowest, 0.0 * slowest)
