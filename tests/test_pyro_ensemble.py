"""Ensemble mode for Pyro (``esh_kernels.pyro.run_ensemble``, issue 17 item 2): warm start
while the ensemble's bias estimate falls, ``AdjustedESH`` tuned across the ensemble, early
stop; the result is a ``BatchedMCMC``. Mirrors ``tests/test_numpyro_ensemble.py``; the
warm step's agreement with the NumPyro code is in ``tests/test_pyro_cross_backend.py``.

Two runs are shared by the tests (module fixtures), both in float32: a 100-D Gaussian with
scales ``logspace(-2, 0)`` from a start 10x too wide, and a small constrained model with a
deterministic site.
"""

import io
from contextlib import redirect_stdout

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pyro = pytest.importorskip("pyro")

import pyro.distributions as dist  # noqa: E402
from pyro.infer.autoguide.initialization import init_to_uniform  # noqa: E402
from pyro.ops.stats import effective_sample_size  # noqa: E402

import esh_kernels  # noqa: E402
from esh_kernels.pyro import BatchedMCMC, run_ensemble  # noqa: E402
from ensemble_contract import check_stopped_early, check_warm_start_and_tuning  # noqa: E402
from moments import gaussian_moment_z  # noqa: E402

SD = np.logspace(-2, 0, 100)
CHAINS = 256
MAX_WARM = 500
NUM_SAMPLES = 400
CHUNK = 100


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def gaussian():
    pyro.sample("x", dist.Normal(0.0, torch.tensor(SD, dtype=torch.float32)).to_event(1))


@pytest.fixture(scope="module")
def gauss_run():
    torch.set_num_threads(1)
    # init_to_uniform(radius=10): 10x the widest scale, 1000x the narrowest
    return run_ensemble(gaussian, num_chains=CHAINS, num_samples=NUM_SAMPLES, chunk=CHUNK,
                        max_warm_steps=MAX_WARM, bias_tol=0.01, rhat_target=1.01, ess_target=400,
                        rng_seed=0, init_strategy=init_to_uniform(radius=10.0))


def small_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    pyro.deterministic("twice_mu", 2.0 * mu)
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


Y = torch.tensor([1.2, 0.4, 2.1, 1.7, 0.9, 1.3])


def run_small():
    # an ESS target no run of 30 draws can meet: it must run to num_samples
    return run_ensemble(small_model, Y, num_chains=16, num_samples=30, chunk=15, max_warm_steps=300,
                        ess_target=1e9, rng_seed=1)


@pytest.fixture(scope="module")
def small_run():
    torch.set_num_threads(1)
    return run_small()


def test_gaussian_moments_within_monte_carlo_error(gauss_run):
    x = gauss_run.get_samples(group_by_chain=True)["x"].double()
    assert x.shape[0] == CHAINS and x.shape[2] == 100
    ess_x = effective_sample_size(x, chain_dim=0, sample_dim=1).numpy()
    ess_x2 = effective_sample_size(x**2, chain_dim=0, sample_dim=1).numpy()
    assert np.all(ess_x > 100) and np.all(ess_x2 > 100), (ess_x.min(), ess_x2.min())
    flat = x.reshape(-1, 100).numpy()
    mean_z, second_z = gaussian_moment_z(flat, SD, ess_x, ess_x2)
    assert np.max(np.abs(mean_z)) < 5.0, mean_z
    assert np.max(np.abs(second_z)) < 5.0, second_z


def test_warm_start_reduces_bias_and_stops_early(gauss_run):
    # from 1000x too wide (init_to_uniform(radius=10)) to below the tolerance
    check_warm_start_and_tuning(gauss_run.ensemble_info, MAX_WARM, SD**2)


def test_stops_early_once_targets_are_met(gauss_run):
    info = gauss_run.ensemble_info
    check_stopped_early(info, NUM_SAMPLES, CHUNK)
    assert gauss_run.num_samples == info["num_draws"]
    assert gauss_run.get_samples(group_by_chain=True)["x"].shape[1] == info["num_draws"]
    steps = gauss_run.diagnostics()["n_steps"]
    assert len(steps) == CHAINS and all(len(v) == info["num_draws"] for v in steps.values())
    per_chain = np.array([sum(v) for v in steps.values()], dtype=np.float64)
    assert info["gradients"]["sampling"] == pytest.approx(per_chain.mean())
    g = info["gradients"]
    assert g["total"] == pytest.approx(g["warm"] + g["tune"] + g["sampling"])


def test_float32_has_no_nan(gauss_run):
    x = gauss_run.get_samples()["x"]
    assert x.dtype == torch.float32
    assert bool(torch.isfinite(x).all())
    assert not any(gauss_run.diagnostics()["divergences"].values())
    assert np.all(np.isfinite(gauss_run.ensemble_info["inverse_mass_matrix"]))


def test_runs_to_num_samples_when_targets_are_not_met(small_run):
    info = small_run.ensemble_info
    assert not info["stopped_early"] and info["num_draws"] == 30
    assert [c["draws"] for c in info["checks"]] == [15, 30]
    samples = small_run.get_samples()
    assert samples["sigma"].shape == (16 * 30,) and bool((samples["sigma"] > 0).all())
    # the deterministic site is not part of Pyro's samples (as with pyro.infer.MCMC);
    # the chains move
    assert not torch.equal(samples["mu"][:30], samples["mu"][30:60])


def test_same_seed_same_draws(small_run):
    again = run_small()
    for name in ("mu", "sigma"):
        assert torch.equal(again.get_samples()[name], small_run.get_samples()[name])
    np.testing.assert_array_equal(again.ensemble_info["bias_trace"], small_run.ensemble_info["bias_trace"])


def test_result_is_a_batched_mcmc_that_pyro_and_arviz_read(small_run):
    assert isinstance(small_run, BatchedMCMC)
    grouped = small_run.get_samples(group_by_chain=True)
    assert grouped["mu"].shape == (16, 30)
    diag = small_run.diagnostics()
    assert set(diag["mu"]) >= {"n_eff", "r_hat"} and len(diag["divergences"]) == 16
    out = io.StringIO()
    with redirect_stdout(out):
        small_run.summary()
    text = out.getvalue()
    assert "mu" in text and "sigma" in text and "n_eff" in text and "r_hat" in text
    idata = esh_kernels.to_arviz(small_run)
    assert idata.posterior["mu"].shape == (16, 30)
    assert "acceptance_rate" in idata.sample_stats and "diverging" in idata.sample_stats


def test_potential_fn_with_initial_params():
    """``potential_fn`` on ``{site: (C, *shape)}`` with ``initial_params`` (BatchedMCMC's
    batched form): a 2-D Gaussian with scales 1 and 3 started at 20, float64."""
    scale = torch.tensor([1.0, 3.0], dtype=torch.float64)

    def potential(z):
        return 0.5 * ((z["x"] / scale) ** 2).sum(-1)

    init = {"x": torch.full((64, 2), 20.0, dtype=torch.float64) + torch.randn(64, 2, dtype=torch.float64)}
    mcmc = run_ensemble(potential_fn=potential, initial_params=init, num_chains=64, num_samples=200,
                        chunk=50, rng_seed=3)
    info = mcmc.ensemble_info
    assert info["bias_trace"][0] > 1.0 and info["bias_trace"][-1] < 0.01
    # 64 chains for 2 dimensions: the dense estimate (core.ensemble.tune_metric)
    np.testing.assert_allclose(info["inverse_mass_matrix"], np.diag([1.0, 9.0]), rtol=0.3, atol=0.3)
    x = mcmc.get_samples()["x"]
    assert x.dtype == torch.float64
    np.testing.assert_allclose(x.std(0).numpy(), [1.0, 3.0], rtol=0.15)


@pytest.mark.parametrize("kwargs, name", [
    ({"num_chains": 1}, "num_chains"),
    ({"bias_tol": 0.0}, "bias_tol"),
    ({"bias_tol": -1.0}, "bias_tol"),
    ({"ess_target": 0}, "ess_target"),
    ({"rhat_target": 1.0}, "rhat_target"),
    ({"num_samples": 0}, "num_samples"),
    ({"chunk": 0}, "chunk"),
    ({"max_warm_steps": 0}, "max_warm_steps"),
    ({"max_tune_steps": 0}, "max_tune_steps"),
    ({"rng_seed": -1}, "rng_seed"),
    ({"progress_bar": "yes"}, "progress_bar"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        run_ensemble(gaussian, **kwargs)


def test_initial_params_must_match_num_chains():
    with pytest.raises(ValueError, match="num_chains=16"):
        run_ensemble(gaussian, num_chains=16, initial_params={"x": torch.zeros(8, 100)})


def test_one_dimensional_model_is_refused():
    def one_d():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="at least 2 unconstrained"):
        run_ensemble(one_d, num_chains=4)
