"""Checks of the paper-suite benchmark code (``benchmarks/paper_*.py``): the MMD estimator,
the paper's ESS, the budget bookkeeping, the ergodic draws of ESH-leap, the targets and
the Metropolis baselines. Fast (no long MCMC); statistical checks use fixed seeds and
tolerances of several Monte Carlo standard errors."""

import os
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("numpyro")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from paper_metrics import MMD, gaussian_kernel, median_bandwidth, paper_ess, states_at_budgets  # noqa: E402
from paper_samplers import ergodic_draws, run_langevin  # noqa: E402
from paper_targets import make_paper_targets  # noqa: E402


@pytest.fixture(scope="module")
def targets():
    return make_paper_targets()


def test_median_bandwidth_is_median_of_all_squared_distances():
    y = np.random.default_rng(0).normal(size=(300, 3))
    d2 = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    assert median_bandwidth(y) == pytest.approx(np.median(d2), rel=1e-12)


def test_mmd_matches_brute_force_u_statistic():
    rng = np.random.default_rng(1)
    y, x = rng.normal(size=(40, 2)), rng.normal(0.3, 1.2, size=(7, 2))
    mmd = MMD(y, bandwidth=0.7)
    k = lambda a, b: gaussian_kernel(((a - b) ** 2).sum(), 0.7)  # noqa: E731
    kyy = np.mean([k(y[j], y[l]) for j in range(40) for l in range(40) if j != l])
    kxx = np.mean([k(x[i], x[j]) for i in range(7) for j in range(7) if i != j])
    kxy = np.mean([k(x[i], y[j]) for i in range(7) for j in range(40)])
    assert mmd(x)[0] == pytest.approx(kyy + kxx - 2 * kxy, rel=1e-10)


def test_mmd_is_unbiased_for_exact_draws_and_detects_a_shift():
    rng = np.random.default_rng(2)
    mmd = MMD(rng.normal(size=(2000, 2)))
    exact = np.array([mmd(rng.normal(size=(32, 2)))[0] for _ in range(200)])
    # mean zero within 4 standard errors; a shift of 0.5 sd is far above that
    assert abs(exact.mean()) < 4 * exact.std() / np.sqrt(len(exact))
    shifted = np.array([mmd(rng.normal(0.5, 1.0, size=(32, 2)))[0] for _ in range(50)])
    assert shifted.mean() > exact.mean() + 10 * exact.std() / np.sqrt(len(exact))
    est, lo, hi = mmd(rng.normal(size=(32, 2)), rng=rng)
    assert lo <= est <= hi


def test_paper_ess_of_iid_and_ar1_chains():
    rng = np.random.default_rng(3)
    T = 20000
    one = (np.zeros(1), np.ones(1), np.array([[1.0], [np.sqrt(2.0)]]))
    iid = paper_ess(rng.normal(size=(T, 1)), *one)
    assert iid == pytest.approx(T, rel=0.1)
    rho = 0.9
    z = np.empty(T)
    z[0] = rng.normal()
    for t in range(1, T):
        z[t] = rho * z[t - 1] + np.sqrt(1 - rho**2) * rng.normal()
    expected = T * (1 - rho) / (1 + rho)  # the x feature (x^2 mixes faster: rho^2)
    assert paper_ess(z[:, None], *one) == pytest.approx(expected, rel=0.25)
    # a chain stuck away from the truth has a large uncentred autocovariance: tiny ESS
    stuck = paper_ess(3.0 + 0.01 * rng.normal(size=(T, 1)), *one)
    assert stuck < 0.01 * T


def test_states_at_budgets_takes_the_last_state_within_each_budget():
    states = np.arange(2 * 4 * 1, dtype=float).reshape(2, 4, 1)
    grads = np.array([[0, 3, 7, 12], [0, 5, 6, 20]])
    at, ok = states_at_budgets(states, grads, [2, 6, 12, 100])
    assert ok.all()
    assert at[:, 0, 0].tolist() == [0, 1, 3, 3]
    assert at[:, 1, 0].tolist() == [4, 6, 6, 7]
    _, ok = states_at_budgets(states, np.array([[1, 3, 7, 12], [0, 5, 6, 20]]), [0, 2])
    assert ok.tolist() == [False, True]


def test_ergodic_draws_follow_the_time_weights_up_to_each_budget():
    rng = np.random.default_rng(4)
    C = 4000
    traj = np.tile(np.arange(4.0)[:, None, None], (1, C, 1))  # point k sits at k
    log_w = np.log(np.tile(np.array([1.0, 1e-300, 3.0, 5.0])[:, None], (1, C)))
    draws = ergodic_draws(traj, log_w, [1, 2, 3], rng)
    assert np.all(draws[0] == 0.0)  # budget 1: points 0 (w 1) and 1 (w ~0)
    frac2 = np.mean(draws[1][:, 0] == 2.0)  # budget 2: w (1, 0, 3) -> 3/4 at point 2
    assert frac2 == pytest.approx(0.75, abs=4 * np.sqrt(0.75 * 0.25 / C))
    frac3 = np.mean(draws[2][:, 0] == 3.0)  # budget 3: 5/9 at point 3
    assert frac3 == pytest.approx(5 / 9, abs=4 * np.sqrt(5 / 9 * 4 / 9 / C))


def test_targets_reference_draws_whitening_and_energies(targets):
    from scipy.stats import multivariate_normal, norm

    rng = np.random.default_rng(5)
    n = 200000
    for name in ("scg", "icg", "mog"):
        t = targets[name]
        y = t.sample_true(rng, n)
        se = np.sqrt(2.0 / n) * t.true_var
        assert np.all(np.abs(np.mean(y**2, 0) - t.true_var) < 5 * se * (3 if name == "mog" else 1)), name
    w = targets["scg"].whiten(targets["scg"].sample_true(rng, n))
    assert np.allclose(np.cov(w.T), np.eye(2), atol=0.02)
    # energies are -log p up to a constant
    cov = np.array([[0.505, -0.495], [-0.495, 0.505]])
    pts = rng.normal(size=(5, 2))
    e = np.array([float(targets["scg"].energy(p)) for p in pts])
    lp = multivariate_normal(np.zeros(2), cov).logpdf(pts)
    assert np.allclose(e - e[0], -(lp - lp[0]), atol=1e-6)
    f = targets["funnel"]
    pts = f.sample_true(rng, 5)
    e = np.array([float(f.energy(p)) for p in pts])
    lp = norm(0, 3).logpdf(pts[:, 0]) + norm(0, np.exp(-pts[:, :1] / 2)).logpdf(pts[:, 1:]).sum(1)
    assert np.allclose(e - e[0], -(lp - lp[0]), atol=1e-5)
    # the MOG energy is normalised: int exp(-E) = 1 (grid quadrature)
    g = np.linspace(-1.2, 1.2, 481)
    xx = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    mog_e = np.asarray(jax.vmap(targets["mog"].energy)(jax.numpy.asarray(xx)))
    assert np.sum(np.exp(-mog_e)) * (g[1] - g[0]) ** 2 == pytest.approx(1.0, abs=1e-3)


def test_mala_baseline_keeps_the_target_invariant(targets):
    """Chains started from exact draws stay exact under the Metropolis-adjusted
    baselines (a wrong acceptance ratio would drift the variance)."""
    t = targets["scg"]
    rng = np.random.default_rng(6)
    C = 2000
    x0 = t.sample_true(rng, C)
    for step, k in ((0.1, 1), (0.05, 5)):
        tr = run_langevin(t, x0, 200, jax.random.PRNGKey(0), step, k, True)
        final = tr.states[:, -1]
        se = np.sqrt(2.0 / C) * t.true_var
        assert np.all(np.abs(np.mean(final**2, 0) - t.true_var) < 5 * se), (step, k)
        assert 0.05 < tr.info["accept_mean"] < 1.0
