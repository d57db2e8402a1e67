"""Ensemble mode (``esh_kernels.numpyro.run_ensemble``, issue 17 item 2): warm start while
the ensemble's bias estimate falls, ``AdjustedESH`` tuned across the ensemble, early stop.

Two runs are shared by the tests (module fixtures), both in JAX's default float32: a
100-D Gaussian with scales ``logspace(-2, 0)`` from a start 10x too wide, and a small
constrained model with a deterministic site.
"""

import io
from contextlib import redirect_stdout

import jax
import jax.numpy as jnp
import numpy as np
import pytest

numpyro = pytest.importorskip("numpyro")
import numpyro.distributions as dist  # noqa: E402
from numpyro.diagnostics import effective_sample_size  # noqa: E402
from numpyro.infer import MCMC  # noqa: E402
from numpyro.infer.initialization import init_to_uniform  # noqa: E402

import esh_kernels  # noqa: E402
from esh_kernels.numpyro import run_ensemble  # noqa: E402
from ensemble_contract import check_stopped_early, check_warm_start_and_tuning  # noqa: E402
from moments import gaussian_moment_z  # noqa: E402

SD = np.logspace(-2, 0, 100)
MAX_WARM = 500
NUM_SAMPLES = 400
CHUNK = 100


def gaussian():
    numpyro.sample("x", dist.Normal(0.0, jnp.asarray(SD, dtype=jnp.float32)))


@pytest.fixture(scope="module")
def gauss_run():
    # init_to_uniform(radius=10): 10x the widest scale, 1000x the narrowest
    return run_ensemble(gaussian, jax.random.PRNGKey(0), num_chains=256, num_samples=NUM_SAMPLES,
                        chunk=CHUNK, max_warm_steps=MAX_WARM, bias_tol=0.01, rhat_target=1.01,
                        ess_target=400, init_strategy=init_to_uniform(radius=10.0))


def small_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    numpyro.deterministic("twice_mu", 2.0 * mu)
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


Y = jnp.array([1.2, 0.4, 2.1, 1.7, 0.9, 1.3])


@pytest.fixture(scope="module")
def small_run():
    # an ESS target no run of 30 draws can meet: it must run to num_samples
    return run_ensemble(small_model, jax.random.PRNGKey(1), Y, num_chains=16, num_samples=30,
                        chunk=15, max_warm_steps=300, ess_target=1e9)


def test_gaussian_moments_within_monte_carlo_error(gauss_run):
    x = np.asarray(gauss_run.get_samples(group_by_chain=True)["x"], dtype=np.float64)
    assert x.shape[0] == 256 and x.shape[2] == 100
    flat = x.reshape(-1, 100)
    ess_x = effective_sample_size(x)
    ess_x2 = effective_sample_size(x**2)
    assert np.all(ess_x > 100) and np.all(ess_x2 > 100), (ess_x.min(), ess_x2.min())
    mean_z, second_z = gaussian_moment_z(flat, SD, ess_x, ess_x2)
    assert np.max(np.abs(mean_z)) < 5.0, mean_z
    assert np.max(np.abs(second_z)) < 5.0, second_z


def test_warm_start_reduces_bias_and_stops_early(gauss_run):
    # from 1000x too wide (init_to_uniform(radius=10)) to below the tolerance
    check_warm_start_and_tuning(gauss_run.ensemble_info, MAX_WARM, SD**2)


def test_stops_early_once_targets_are_met(gauss_run):
    info = gauss_run.ensemble_info
    check_stopped_early(info, NUM_SAMPLES, CHUNK)
    x = gauss_run.get_samples(group_by_chain=True)["x"]
    assert x.shape[1] == info["num_draws"]
    steps = np.asarray(gauss_run.get_extra_fields(group_by_chain=True)["n_steps"], dtype=np.float64)
    assert steps.shape == (256, info["num_draws"])
    assert info["gradients"]["sampling"] == pytest.approx(np.mean(np.sum(steps, axis=1)))


#: an 8-D Gaussian with correlation -0.95 between neighbours' pairs and scales 0.1-10
_CORR_D = 8
_CORR_SD = np.logspace(-1, 1, _CORR_D)
_CORR = np.eye(_CORR_D) + np.diag(np.tile([-0.95, 0.0], _CORR_D // 2)[:-1], 1) \
    + np.diag(np.tile([-0.95, 0.0], _CORR_D // 2)[:-1], -1)
_CORR_COV = _CORR * np.outer(_CORR_SD, _CORR_SD)


def correlated():
    numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(_CORR_D), jnp.asarray(_CORR_COV, jnp.float32)))


def test_correlated_target_gets_the_dense_metric():
    """With at least ``DENSE_MIN_CHAINS_PER_DIM`` chains per dimension (here 256 for 8-D)
    the adjusted phase whitens with the ensemble's dense metric
    (``core.ensemble.dense_gradient_metric``): on a Gaussian with correlations -0.95 its
    inverse mass matrix is the covariance (its correlations too, which a diagonal metric
    cannot hold), the draws' covariance matches within Monte Carlo error, and the chains
    agree (R-hat) after 100 draws."""
    run = run_ensemble(correlated, jax.random.PRNGKey(4), num_chains=256, num_samples=100,
                       chunk=100, ess_target=1e9)
    imm = np.asarray(run.ensemble_info["inverse_mass_matrix"], dtype=np.float64)
    assert imm.shape == (_CORR_D, _CORR_D)
    sd = np.sqrt(np.diag(imm))
    np.testing.assert_allclose(sd, _CORR_SD, rtol=0.15)
    np.testing.assert_allclose(imm / np.outer(sd, sd), _CORR, atol=0.05)
    x = np.asarray(run.get_samples(group_by_chain=True)["x"], dtype=np.float64)
    ess = effective_sample_size(x)
    assert np.all(ess > 1000), ess
    flat = x.reshape(-1, _CORR_D)
    mean_z = flat.mean(0) / (_CORR_SD / np.sqrt(ess))
    assert np.max(np.abs(mean_z)) < 5.0, mean_z
    np.testing.assert_allclose(flat.std(0), _CORR_SD, rtol=0.05)
    assert run.ensemble_info["checks"][-1]["rhat_max"] < 1.05


def test_float32_has_no_nan(gauss_run):
    x = gauss_run.get_samples()["x"]
    assert x.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(x)))
    assert not np.any(np.asarray(gauss_run.get_extra_fields()["diverging"]))


def test_runs_to_num_samples_when_targets_are_not_met(small_run):
    info = small_run.ensemble_info
    assert not info["stopped_early"] and info["num_draws"] == 30
    assert [c["draws"] for c in info["checks"]] == [15, 30]
    samples = small_run.get_samples()
    assert samples["sigma"].shape == (16 * 30,) and np.all(np.asarray(samples["sigma"]) > 0)
    np.testing.assert_allclose(np.asarray(samples["twice_mu"]), 2.0 * np.asarray(samples["mu"]), rtol=1e-5)


def test_result_is_an_mcmc_that_numpyro_and_arviz_read(small_run):
    assert isinstance(small_run, MCMC)
    out = io.StringIO()
    with redirect_stdout(out):
        small_run.print_summary()
    text = out.getvalue()
    assert "mu" in text and "sigma" in text and "n_eff" in text and "r_hat" in text
    idata = esh_kernels.to_arviz(small_run)
    assert idata.posterior["mu"].shape == (16, 30)
    assert "twice_mu" in idata.posterior and "acceptance_rate" in idata.sample_stats


@pytest.mark.parametrize("kwargs, name", [
    ({"num_chains": 1}, "num_chains"),
    ({"bias_tol": 0.0}, "bias_tol"),
    ({"bias_tol": -1.0}, "bias_tol"),
    ({"ess_target": 0}, "ess_target"),
    ({"rhat_target": 1.0}, "rhat_target"),
    ({"num_samples": 0}, "num_samples"),
    ({"chunk": 0}, "chunk"),
    ({"max_warm_steps": 0}, "max_warm_steps"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        run_ensemble(gaussian, jax.random.PRNGKey(0), **kwargs)


def test_key_batch_must_match_num_chains():
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    with pytest.raises(ValueError, match="num_chains=16 but 8 chain keys"):
        run_ensemble(gaussian, keys, num_chains=16)
    with pytest.raises(ValueError, match="num_chains"):
        run_ensemble(gaussian, keys[:1])


def test_one_dimensional_model_is_refused():
    def one_d():
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="at least 2 unconstrained dimensions"):
        run_ensemble(one_d, jax.random.PRNGKey(0), num_chains=4)
