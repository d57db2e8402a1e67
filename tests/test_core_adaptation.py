"""Tests of the warmup adaptation primitives (``esh_kernels.core.adaptation``)."""

import math

import numpy as np
import pytest

from esh_kernels.core.adaptation import (
    AUTO_DENSE_MIN_DRAWS_PER_DIM,
    AUTO_METRIC,
    DualAveragingState,
    diagonal_of,
    gradient_covariance,
    dual_averaging_init,
    has_correlations,
    dual_averaging_update,
    decorrelation_init,
    decorrelation_update,
    jittered_num_steps,
    metric_covariance,
    prefers_dense,
    slowest_autocorrelation_time,
    step_size_predictor_init,
    step_size_predictor_update,
    welford_covariance,
    welford_init,
    welford_update,
    window_schedule,
)


# ---------------------------------------------------------------------------------------
# Dual averaging


def _run_dual_averaging(accept, target, eps0, n, rng=None):
    state = dual_averaging_init(np.float64(math.log(eps0)), np.float64(math.log(10 * eps0)))
    for _ in range(n):
        a = accept(math.exp(state.log_step))
        if rng is not None:
            a = float(rng.uniform() < a)  # a noisy 0/1 observation of the acceptance
        state = dual_averaging_update(state, target - a)
    return state


@pytest.mark.parametrize("target", [0.65, 0.8, 0.9])
@pytest.mark.parametrize("eps0", [0.01, 1.0, 5.0])
def test_dual_averaging_hits_target_acceptance(target, eps0):
    accept = lambda eps: math.exp(-eps * eps)  # noqa: E731
    eps_star = math.sqrt(-math.log(target))
    state = _run_dual_averaging(accept, target, eps0, 2000)
    assert state.count == 2000
    eps_avg = math.exp(state.log_step_avg)
    assert abs(eps_avg / eps_star - 1) < 0.02
    assert abs(accept(eps_avg) - target) < 0.01
    # the error average goes to zero at the fixed point
    assert abs(state.error_avg) < 0.01


def test_dual_averaging_noisy_acceptance():
    rng = np.random.default_rng(3)
    target = 0.8
    eps_star = math.sqrt(-math.log(target))
    state = _run_dual_averaging(lambda e: math.exp(-e * e), target, 1.0, 5000, rng)
    assert abs(math.exp(state.log_step_avg) / eps_star - 1) < 0.1


def test_dual_averaging_first_updates_match_formula():
    """Hand-computed NUTS (Hoffman & Gelman 2014, Alg. 5) updates."""
    mu, t0, gamma, kappa = math.log(10 * 0.5), 10.0, 0.05, 0.75
    state = dual_averaging_init(np.float64(math.log(0.5)), np.float64(mu))
    hbar, xbar = 0.0, math.log(0.5)
    for t, err in enumerate([0.3, -0.1, 0.2, 0.05], start=1):
        state = dual_averaging_update(state, np.float64(err))
        hbar = (1 - 1 / (t + t0)) * hbar + err / (t + t0)
        x = mu - math.sqrt(t) / gamma * hbar
        xbar = t**-kappa * x + (1 - t**-kappa) * xbar
        assert state.error_avg == pytest.approx(hbar, abs=1e-14)
        assert state.log_step == pytest.approx(x, abs=1e-12)
        assert state.log_step_avg == pytest.approx(xbar, abs=1e-12)
    assert isinstance(state, DualAveragingState)
    # a positive error (acceptance below target) lowers the step size
    s0 = dual_averaging_init(np.float64(0.0), np.float64(0.0))
    assert dual_averaging_update(s0, np.float64(0.2)).log_step < 0.0
    assert dual_averaging_update(s0, np.float64(-0.2)).log_step > 0.0


# ---------------------------------------------------------------------------------------
# Welford


@pytest.mark.parametrize("dense", [False, True])
def test_welford_matches_numpy(dense):
    rng = np.random.default_rng(4)
    n, d = 300, 5
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d) * 10
    weights = (rng.uniform(size=n) < 0.7).astype(np.float64)
    state = welford_init(x[0], dense=dense)
    for xi, wi in zip(x, weights):
        state = welford_update(state, xi, wi)
    kept = x[weights == 1]
    m = len(kept)
    assert state.count == m
    np.testing.assert_allclose(state.mean, kept.mean(axis=0), rtol=0, atol=1e-10)
    cov = np.cov(kept, rowvar=False)
    expected = cov if dense else np.diag(cov)
    cov_est = welford_covariance(state, regularize=False)
    np.testing.assert_allclose(cov_est, expected, rtol=0, atol=1e-10)
    reg = welford_covariance(state, regularize=True)
    jitter = 1e-3 * 5 / (m + 5)
    stan = m / (m + 5) * np.diag(cov) + jitter  # Stan's regularised variances
    # dense: Stan's jitter in units of those variances (esh_math.md §7.4)
    expected_reg = m / (m + 5) * expected + (jitter * np.diag(stan) if dense else jitter)
    np.testing.assert_allclose(reg, expected_reg, rtol=0, atol=1e-10)
    if dense:
        np.testing.assert_allclose(reg, reg.T, rtol=0, atol=1e-14)
        assert np.all(np.linalg.eigvalsh(reg) > 0)


def test_dense_regularisation_keeps_a_small_scale_correlation():
    """Stan's jitter ``1e-3 * 5/(n+5) I`` is in the model's units; on a correlated pair with
    a small scale (posteriordb's ``kilpisjarvi``: intercept sd 30, slope sd 0.007,
    correlation -0.9999) it swamps the narrow direction. The dense estimate's jitter is
    relative to each variance, so the regularised correlation and the conditional variance
    are those of the draws, whatever the units (``esh_math.md`` §7.4)."""
    rng = np.random.default_rng(3)
    n, rho, sd = 500, -0.9999, np.array([30.0, 0.007])
    z = rng.normal(size=(n, 2)) @ np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]])).T
    for scale in (sd, np.ones(2)):
        state = welford_init(z[0] * scale, dense=True)
        for zi in z:
            state = welford_update(state, zi * scale)
        sample = welford_covariance(state, regularize=False)
        reg = welford_covariance(state, regularize=True)
        conditional = lambda c: c[1, 1] - c[0, 1] ** 2 / c[0, 0]  # noqa: E731
        assert 0.99 < conditional(reg) / conditional(sample) < 1.1
        corr = reg[0, 1] / np.sqrt(reg[0, 0] * reg[1, 1])
        np.testing.assert_allclose(corr, sample[0, 1] / np.sqrt(sample[0, 0] * sample[1, 1]), rtol=2e-5)
        # the diagonal a dense layout falls back to is Stan's diagonal estimate
        diag_state = welford_init(z[0] * scale, dense=False)
        for zi in z:
            diag_state = welford_update(diag_state, zi * scale)
        np.testing.assert_array_equal(np.diag(diagonal_of(state)), welford_covariance(diag_state))
    # a coordinate that never moved keeps Stan's jitter, not the jitter squared
    frozen = welford_init(z[0], dense=True)
    for zi in z:
        frozen = welford_update(frozen, np.array([zi[0], 2.0]))
    assert welford_covariance(frozen)[1, 1] == 1e-3 * 5 / (n + 5)


def test_metric_covariance_dense_needs_two_draws_per_dimension():
    """A dense window estimate from fewer than 2d draws keeps only its diagonal (Stan's
    regularisation otherwise); variances pass through (``esh_math.md`` §7.4)."""
    rng = np.random.default_rng(7)
    d = 4
    x = rng.normal(size=(2 * d, d)) @ rng.normal(size=(d, d))
    for dense in (False, True):
        state = welford_init(x[0], dense=dense)
        for n, xi in enumerate(x, start=1):
            state = welford_update(state, xi)
            stan = welford_covariance(state, regularize=True)
            expected = diagonal_of(state) if dense and n < 2 * d else stan
            np.testing.assert_array_equal(metric_covariance(state), expected)
    # one rule per chain when the count is batched: chain 0 has 2d draws, chain 1 fewer
    state = welford_init(x[:2], dense=True)
    for xi in x:
        state = welford_update(state, np.stack([xi, xi]), np.array([1.0, float(xi[0] > 0)]))
    assert state.count[1] < 2 * d
    out = metric_covariance(state)
    stan = welford_covariance(state, regularize=True)
    np.testing.assert_array_equal(out[0], stan[0])
    np.testing.assert_array_equal(out[1], diagonal_of(state)[1])


def test_metric_covariance_without_regularisation_is_the_raw_sample_covariance():
    """``regularize=False`` (NumPyro's ``regularize_mass_matrix=False``): every form of the
    window estimate is the sample (co)variance of its draws, with no shrinkage or jitter:
    variances, a dense estimate, the diagonal a dense layout keeps with too few draws, and
    the gradients' estimate of the automatic metric. With regularisation each differs."""
    rng = np.random.default_rng(5)
    d = 4
    x = rng.normal(size=(50, d)) @ rng.normal(size=(d, d))
    sample = np.cov(x.T)
    for dense in (False, True):
        state = _window(x, dense=dense)
        want = sample if dense else np.diag(sample)
        np.testing.assert_allclose(metric_covariance(state, regularize=False), want, rtol=1e-12)
        assert not np.allclose(metric_covariance(state), want, rtol=1e-6)
    few = _window(x[: 2 * d - 1])  # dense layout, too few draws: its raw diagonal
    np.testing.assert_allclose(metric_covariance(few, regularize=False),
                               np.diag(np.diag(np.cov(x[: 2 * d - 1].T))), rtol=1e-12)
    # the automatic metric's gradient estimate, on a window it reads as dense
    corr = np.full((d, d), 0.99) + 0.01 * np.eye(d)
    sigma = corr * np.outer(np.arange(1.0, d + 1.0), np.arange(1.0, d + 1.0))
    xs, gs = _window_with_gradients(rng.normal(size=(200, d)) @ np.linalg.cholesky(sigma).T, sigma)
    joint = welford_covariance(gs, regularize=False)
    raw, ok, _ = gradient_covariance(joint[:d, :d], joint[d:, d:])
    assert ok
    got = metric_covariance(xs, mask=AUTO_METRIC, tau=np.float64(1.0), gradients=gs, regularize=False)
    np.testing.assert_allclose(got, raw, rtol=1e-12)
    assert not np.allclose(metric_covariance(xs, mask=AUTO_METRIC, tau=np.float64(1.0), gradients=gs),
                           raw, rtol=1e-6)


def _window(x, dense=True):
    state = welford_init(x[0], dense=dense)
    for xi in x:
        state = welford_update(state, xi)
    return state


def test_automatic_metric_goes_dense_only_beyond_sampling_noise():
    """``esh_math.md`` §7.6: a window of a strongly correlated target (condition number 400
    of its correlation matrix) gives its dense estimate, one of an independent target its
    diagonal; fewer than ``3 d`` draws, fewer than ``d`` effective ones (draws over their
    autocorrelation time), or a condition number within 10x of what noise gives, keep the
    diagonal. Per chain where the count is batched."""
    rng = np.random.default_rng(11)
    d = 4
    corr = np.full((d, d), 0.99) + 0.01 * np.eye(d)  # eigenvalues 3.97 and 0.01
    chol = np.linalg.cholesky(corr) * np.arange(1.0, d + 1.0)[:, None]
    correlated = rng.normal(size=(200, d)) @ chol.T
    independent = rng.normal(size=(200, d)) * np.arange(1.0, d + 1.0)
    assert prefers_dense(welford_covariance(_window(correlated)), np.float64(200))
    assert not prefers_dense(welford_covariance(_window(independent)), np.float64(200))
    needed = int(AUTO_DENSE_MIN_DRAWS_PER_DIM * d)  # 3 d (§7.6, "Why 3d draws")
    few = _window(correlated[: needed - 1])
    assert not prefers_dense(welford_covariance(few), few.count)
    enough = _window(correlated[:needed])
    assert prefers_dense(welford_covariance(enough), enough.count)
    slow = welford_covariance(_window(correlated))  # the same draws, read as autocorrelated
    assert prefers_dense(slow, np.float64(200), tau=np.float64(50.0))
    assert not prefers_dense(slow, np.float64(200), tau=np.float64(60.0))  # 3.3 < d
    stan = welford_covariance(_window(correlated))
    np.testing.assert_array_equal(metric_covariance(_window(correlated), mask=AUTO_METRIC), stan)
    out = metric_covariance(_window(independent), mask=AUTO_METRIC)
    np.testing.assert_array_equal(out, diagonal_of(_window(independent)))
    # mildly correlated (condition number 3): within the noise margin at 200 draws
    mild = rng.normal(size=(200, d)) @ np.linalg.cholesky(np.full((d, d), 0.4) + 0.6 * np.eye(d)).T
    assert not prefers_dense(welford_covariance(_window(mild)), np.float64(200))
    # batched: chain 0 correlated, chain 1 independent
    both = welford_init(np.stack([correlated[0], independent[0]]), dense=True)
    for a, b in zip(correlated, independent):
        both = welford_update(both, np.stack([a, b]))
    chosen = prefers_dense(welford_covariance(both), both.count)
    assert chosen.tolist() == [True, False]


def test_automatic_metric_without_enough_effective_draws_keeps_the_kind_it_ran_under():
    """``prefers_dense(..., was_dense=)``: a correlated window with fewer than ``d``
    effective draws keeps a dense metric dense and a diagonal one diagonal (per chain);
    with enough effective draws the window decides whatever the chain ran under.
    ``has_correlations`` tells the two kinds of a dense-layout factor apart."""
    rng = np.random.default_rng(11)
    d = 4
    corr = np.full((d, d), 0.99) + 0.01 * np.eye(d)
    chol = np.linalg.cholesky(corr)
    correlated = rng.normal(size=(200, d)) @ chol.T
    independent = rng.normal(size=(200, d))
    cov = welford_covariance(_window(correlated))
    slow = np.float64(60.0)  # 3.3 effective draws < d
    assert prefers_dense(cov, np.float64(200), tau=slow, was_dense=np.bool_(True))
    assert not prefers_dense(cov, np.float64(200), tau=slow, was_dense=np.bool_(False))
    assert not prefers_dense(cov, np.float64(200), tau=slow)
    # enough effective draws: the window decides
    quick = np.float64(2.0)
    assert prefers_dense(cov, np.float64(200), tau=quick, was_dense=np.bool_(False))
    indep = welford_covariance(_window(independent))
    assert not prefers_dense(indep, np.float64(200), tau=quick, was_dense=np.bool_(True))
    # per chain, through metric_covariance
    both = welford_init(np.stack([correlated[0], correlated[0]]), dense=True)
    for a in correlated:
        both = welford_update(both, np.stack([a, a]))
    out = metric_covariance(both, mask=AUTO_METRIC, tau=np.array([60.0, 60.0]),
                            was_dense=np.array([True, False]))
    np.testing.assert_array_equal(out[0], welford_covariance(both)[0])
    np.testing.assert_array_equal(out[1], diagonal_of(both)[1])
    factors = np.stack([np.linalg.cholesky(corr), np.diag(np.arange(1.0, d + 1.0))])
    assert has_correlations(factors).tolist() == [True, False]


def _window_with_gradients(x, sigma):
    """Window estimates of draws ``x`` and of the draws with their gradients under
    ``N(0, sigma)`` side by side (``[x, g]``, ``core.warmup.gradients_init``)."""
    grad = x @ np.linalg.inv(sigma)
    return _window(x), _window(np.hstack([x, grad]))


def test_automatic_metric_reads_the_posterior_covariance_from_gradients():
    """``esh_math.md`` §7.6: a window whose draws saw only a small, uncorrelated part of
    a strongly correlated Gaussian (a chain that random-walked) reads no correlation from
    its draws, so the draws alone keep the diagonal; with the window's gradients the
    metric is the posterior covariance itself (``S Cov(grad) S = Cov(x)``), up to the
    regularisation. On an independent target the gradients change nothing."""
    rng = np.random.default_rng(3)
    sd = np.array([30.0, 0.007, 1.0, 5.0])
    corr = np.eye(4)
    corr[0, 1] = corr[1, 0] = -0.999
    sigma = corr * np.outer(sd, sd)
    sliver = rng.normal(size=(200, 4)) * (0.01 * sd)  # 1% of each sd, uncorrelated
    xs, gs = _window_with_gradients(sliver, sigma)
    tau = np.float64(2.0)
    alone = metric_covariance(xs, mask=AUTO_METRIC, tau=tau, was_dense=np.bool_(False))
    np.testing.assert_array_equal(alone, diagonal_of(xs))
    got = metric_covariance(xs, mask=AUTO_METRIC, tau=tau, was_dense=np.bool_(False), gradients=gs)
    np.testing.assert_allclose(np.diag(got), sd**2, rtol=1e-2)
    np.testing.assert_allclose(got / np.outer(sd, sd), corr, atol=1e-3)
    independent = rng.normal(size=(200, 4)) * sd
    xi, gi = _window_with_gradients(independent, np.diag(sd**2))
    np.testing.assert_array_equal(metric_covariance(xi, mask=AUTO_METRIC, tau=tau, gradients=gi),
                                  diagonal_of(xi))
    # too few draws for any dense estimate (fewer than 3 d): the diagonal of the draws
    xf, gf = _window_with_gradients(sliver[: int(AUTO_DENSE_MIN_DRAWS_PER_DIM * 4) - 1], sigma)
    np.testing.assert_array_equal(metric_covariance(xf, mask=AUTO_METRIC, tau=tau, gradients=gf),
                                  diagonal_of(xf))
    # the sliver (draws narrower than the posterior) reads no bending: warmup's last window
    # keeps the gradients' dense estimate too
    last = metric_covariance(xs, mask=AUTO_METRIC, tau=tau, was_dense=np.bool_(False), gradients=gs,
                             last=True)
    np.testing.assert_array_equal(last, got)


def _bent_window(bend, n=500, seed=0):
    """Window estimates of ``n`` draws of ``x2 = 3 x1 + bend x1^2 + 0.1 e`` (two more
    independent coordinates) and of the potential's gradient at them: a correlated target
    (correlation about 0.99) that bends with ``bend``."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x = np.stack([x1, 3.0 * x1 + bend * x1**2 + 0.1 * rng.normal(size=n),
                  rng.normal(size=n), rng.normal(size=n)], axis=1)
    r = (x[:, 1] - 3.0 * x[:, 0] - bend * x[:, 0] ** 2) / 0.1**2
    grad = np.stack([x[:, 0] - r * (3.0 + 2.0 * bend * x[:, 0]), r, x[:, 2], x[:, 3]], axis=1)
    return _window(x), _window(np.hstack([x, grad]))


def _bend(xs, joint):
    """The window's bend (:func:`curved`), numpy and torch."""
    import torch

    from esh_kernels.core.adaptation import window_gradient_covariance

    _, ok, residual = window_gradient_covariance(xs, joint, regularize=False)
    torch_joint = type(joint)(*(torch.tensor(np.asarray(a)) for a in joint))
    torch_xs = type(xs)(*(torch.tensor(np.asarray(a)) for a in xs))
    _, _, residual_t = window_gradient_covariance(torch_xs, torch_joint, regularize=False)
    np.testing.assert_allclose(residual_t.numpy(), residual, rtol=1e-9, atol=1e-9)
    assert ok
    return np.linalg.eigvalsh(residual)[-1]


def test_last_window_keeps_the_diagonal_where_the_target_bends():
    """``esh_math.md`` §7.6, :func:`curved`: the bend (largest eigenvalue of ``Cov(x) R``,
    ``R`` what a linear fit in ``x`` leaves of the gradient) is 0 on a Gaussian and far
    above its threshold where the target bends (46 here); warmup's last window then keeps
    the diagonal (posteriordb's ``gp_pois_regr``: under the dense metric AdjustedESH's
    chains rejected for dozens of draws in a row). Earlier windows keep the dense estimate,
    as a chain still far out bends with the road in, and so does a last window with too few
    effective draws to tell. The same numbers in torch."""
    from esh_kernels.core.adaptation import curved

    tau = np.float64(1.0)
    for bend, bends in ((0.0, False), (0.3, True)):
        xs, gs = _bent_window(bend)
        got = _bend(xs, gs)
        assert (got > 30.0 if bends else abs(got) < 1e-9), got
        assert bool(curved(got, xs.count, 4)) == bends
        early = metric_covariance(xs, mask=AUTO_METRIC, tau=tau, was_dense=np.bool_(False), gradients=gs)
        last = metric_covariance(xs, mask=AUTO_METRIC, tau=tau, was_dense=np.bool_(False), gradients=gs,
                                 last=True)
        assert has_correlations(early)  # correlation 0.99: dense, bent or not
        if bends:
            np.testing.assert_array_equal(last, diagonal_of(xs))
        else:
            np.testing.assert_array_equal(last, early)
        # 500 draws at tau 100: 5 effective draws, fewer than 3 per dimension, cannot tell a
        # bend from a chain still travelling, and keep the dense estimate
        slow = np.float64(100.0)
        travelling = metric_covariance(xs, mask=AUTO_METRIC, tau=slow, was_dense=np.bool_(True), gradients=gs,
                                       last=True)
        np.testing.assert_array_equal(travelling, metric_covariance(
            xs, mask=AUTO_METRIC, tau=slow, was_dense=np.bool_(True), gradients=gs))
        assert has_correlations(travelling)


def test_last_window_stays_dense_where_a_chain_drifted_along_a_ridge():
    """``esh_math.md`` §7.6: a chain that drifts along the ridge of a 0.999-correlated
    Gaussian through warmup's last window spreads 20 posterior sds along it, so
    ``Cov(x) Cov(g)`` reads about ``20^4`` (the statistic of the bend rule until 2026-12-06,
    which took it for bending and kept the diagonal: ESH's chains on posteriordb's
    ``earn_height``, R-hat 1.55 in float32). The gradient is still linear in ``x``: the bend
    is 0 and the window keeps the gradients' dense estimate, the posterior covariance."""
    rng = np.random.default_rng(7)
    sd = np.array([1.3e4, 200.0, 0.03])
    corr = np.eye(3)
    corr[0, 1] = corr[1, 0] = -0.999
    sigma = corr * np.outer(sd, sd)
    w, v = np.linalg.eigh(sigma)
    n = 450
    along = np.linspace(-10.0, 10.0, n) * np.sqrt(w[-1])  # the drift: 20 sds of the long axis
    x = rng.normal(size=(n, 3)) @ np.linalg.cholesky(sigma).T + along[:, None] * v[:, -1]
    xs, gs = _window_with_gradients(x, sigma)
    cov_x = welford_covariance(xs, regularize=False)
    old_stretch = np.linalg.eigvals(cov_x @ (np.linalg.inv(sigma) @ cov_x @ np.linalg.inv(sigma))).real.max()
    assert old_stretch > 1e3, old_stretch
    assert abs(_bend(xs, gs)) < 1e-6
    tau = np.float64(1.0)
    last = metric_covariance(xs, mask=AUTO_METRIC, tau=tau, was_dense=np.bool_(True), gradients=gs,
                             last=True, regularize=False)
    np.testing.assert_allclose(last / np.outer(sd, sd), corr, atol=1e-6)
    np.testing.assert_allclose(np.diag(last), sd**2, rtol=1e-6)


def test_gradient_covariance_in_float32_with_scales_far_apart():
    """The geometric mean is taken between balanced diagonals: in float32 a posterior with
    scales 30 and 0.007 and correlation -0.999 (posteriordb's ``kilpisjarvi`` kind) still
    gives its covariance. In the model's units ``Cov(grad)`` has a condition number near
    1e14, beyond float32: JAX's float32 solver then found it indefinite (vectorized
    TunedHMC on such a target, min ESS 297 of 4000 and R-hat 1.015 before the balancing)."""
    rng = np.random.default_rng(5)
    sd = np.array([30.0, 0.007, 1.0, 5.0])
    corr = np.eye(4)
    corr[0, 1] = corr[1, 0] = -0.999
    sigma = corr * np.outer(sd, sd)
    x = rng.multivariate_normal(np.zeros(4), sigma, size=400)
    g = x @ np.linalg.inv(sigma)
    jnp = pytest.importorskip("jax.numpy")
    b, a = (jnp.asarray(np.cov(v.T), dtype=jnp.float32) for v in (x, g))
    s, ok, _ = gradient_covariance(b, a)
    assert s.dtype == jnp.float32 and bool(ok)
    s = np.asarray(s, dtype=np.float64)
    np.testing.assert_allclose(np.diag(s), sd**2, rtol=1e-2)
    np.testing.assert_allclose(s / np.outer(sd, sd), corr, atol=1e-3)


def test_gradient_covariance_batched_torch_matches_numpy():
    """One matrix per chain (leading axis), torch as numpy; a singular gradient covariance
    (a coordinate whose gradient never varies) is reported, not returned."""
    import torch

    rng = np.random.default_rng(4)
    b = np.stack([np.cov(rng.normal(size=(50, 3)).T) for _ in range(2)])
    a = np.stack([np.cov(rng.normal(size=(50, 3)).T) for _ in range(2)])
    a[1, 2, :] = a[1, :, 2] = 0.0
    s_np, ok_np, _ = gradient_covariance(b, a)
    s_t, ok_t, _ = gradient_covariance(torch.tensor(b), torch.tensor(a))
    assert ok_np.tolist() == ok_t.tolist() == [True, False]
    np.testing.assert_allclose(s_t.numpy(), s_np, rtol=1e-10)
    np.testing.assert_allclose(s_np[0] @ a[0] @ s_np[0], b[0], rtol=1e-9)
    np.testing.assert_array_equal(s_np[1], b[1])


def test_welford_weight_zero_is_a_no_op():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, 3))
    for dense in (False, True):
        state = welford_init(x[0], dense=dense)
        empty = welford_update(state, x[0] * 1e6, 0.0)
        for a, b in zip(empty, state):
            np.testing.assert_array_equal(a, b)
        for xi in x:
            state = welford_update(state, xi)
        skipped = welford_update(state, np.full(3, 1e9), 0.0)
        for a, b in zip(skipped, state):
            np.testing.assert_array_equal(a, b)


def test_welford_batched_weights():
    """Several chains at once with per-chain weights (count shaped (chains,))."""
    rng = np.random.default_rng(6)
    chains, n, d = 3, 50, 4
    x = rng.normal(size=(n, chains, d))
    w = (rng.uniform(size=(n, chains)) < 0.6).astype(np.float64)
    for dense in (False, True):
        state = welford_init(x[0], dense=dense)
        assert state.count.shape == (chains,)
        for xi, wi in zip(x, w):
            state = welford_update(state, xi, wi)
        cov = welford_covariance(state, regularize=False)
        for c in range(chains):
            kept = x[w[:, c] == 1, c]
            np.testing.assert_allclose(state.mean[c], kept.mean(axis=0), atol=1e-10)
            ref = np.cov(kept, rowvar=False)
            np.testing.assert_allclose(cov[c], ref if dense else np.diag(ref), atol=1e-10)


# ---------------------------------------------------------------------------------------
# Window schedule


@pytest.mark.parametrize("num_warmup", [20, 100, 150, 500, 1000, 2000, 5000])
def test_window_schedule_matches_numpyro(num_warmup):
    hmc_util = pytest.importorskip("numpyro.infer.hmc_util")
    ref = hmc_util.build_adaptation_schedule(num_warmup)
    ends, start, stop = window_schedule(num_warmup)
    assert ends == [w.end for w in ref[1:-1]]
    assert start == ref[0].end + 1 == ref[1].start
    assert stop == ref[-1].start
    # windows are contiguous and their lengths never shrink (except the absorbing last)
    lengths = np.diff([start - 1] + ends)
    assert np.all(lengths[:-1][1:] >= lengths[:-1][:-1])
    assert ends[-1] == stop - 1


def test_window_schedule_short_warmup():
    assert window_schedule(10) == ([], 10, 10)
    assert window_schedule(19) == ([], 19, 19)


# ---------------------------------------------------------------------------------------
# Step-size predictor (Var[dH]/d rule)


@pytest.mark.parametrize("c", [1.0, 1e-3, 50.0])
@pytest.mark.parametrize("eps0", [0.05, 1.0, 3.0])
def test_step_size_predictor_converges(c, eps0):
    desired = 5e-4
    eps_star = (desired / c) ** (1 / 6)
    eps = np.float64(eps0)
    state = step_size_predictor_init(eps)
    for _ in range(100):
        state, eps = step_size_predictor_update(state, eps, c * eps**6, np.bool_(False), desired)
    assert abs(eps / eps_star - 1) < 1e-3
    assert np.isinf(state.max_step)


def _predictor_after(n, c, desired, eps=0.2):
    """The predictor after ``n`` finite draws whose energy error is ``c eps^6``."""
    eps = np.float64(eps)
    state = step_size_predictor_init(eps)
    for _ in range(n):
        state, eps = step_size_predictor_update(state, eps, c * eps**6, np.bool_(False), desired)
    return state, eps


def test_step_size_predictor_non_finite_divergence_backs_off_without_cap():
    """A divergence that reached a non-finite state (a NaN region of the target) backs the
    next step off to 0.8 eps but leaves the cap alone, and the next finite observation
    restores the predicted step; repeated, it must not ratchet the step to zero (issue 14
    case 1)."""
    desired, c = 5e-4, 1.0
    eps_star = (desired / c) ** (1 / 6)
    state, eps = _predictor_after(30, c, desired)
    before = eps
    state, eps = step_size_predictor_update(
        state, eps, np.float64(np.nan), np.bool_(True), desired, non_finite=np.bool_(True)
    )
    assert eps == pytest.approx(0.8 * before, rel=1e-14)
    assert np.isinf(state.max_step)
    for _ in range(100):  # every other draw reaches the NaN region
        state, eps = step_size_predictor_update(state, eps, c * eps**6, np.bool_(False), desired)
        state, eps = step_size_predictor_update(
            state, eps, np.float64(np.nan), np.bool_(True), desired, non_finite=np.bool_(True)
        )
    state, eps = step_size_predictor_update(state, eps, c * eps**6, np.bool_(False), desired)
    assert abs(eps / eps_star - 1) < 1e-3


def test_step_size_predictor_divergence_caps_step():
    desired = 5e-4
    c = 1.0
    state, eps = _predictor_after(5, c, desired)
    before = eps
    state_div, eps_div = step_size_predictor_update(
        state, eps, np.float64(np.nan), np.bool_(True), desired
    )
    assert eps_div == pytest.approx(0.8 * before, rel=1e-14)
    assert state_div.max_step == pytest.approx(0.8 * before, rel=1e-14)
    # the divergent observation adds nothing to the running sums
    assert state_div.weight_sum == pytest.approx(state.weight_sum * 149 / 151, rel=1e-14)
    # afterwards, tiny energy errors (which predict a larger step) cannot exceed the cap
    state, eps = state_div, eps_div
    for _ in range(50):
        state, eps = step_size_predictor_update(
            state, eps, np.float64(1e-12), np.bool_(False), desired
        )
        assert eps <= 0.8 * before * (1 + 1e-14)
    assert eps == pytest.approx(0.8 * before, rel=1e-12)
    # a non-finite error without the divergence flag is also treated as a divergence
    _, eps_nan = step_size_predictor_update(
        state, eps, np.float64(np.inf), np.bool_(False), desired
    )
    assert eps_nan == pytest.approx(0.8 * eps, rel=1e-14)


def test_step_size_predictor_single_update_formula():
    desired, trust, n_eff = 5e-4, 1.5, 150.0
    eps, err = np.float64(0.3), np.float64(2e-3)
    state = step_size_predictor_init(eps)
    state, new = step_size_predictor_update(state, eps, err, np.bool_(False), desired, trust, n_eff)
    xi = err / desired + 1e-8
    w = math.exp(-0.5 * (math.log(xi) / (6 * trust)) ** 2)
    assert state.weight_sum == pytest.approx(w, rel=1e-14)
    assert state.weighted_sum == pytest.approx(w * xi / eps**6, rel=1e-14)
    assert new == pytest.approx(eps * xi ** (-1 / 6), rel=1e-12)


# ---------------------------------------------------------------------------------------
# Jittered number of steps


@pytest.mark.parametrize("length, eps", [(3.0, 0.1), (1.0, 0.25), (0.05, 0.2)])
def test_jittered_num_steps(length, eps):
    rng = np.random.default_rng(7)
    u = 1.0 - rng.uniform(size=200_000)  # Uniform(0, 1]
    n = jittered_num_steps(u, length, eps, 1000)
    assert np.all(n >= 1) and np.all(n <= 1000)
    assert np.all(n == np.round(n))
    mean_target = length / eps
    if mean_target >= 2:
        # ceil adds 1/2 on average
        assert abs(n.mean() - mean_target) < 0.5 + 0.05
    capped = jittered_num_steps(u, length, eps, 7)
    assert capped.max() <= 7 and capped.min() >= 1
    if mean_target > 7:
        assert np.mean(capped == 7) > 0.4
    # U = 1 gives the longest trajectory, ceil(2 L / eps)
    longest = jittered_num_steps(np.float64(1.0), length, eps, 1000)
    assert longest == max(1, math.ceil(2 * length / eps - 1e-12))


def test_adaptation_accept_prob():
    """A finite trajectory gives its Metropolis acceptance; one that reached a non-finite
    value gives the mean acceptance of the points it reached, the failing one counting 0."""
    from esh_kernels.core.metropolis import adaptation_accept_prob

    accept = np.array([0.7, 0.0, 0.0])
    finite = np.array([True, False, False])
    sums = np.array([3.5, 2.7, 0.0])  # points' acceptances summed (the failing one adds 0)
    steps = np.array([5, 4, 1])
    out = adaptation_accept_prob(accept, finite, sums, steps)
    np.testing.assert_allclose(out, [0.7, 2.7 / 4, 0.0])


# ---------------------------------------------------------------------------------------
# Autocorrelation time of the slowest statistic (AdjustedESH's trajectory length)


def _ar1(rho, n, d, rng):
    x = np.zeros((n, d))
    x[0] = rng.normal(size=d)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + math.sqrt(1 - rho * rho) * rng.normal(size=d)
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_slowest_autocorrelation_time_of_an_ar1_process(rho):
    """AR(1): ``tau(x) = (1 + rho)/(1 - rho)``, and ``x^2`` has lag-1 correlation ``rho^2``,
    so the slower set is ``x``. Draws with weight 0 are skipped."""
    rng = np.random.default_rng(1)
    x = _ar1(rho, 20000, 4, rng)
    state = decorrelation_init(x[0])
    for t, xt in enumerate(x):
        state = decorrelation_update(state, xt, 1.0)
        state = decorrelation_update(state, xt + 100.0, 0.0)  # gated out
    tau = float(slowest_autocorrelation_time(state))
    assert tau == pytest.approx((1 + rho) / (1 - rho), rel=0.1)


def test_slowest_autocorrelation_time_sees_a_slow_square():
    """``x`` alternating in sign (antithetic, ``tau < 1``) while ``|x|`` follows a slow
    AR(1): the squared feature is the slow one, and it is what counts."""
    rng = np.random.default_rng(2)
    n = 20000
    mag = 1.0 + 0.3 * _ar1(0.95, n, 3, rng)
    x = mag * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)[:, None]
    state = decorrelation_init(x[0])
    for xt in x:
        state = decorrelation_update(state, xt)
    assert float(slowest_autocorrelation_time(state)) > 20.0


def _adjusted_lengths(x, num_warmup=1000):
    """AdjustedESH's trajectory length after each warmup iteration, fed the draws ``x``
    (``core.warmup._trajectory_update``; step size fixed at 0.5, diagonal metric)."""
    from esh_kernels.core.warmup import AdjustedWarmupConfig, adjusted_warmup_init, adjusted_warmup_update

    config = AdjustedWarmupConfig(num_warmup, 0.7, False, True, True, 1.0, max_steps=1024)
    adapt = adjusted_warmup_init(x[0], np.float64(0.5), np.float64(2.0), False)
    lengths = []
    for i in range(num_warmup):
        adapt = adjusted_warmup_update(adapt, i, x[i], np.float64(0.7), config)
        lengths.append(float(adapt.trajectory_length))
    return lengths


@pytest.mark.parametrize("rho, grows", [(0.0, False), (0.3, False), (0.8, True), (0.999, True)])
def test_adjusted_trajectory_grows_only_where_the_slowest_statistic_is_slow(rho, grows):
    """After the first metric window the length is ``factor * sqrt(d)``; later windows
    lengthen it where ``x`` needs more than 3 draws to decorrelate (an AR(1) stream: ``tau =
    (1 + rho)/(1 - rho)``, 1.9 at 0.3, 9 at 0.8), by at most ``sqrt(2)`` per window (four
    windows after the first at ``num_warmup=1000``)."""
    from esh_kernels.core.warmup import ADJUSTED_DECORRELATION_DRAWS, ADJUSTED_MAX_LENGTHENING

    assert ADJUSTED_DECORRELATION_DRAWS == (3.0, 10.0)
    d, num_warmup = 4, 1000
    ends = window_schedule(num_warmup)[0]
    lengths = _adjusted_lengths(_ar1(rho, num_warmup, d, np.random.default_rng(3)), num_warmup)
    assert lengths[50] == pytest.approx(4 * 0.5)  # steps_before_metric steps
    assert lengths[ends[0]] == pytest.approx(math.sqrt(d))  # first window end
    for before, end in zip(ends, ends[1:]):
        assert lengths[end] <= ADJUSTED_MAX_LENGTHENING * lengths[before] + 1e-12
    if grows:  # every later window lengthens, nearly always by the cap: from the 40 draws
        # that the second window keeps after the step size's settling draws, seed 3 reads tau
        # a little under the 6 that the cap needs at 0.8 (2.76 for 2.83; seeds 0-5 checked)
        assert all(lengths[end] > lengths[before] for before, end in zip(ends, ends[1:]))
        assert lengths[ends[-1]] > 0.9 * ADJUSTED_MAX_LENGTHENING ** (len(ends) - 1) * math.sqrt(d)
    else:
        assert lengths[num_warmup - 1] == pytest.approx(math.sqrt(d))


def test_adjusted_trajectory_shrinks_back_under_the_final_metric():
    """The last warmup iteration applies the length update once more with ``tau`` over the
    final fast buffer (the only draws run under the final metric): a length grown in
    random-walk windows shrinks by ``sqrt(tau)`` in units of the allowed draws (``sqrt(1/3)``
    for independent draws) when the final buffer's draws are independent, never below
    ``factor * sqrt(d)``, and stays until that last iteration."""
    rng = np.random.default_rng(3)
    d, num_warmup = 4, 1000
    stop = window_schedule(num_warmup)[2]
    x = np.concatenate([_ar1(0.999, stop, d, rng), rng.normal(size=(num_warmup - stop, d))])
    lengths = _adjusted_lengths(x, num_warmup)
    assert lengths[stop - 1] > 3 * math.sqrt(d)  # grown at the window ends
    assert lengths[num_warmup - 2] == lengths[stop - 1]
    assert math.sqrt(d) <= lengths[num_warmup - 1] < 0.7 * lengths[num_warmup - 2]


def test_adjusted_trajectory_is_not_lengthened_by_the_final_buffer():
    """Independent draws in every window, a random walk in the final buffer: the last
    update may only shorten (its draws follow the step size's restart), so the length
    stays ``factor * sqrt(d)``."""
    rng = np.random.default_rng(5)
    d, num_warmup = 4, 1000
    stop = window_schedule(num_warmup)[2]
    x = np.concatenate([rng.normal(size=(stop, d)), _ar1(0.999, num_warmup - stop, d, rng)])
    lengths = _adjusted_lengths(x, num_warmup)
    assert lengths[num_warmup - 1] == pytest.approx(math.sqrt(d))


def test_settling_draws_after_a_step_size_restart_are_left_out_of_the_length_statistic():
    """After each window end dual averaging restarts, first trying steps about 10x too large
    whose proposals are rejected: the chain repeats its position. Those first
    ``RESTART_SETTLING_DRAWS`` draws (at most a quarter of the next stretch) do not enter the
    trajectory-length statistic: the window's ``tau`` is that of the draws after them. No
    draws are left out where no restart happens: at the first window's start, and after a
    window end too close to the end of warmup."""
    from esh_kernels.core.warmup import RESTART_SETTLING_DRAWS, MetricSchedule, window_decorrelation

    k = RESTART_SETTLING_DRAWS
    schedule = MetricSchedule.build(1000)
    left_out = [i for i in range(1000) if i >= schedule.start and schedule.measure_weight(i) == 0.0]
    assert left_out == [i for end in (99, 149, 249, 449, 949) for i in range(end + 1, end + 1 + k)]
    short = MetricSchedule.build(100)  # window end 89, then a 10-iteration final buffer
    assert [i for i in range(15, 100) if short.measure_weight(i) == 0.0] == [90, 91]
    assert not MetricSchedule.build(20).settling(18)  # its one window ends 2 iterations before the end

    rng = np.random.default_rng(6)
    d = 4
    x = rng.normal(size=(1000, d))
    x[150:150 + k] = x[149] + 50.0  # a stuck, far-off start of the window 150-249
    decorrelation, tau = window_decorrelation(schedule, 149, x[149], decorrelation_init(x[0]), (1.0, 1.0))
    for i in range(150, 250):
        decorrelation, tau = window_decorrelation(schedule, i, x[i], decorrelation, (1.0, 1.0))
    alone = decorrelation_init(x[0])
    for xt in x[150 + k:250]:
        alone = decorrelation_update(alone, xt)
    assert float(tau) == pytest.approx(float(slowest_autocorrelation_time(alone)), rel=1e-12)
    assert float(tau) < 2.0  # independent draws


def test_tuned_hmc_stretch_shrinks_back_under_the_final_metric():
    """TunedHMC's random-walk stretch of its U-turn length (``core.tuned_warmup``) follows the
    same schedule as AdjustedESH's length: grown at the window ends of a random-walking
    chain, re-read over the final buffer at the last warmup iteration."""
    from esh_kernels.core.tuned_warmup import TunedWarmupConfig, tuned_chain_update, tuned_warmup_init

    rng = np.random.default_rng(4)
    d, num_warmup = 4, 1000
    stop = window_schedule(num_warmup)[2]
    x = np.concatenate([_ar1(0.999, stop, d, rng), rng.normal(size=(num_warmup - stop, d))])
    config = TunedWarmupConfig(num_warmup, 0.8, False, True, True, False, 1024, 0.025, 0.75)
    adapt = tuned_warmup_init(x[0], np.float64(0.5), np.float64(2.0), False)
    stretch = []
    for i in range(num_warmup):
        adapt = tuned_chain_update(adapt, i, x[i], np.float64(0.8), np.float64(3.0), config)
        stretch.append(float(adapt.stretch))
    assert stretch[stop - 1] > 5.0
    assert stretch[num_warmup - 2] == stretch[stop - 1]
    assert 1.0 <= stretch[num_warmup - 1] < 0.5 * stretch[num_warmup - 2]


# ---------------------------------------------------------------------------------------
# the ensemble mode's metric (core.ensemble.dense_gradient_metric / tune_metric)


def _gaussian_ensemble(num_chains, cov_target, cov_ensemble, seed=0):
    """Positions from ``N(0, cov_ensemble)`` and their gradients under ``N(0, cov_target)``."""
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(len(cov_target)), cov_ensemble, size=num_chains)
    return x, x @ np.linalg.inv(cov_target)  # dE/dx = Sigma^-1 x (Sigma symmetric)


def test_dense_gradient_metric_is_the_target_covariance_whatever_the_ensemble():
    """On a Gaussian target the ensemble's dense metric is its covariance exactly, for an
    ensemble whose own covariance is something else (too wide and differently correlated,
    as during a warm start): ``S Cov(grad) S = Cov(x)`` has the one SPD solution ``Sigma``."""
    from esh_kernels.core.ensemble import dense_gradient_metric

    sd = np.array([0.1, 1.0, 5.0, 2.0])
    corr = np.array([[1.0, -0.95, 0.3, 0.0], [-0.95, 1.0, -0.2, 0.1],
                     [0.3, -0.2, 1.0, 0.5], [0.0, 0.1, 0.5, 1.0]])
    sigma = corr * np.outer(sd, sd)
    x, grad = _gaussian_ensemble(400, sigma, 9.0 * np.eye(4) + 0.5)
    np.testing.assert_allclose(dense_gradient_metric(x, grad), sigma, rtol=1e-7, atol=1e-9)


def test_dense_gradient_metric_falls_back_to_the_diagonal_without_gradient_spread():
    """A coordinate whose gradient never varies (here a constant 0) leaves ``Cov(grad)``
    singular: the metric is then the diagonal estimate, as a matrix (1 for that coordinate)."""
    from esh_kernels.core.ensemble import dense_gradient_metric, gradient_metric

    x, grad = _gaussian_ensemble(200, np.diag([1.0, 4.0, 1.0]), np.eye(3))
    grad[:, 2] = 0.0
    got = dense_gradient_metric(x, grad)
    np.testing.assert_array_equal(got, np.diag(gradient_metric(x, grad) ** 2))
    assert got[2, 2] == 1.0


@pytest.mark.parametrize("num_chains, d, kind", [
    (200, 10, "dense"),      # 20 chains per dimension
    (199, 10, "diagonal as a matrix"),
    (2000, 51, "diagonal as a matrix"),  # 39 chains per dimension, above CORRELATION_MAX_DIM
    (400, 151, "vector"),    # above DENSE_MAX_DIM
])
def test_tune_metric_layout(num_chains, d, kind):
    """The adjusted phase's preconditioner: a Cholesky factor of the dense estimate with
    enough chains per dimension (up to ``CORRELATION_MAX_DIM`` dimensions), a diagonal
    matrix with fewer or above, a vector above ``DENSE_MAX_DIM`` dimensions (the layouts
    ``AdjustedESH``'s ``dense_mass="auto"`` has); the sampling phase gets the matrix only
    where it holds correlations, else its diagonal as a vector (``sampling_metric``)."""
    from esh_kernels.core.ensemble import (dense_gradient_metric, gradient_metric, sampling_metric,
                                           tune_metric)

    cov = np.eye(d) + 0.6 * (np.ones((d, d)) - np.eye(d))
    x, grad = _gaussian_ensemble(num_chains, cov, 2.0 * np.eye(d))
    scale = tune_metric(x, grad)
    sampled, dense = sampling_metric(scale, num_chains)
    assert dense == (kind == "dense")
    np.testing.assert_array_equal(sampled, scale if kind == "dense" else np.sqrt(gradient_metric(x, grad)))
    if kind == "vector":
        np.testing.assert_allclose(scale, np.sqrt(gradient_metric(x, grad)))
    elif kind == "dense":
        np.testing.assert_allclose(scale @ scale.T, dense_gradient_metric(x, grad), rtol=1e-10)
        np.testing.assert_allclose(scale @ scale.T, cov, rtol=1e-8, atol=1e-10)
    else:
        np.testing.assert_allclose(scale, np.diag(np.sqrt(gradient_metric(x, grad))))


def test_gradient_estimate_of_a_ridge_sliver_in_float32_uses_the_linear_fit():
    """``esh_math.md`` §7.6, :func:`gradient_covariance`: a float32 window whose draws
    covered a sliver (sds 25 and 9 against 9600 and 144) of a 0.9975-correlated Gaussian
    ridge, 50 000 units from its mode (ESH's stuck chains on posteriordb's ``earn_height``).
    ``Cov(g)`` has the square of the posterior's condition number; from it alone the
    geometric mean is indefinite or far off in float32 (here it is checked off by more than
    10% or not positive definite on most of five seeds). With the cross-covariance the
    gradient's linear fit gives the posterior covariance to float32 precision, in JAX
    and torch."""
    import jax.numpy as jnp
    import torch

    sd = np.array([9600.0, 144.0, 0.022])
    corr = np.eye(3)
    corr[0, 1] = corr[1, 0] = -0.9975
    sigma = corr * np.outer(sd, sd)
    mu = np.array([-61000.0, 1260.0, 9.8])
    geometric_off = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x = mu + np.array([5e4, -700.0, 0.0]) + rng.normal(size=(450, 3)) * np.array([25.0, 9.0, 0.02])
        joint = np.hstack([x, (x - mu) @ np.linalg.inv(sigma)])
        for to in (lambda a: jnp.asarray(a, jnp.float32), lambda a: torch.tensor(a, dtype=torch.float32)):
            cov = welford_covariance(_window(to(joint)), regularize=False)
            s, ok, _ = gradient_covariance(cov[:3, :3], cov[3:, 3:], cov[:3, 3:])
            s = np.asarray(s, np.float64)
            assert bool(ok)
            np.testing.assert_allclose(np.sqrt(np.diag(s)), sd, rtol=1e-2)
            np.testing.assert_allclose(s[0, 1] / np.sqrt(s[0, 0] * s[1, 1]), -0.9975, atol=2e-4)
        s, ok, _ = gradient_covariance(cov[:3, :3], cov[3:, 3:])
        s = np.asarray(s, np.float64)
        geometric_off += (not bool(ok)) or not np.allclose(np.sqrt(np.diag(s)), sd, rtol=0.1)
    assert geometric_off >= 3


def test_esh_phase_one_refits_its_metric_within_the_last_window_and_keeps_its_draws():
    """ESH's phase 1 (750 iterations at the default warmup) keeps Stan's last window, 250-699,
    for its final metric, and refits the metric at 449 as well (``MetricSchedule.build`` with
    ``continue_last``), so iterations 450-699 run under a metric of 200 draws, not of the
    100-draw window before. The estimate goes on past 449: the final metric reads all 450
    draws. AdjustedESH's and TunedHMC's schedules are Stan's."""
    from esh_kernels.core.warmup import ESHWarmupConfig, MetricSchedule, metric_update

    phase1 = ESHWarmupConfig(1000, 5e-4, 2.0, True, True, True, 0.7, 1.0, continue_last=True).adjusted_config()
    schedule = MetricSchedule.build(phase1.num_warmup, phase1.continue_last)
    assert schedule.window_ends == (99, 149, 249, 449, 699) and schedule.continued == (449,)
    assert MetricSchedule.build(750).window_ends == (99, 149, 249, 699)  # Stan's
    assert MetricSchedule.build(1000, True).window_ends == tuple(window_schedule(1000)[0])
    rng = np.random.default_rng(0)
    sd = np.where(np.arange(750) < 450, 1.0, 3.0)[:, None] * np.array([1.0, 0.5])  # widens at 450
    draws = rng.normal(size=(750, 2)) * sd
    welford, scale = welford_init(draws[0]), np.ones(2)
    for i, x in enumerate(draws):
        welford, _, scale, ended = metric_update(schedule, i, welford, scale, x, regularize=False)
        if i == 449:
            np.testing.assert_allclose(scale**2, np.var(draws[250:450], axis=0, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(scale**2, np.var(draws[250:700], axis=0, ddof=1), rtol=1e-10)


def test_a_diagonal_metric_reads_the_gradients_in_every_window_but_the_last():
    """``esh_math.md`` §7.4: a diagonal layout keeps its windows' gradients beside the draws
    and takes nutpie's ``sqrt(Var x / Var g)`` at every window end but warmup's last. A chain
    that drifts through a window (as ``hier_500``'s ``log tau`` does early in warmup) spreads
    the window's draws far wider than the posterior, and Stan's estimate, ``Var x``, keeps that
    width; on a Gaussian the gradients give the posterior's variances whatever the drift. The
    last window's draws are those sampling follows, and it keeps their variances. A dense
    metric the user asked for keeps no gradients."""
    from esh_kernels.core.warmup import MetricSchedule, gradients_init, metric_update

    schedule = MetricSchedule.build(1000)
    assert schedule.window_ends == (99, 149, 249, 449, 949)
    rng = np.random.default_rng(1)
    mu, sd = np.array([1.0, -2.0, 0.5]), np.array([0.1, 1.0, 3.0])
    drift = np.zeros((1000, 3))
    drift[:250, 0] = np.linspace(-200.0, 0.0, 250) * sd[0]  # 200 sds in, over the first windows
    draws = mu + drift + rng.normal(size=(1000, 3)) * sd
    grads = (draws - mu) / sd**2  # the potential's gradient of N(mu, sd^2)
    welford, scale = welford_init(draws[0]), np.ones(3)
    gradients = gradients_init(draws[0], False, None)
    window_start = {99: 75, 149: 100, 249: 150, 449: 250}  # the windows before the last
    for i in range(1000):
        welford, gradients, scale, ended = metric_update(schedule, i, welford, scale, draws[i],
                                                         gradients=gradients, grad=grads[i],
                                                         regularize=False)
        if i in window_start:
            np.testing.assert_allclose(scale**2, sd**2, rtol=1e-9)
            if i < 250:  # the drift: Stan's estimate would be more than 10x too wide in x_0
                assert np.var(draws[window_start[i]:i + 1, 0], ddof=1) > 10.0 * sd[0] ** 2
    np.testing.assert_allclose(scale**2, np.var(draws[450:950], axis=0, ddof=1), rtol=1e-10)
    # regularised: Stan's shrinkage of the gradients' estimate (the window of 25 draws ending at 99)
    welford, scale = welford_init(draws[0]), np.ones(3)
    gradients = gradients_init(draws[0], False, None)
    for i in range(100):
        welford, gradients, scale, _ = metric_update(schedule, i, welford, scale, draws[i],
                                                     gradients=gradients, grad=grads[i])
    np.testing.assert_allclose(scale**2, 25 / 30 * sd**2 + 1e-3 * 5 / 30, rtol=1e-9)
    assert gradients_init(draws[0], True, None) is None
