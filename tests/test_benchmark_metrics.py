"""The benchmark's second-moment bias ``b2`` and its reference files
(``benchmarks/targets.py``, ``benchmarks/reference/*.json``). No MCMC is run."""

import os
import sys

import numpy as np
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import targets as bt  # noqa: E402


# ---------------------------------------------------------------------------------------
# b2 on exact draws


def test_b2_of_exact_gaussian_draws_is_monte_carlo_noise():
    """iid N(0, sd^2) draws: b2_i = (m2 - sd^2)^2 / (2 sd^4) is (chi^2_1 / n) in law, so its
    mean over coordinates is about 1/n and its max over D coordinates a few times that."""
    rng = np.random.default_rng(0)
    n, d = 4000, 200
    sd = np.logspace(-2, 0, d)
    draws = rng.standard_normal((4, n // 4, d)) * sd  # (chains, draws, D)
    b2, floor = bt.second_moment_bias(draws, sd**2, 2 * sd**4)
    assert b2.shape == floor.shape == (d,)
    assert np.all(floor == 0)
    assert 0.7 / n < b2.mean() < 1.4 / n
    assert b2.max() < 25.0 / n  # P(chi^2_1 > 25) ~ 6e-7 per coordinate


def test_b2_detects_a_wrong_variance():
    """Draws with 10 % too large a standard deviation: b2 ~ (1.21 - 1)^2 / 2 = 0.022, far
    above the 1/n noise."""
    rng = np.random.default_rng(1)
    n, d = 4000, 50
    draws = 1.1 * rng.standard_normal((n, d))
    b2, _ = bt.second_moment_bias(draws, np.ones(d), 2 * np.ones(d))
    assert np.all(b2 > 0.01)
    assert abs(b2.mean() - 0.21**2 / 2) < 0.01


def test_b2_formula_and_floor_non_gaussian():
    """The general formula on a hand-checkable case, with a reference MC error."""
    draws = np.array([[[1.0, 2.0]], [[3.0, 0.0]]])  # 2 chains x 1 draw x 2 coordinates
    ex2 = np.array([4.0, 1.0])
    var_x2 = np.array([8.0, 4.0])
    mcse = np.array([0.4, 0.2])
    b2, floor = bt.second_moment_bias(draws, ex2, var_x2, mcse)
    m2 = np.array([5.0, 2.0])  # means of x^2 over all chains and draws
    np.testing.assert_allclose(b2, (m2 - ex2) ** 2 / var_x2)
    np.testing.assert_allclose(floor, mcse**2 / var_x2)


def test_b2_against_a_reference_built_from_other_draws():
    """Truth estimated from a second, longer iid sample (a stand-in for the NUTS reference;
    Var[x^2] of a Gamma variable): an unbiased sample's b2 is about 1/n + floor."""
    rng = np.random.default_rng(2)
    d = 50
    ref = rng.gamma(2.0, size=(100_000, d))
    ex2 = np.mean(ref**2, axis=0)
    var_x2 = np.mean(ref**4, axis=0) - ex2**2
    mcse = np.sqrt(var_x2 / ref.shape[0])
    n = 2000
    b2, floor = bt.second_moment_bias(rng.gamma(2.0, size=(n, d)), ex2, var_x2, mcse)
    np.testing.assert_allclose(floor, 1.0 / ref.shape[0], rtol=1e-12)
    assert 0.6 / n < b2.mean() < 1.5 / n


def test_gaussian_truth_matches_the_old_definition():
    """For the Gaussians the general b2 is the former ``(m2 - sd^2)^2 / (2 sd^4)``."""
    sd = np.logspace(-2, 0, 5)
    target = bt.Target("g", "", None, 5, true_sd=sd)
    ex2, var_x2, mcse, source = bt.second_moment_truth(target)
    assert source == "analytic"
    np.testing.assert_allclose(ex2, sd**2)
    np.testing.assert_allclose(var_x2, 2 * sd**4)
    assert np.all(mcse == 0)


# ---------------------------------------------------------------------------------------
# reference files

#: unconstrained dimension and ravel_pytree coordinate names (first, last) of each target
EXPECTED = {
    "eight_schools": (10, "mu", "theta_tilde[7]"),
    "logreg": (31, "w[0]", "w[30]"),
    "eight_schools_centered": (10, "mu", "theta[7]"),
    "hier_500": (504, "beta", "z[499]"),
}


def test_every_non_gaussian_target_has_an_expected_entry():
    assert set(bt.REFERENCE_TARGETS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_file(name):
    ref = bt.load_reference(name)
    assert ref is not None, f"benchmarks/reference/{name}.json is missing (run make_reference.py)"
    dim, first, last = EXPECTED[name]
    assert ref["target"] == name
    assert ref["dim"] == dim
    assert len(ref["coords"]) == dim and ref["coords"][0] == first and ref["coords"][-1] == last
    for key in ("mean", "sd", "ex2", "var_x2", "ex2_mcse", "ess_x2", "b2_floor", "ess_bulk", "rhat"):
        arr = np.asarray(ref[key], dtype=float)
        assert arr.shape == (dim,), key
        assert np.all(np.isfinite(arr)), key
    ex2, var_x2 = np.asarray(ref["ex2"]), np.asarray(ref["var_x2"])
    assert np.all(var_x2 > 0)
    np.testing.assert_allclose(ex2, np.asarray(ref["mean"]) ** 2 + np.asarray(ref["sd"]) ** 2, rtol=1e-8)
    # the reference must resolve biases well below a 1000-draw benchmark's own noise
    assert ref["summary"]["rhat_max"] < 1.01
    assert ref["summary"]["b2_floor_max"] < 2e-4
    np.testing.assert_allclose(ref["b2_floor"], 1.0 / np.asarray(ref["ess_x2"]), rtol=1e-3)
    for key in ("command", "date", "seed", "num_draws", "target_accept_prob", "machine"):
        assert key in ref


def test_hier_500_reference_was_made_from_the_current_data():
    g, x, y = bt.hier_500_data()
    assert g.size == 1992 and np.bincount(g).min() == 2 and np.bincount(g).max() == 6
    ref = bt.load_reference("hier_500")
    assert ref["target_notes"]["data_sha256"] == bt.data_sha256(g, x, y)


def test_coordinate_names_follow_ravel_pytree_order():
    names = bt.coordinate_names({"tau": (), "mu": (), "theta": (3,), "a": (2, 2)})
    assert names == ["a[0,0]", "a[0,1]", "a[1,0]", "a[1,1]", "mu", "tau", "theta[0]", "theta[1]", "theta[2]"]


def test_reference_coordinates_match_the_models(jax_x64):
    """The coordinates in each file are those of the model's unconstrained sample dict, in
    ``ravel_pytree`` order (what ``run_numpyro._flatten_draws`` produces). The latent sites
    are read from a trace of the model (no compilation); their constraints here are all
    elementwise, so the unconstrained shapes are the sites' shapes."""
    import jax.numpy as jnp
    from jax import random
    from jax.flatten_util import ravel_pytree
    from numpyro import handlers

    models = bt.make_targets()
    for name in EXPECTED:
        tr = handlers.trace(handlers.seed(models[name].model, random.PRNGKey(0))).get_trace()
        shapes = {k: np.shape(v["value"]) for k, v in tr.items()
                  if v["type"] == "sample" and not v["is_observed"]}
        names = bt.coordinate_names(shapes)
        assert len(names) == models[name].dim, name
        assert bt.load_reference(name)["coords"] == names, name
        assert bt.second_moment_truth(models[name]) is not None, name
        # ravel_pytree puts coordinate k of the flat vector where coordinate_names says
        tagged = {}
        for k, shp in shapes.items():
            idx = [i for i, n in enumerate(names) if n == k or n.startswith(k + "[")]
            tagged[k] = jnp.asarray(idx, dtype=jnp.float64).reshape(shp)
        np.testing.assert_array_equal(np.asarray(ravel_pytree(tagged)[0]), np.arange(len(names)))


# ---------------------------------------------------------------------------------------
# the ensemble benchmark's MMD and unconstrained reference draws (ensemble_vs_laps.py)


def test_mmd2_of_one_distribution_is_noise_and_of_a_shift_is_not():
    """Two independent samples of one Gaussian: the unbiased MMD^2 scatters around 0 at
    the 1/n scale; a shift of 0.5 sd in one of 5 coordinates is far above that."""
    rng = np.random.default_rng(3)
    n, d = 400, 5
    y = rng.standard_normal((2000, d))
    h = bt.median_bandwidth(y)
    assert 2.0 < h < 4.5  # about sqrt(2 d) for a standard Gaussian
    same = [bt.mmd2(rng.standard_normal((n, d)), y, h) for _ in range(10)]
    assert abs(np.mean(same)) < 1e-3 and max(abs(v) for v in same) < 2e-3
    shifted = rng.standard_normal((n, d))
    shifted[:, 0] += 0.5
    assert bt.mmd2(shifted, y, h) > 7e-3  # about 0.014: ten times the largest noise value
    x = rng.standard_normal((n, d))
    assert bt.mmd2(x, y, h, y_term=bt.mmd2_reference_term(y, h)) == pytest.approx(bt.mmd2(x, y, h))


def test_mmd2_formula_on_a_hand_checked_case():
    """Unbiased estimator: off-diagonal kernel means within each sample, full cross mean."""
    x = np.array([[0.0], [1.0]])
    y = np.array([[0.0], [2.0]])
    k = lambda a, b: np.exp(-((a - b) ** 2) / 2.0)  # noqa: E731 (bandwidth 1)
    want = k(0, 1) + k(0, 2) - 2 * np.mean([k(0, 0), k(0, 2), k(1, 0), k(1, 2)])
    assert bt.mmd2(x, y, 1.0) == pytest.approx(want)


def test_reference_draws_map_to_the_unconstrained_scale_and_back(jax_x64):
    """Stan-style flat names (1-based) for a scalar, a vector and positive and
    unit-interval sites: mapped by unconstrain_fn in ravel_pytree order (sites sorted),
    and constrain_fn maps them back."""
    import jax
    import numpyro
    import numpyro.distributions as dist
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import constrain_fn, initialize_model

    def model():
        numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("beta", dist.Normal(np.zeros(2), 1.0).to_event(1))
        numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("p", dist.Beta(2.0, 2.0))

    rng = np.random.default_rng(0)
    draws = {"mu": rng.normal(size=(2, 3)), "beta[1]": rng.normal(size=(2, 3)),
             "beta[2]": rng.normal(size=(2, 3)), "sigma": rng.gamma(2.0, size=(2, 3)),
             "p": rng.uniform(0.05, 0.95, size=(2, 3))}
    x = bt.reference_unconstrained(model, draws)
    assert x.shape == (6, 5)
    # ravel_pytree order: beta[0], beta[1], mu, p (logit), sigma (log)
    np.testing.assert_allclose(x[:, 0], draws["beta[1]"].ravel())
    np.testing.assert_allclose(x[:, 2], draws["mu"].ravel())
    np.testing.assert_allclose(x[:, 3], np.log(draws["p"] / (1 - draws["p"])).ravel(), rtol=1e-10)
    np.testing.assert_allclose(x[:, 4], np.log(draws["sigma"]).ravel(), rtol=1e-10)
    z0 = initialize_model(jax.random.PRNGKey(0), model).param_info.z
    _, unravel = ravel_pytree(z0)
    back = jax.vmap(lambda v: constrain_fn(model, (), {}, unravel(v)))(x)
    np.testing.assert_allclose(back["sigma"], draws["sigma"].ravel(), rtol=1e-10)
    np.testing.assert_allclose(back["p"], draws["p"].ravel(), rtol=1e-10)
    np.testing.assert_allclose(back["beta"][:, 1], draws["beta[2]"].ravel(), rtol=1e-10)


def test_reference_draws_must_cover_every_latent_site(jax_x64):
    import numpyro
    import numpyro.distributions as dist

    def model():
        numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("sigma", dist.HalfNormal(1.0))

    with pytest.raises(KeyError, match="sigma"):
        bt.reference_unconstrained(model, {"mu": np.zeros(4)})


def test_truth_from_draws():
    x = np.array([[1.0, 0.0], [3.0, 2.0]])
    ex2, var_x2, mcse = bt.truth_from_draws(x)
    np.testing.assert_allclose(ex2, [5.0, 2.0])
    np.testing.assert_allclose(var_x2, [16.0, 4.0])
    np.testing.assert_allclose(mcse, np.sqrt([16.0, 4.0]) / np.sqrt(2))


def test_run_in_process_returns_the_record_an_error_or_a_timeout():
    """``runner.run_in_process`` (``run_posteriordb.py --time-limit``, ``pdb_check.py``): the
    record of a measurement that returns, ``status="error"`` with the message of one that
    raises, and ``status="timeout"`` for one stopped at the limit (the functions are from
    the standard library, importable in the spawned process)."""
    import math
    import time

    import runner

    assert runner.run_in_process(dict, ([("status", "ok"), ("x", 2)],), 60) == {"status": "ok", "x": 2}
    failed = runner.run_in_process(math.sqrt, (-1.0,), 60)
    assert failed["status"] == "error" and "ValueError: math domain error" in failed["error"]
    stopped = runner.run_in_process(time.sleep, (30,), 3)
    assert stopped == {"status": "timeout", "note": "did not finish in 3 s (stopped)"}
