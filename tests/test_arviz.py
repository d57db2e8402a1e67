"""``esh_kernels.to_arviz`` on NumPyro and Pyro runs, for the installed ArviZ generation.

The main suite runs this with ArviZ 0.x (Python 3.11); ``.ci/arviz1.sh`` runs it again in a
Python 3.12 venv with ArviZ 1.x and no torch, where the Pyro tests skip themselves.
Progress bars: NumPyro and Pyro switch them off when ``CI`` is set, so the progress-bar
tests unset it.
"""

import subprocess
import sys

import numpy as np
import pytest

az = pytest.importorskip("arviz")

import esh_kernels  # noqa: E402
from esh_kernels.arviz import arviz_generation, to_arviz, sample_stats_fields  # noqa: E402
from eight_schools_data import SIGMA, Y  # noqa: E402

GEN = arviz_generation()
SCHOOLS = list("ABCDEFGH")


def _is_arviz_object(data):
    if GEN >= 1:
        import xarray

        return isinstance(data, xarray.DataTree)
    return isinstance(data, az.InferenceData)


def _groups(data):
    if GEN >= 1:
        return set(data.children)
    return set(data.groups())


def _save_plots(data, tmp_path, divergences):
    """Trace, rank and (0.x) pair plots with divergences, saved as PNG files."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if GEN >= 1:
        pc = az.plot_trace_dist(data, var_names=["mu", "tau"], backend="matplotlib")
        paths.append(tmp_path / "trace_dist.png")
        pc.savefig(paths[-1])
        pc = az.plot_rank(data, var_names=["mu", "tau"], backend="matplotlib")
        paths.append(tmp_path / "rank.png")
        pc.savefig(paths[-1])
    else:
        axes = az.plot_trace(data, var_names=["mu", "tau"], divergences="bottom" if divergences else None)
        paths.append(tmp_path / "trace.png")
        axes.ravel()[0].figure.savefig(paths[-1])
        axes = az.plot_rank(data, var_names=["mu", "tau"])
        paths.append(tmp_path / "rank.png")
        np.ravel(axes)[0].figure.savefig(paths[-1])
        axes = az.plot_pair(data, var_names=["mu", "tau"], divergences=divergences)
        paths.append(tmp_path / "pair.png")
        np.ravel(axes)[0].figure.savefig(paths[-1])
    plt.close("all")
    for path in paths:
        assert path.stat().st_size > 1000


def test_import_is_lazy():
    code = (
        "import sys, esh_kernels\n"
        "heavy = ('jax', 'torch', 'arviz', 'numpyro', 'pyro')\n"
        "assert not [m for m in heavy if m in sys.modules], sys.modules.keys()\n"
        "f = esh_kernels.to_arviz; g = esh_kernels.sample_stats_fields\n"
        "assert f.__module__ == 'esh_kernels.arviz'\n"
        "assert not [m for m in heavy if m in sys.modules]\n"
        "assert 'to_arviz' in dir(esh_kernels)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rejects_other_objects():
    with pytest.raises(TypeError, match="to_arviz expects"):
        to_arviz(object())


# -- NumPyro ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def np_model():
    pytest.importorskip("numpyro")
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def eight_schools(sigma, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("J", sigma.shape[0]):
            theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
            numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)

    return eight_schools, (jnp.array(SIGMA),), {"y": jnp.array(Y)}


def _np_run(kernel, args, kwargs, num_chains=2, chain_method="vectorized", extra=True, **mcmc_kw):
    import jax
    from numpyro.infer import MCMC

    mcmc = MCMC(kernel, num_warmup=mcmc_kw.pop("num_warmup", 150),
                num_samples=mcmc_kw.pop("num_samples", 60), num_chains=num_chains,
                chain_method=chain_method, progress_bar=False, **mcmc_kw)
    fields = sample_stats_fields(mcmc) if extra else ()
    mcmc.run(jax.random.PRNGKey(1), *args, extra_fields=fields, **kwargs)
    return mcmc


@pytest.fixture(scope="module")
def np_adjusted(np_model):
    from esh_kernels.numpyro import AdjustedESH

    model, args, kwargs = np_model
    return _np_run(AdjustedESH(model), args, kwargs)


def test_sample_stats_fields_numpyro(np_model):
    from numpyro.infer import MCMC, NUTS

    from esh_kernels.numpyro import ESH, AdjustedESH, TunedHMC

    model = np_model[0]
    esh = sample_stats_fields(ESH(model))
    assert set(esh) == {"diverging", "potential_energy", "adapt_state.step_size", "n_steps", "energy_error"}
    adjusted = sample_stats_fields(AdjustedESH(model))
    assert set(adjusted) == set(esh) | {"accept_prob", "mean_accept_prob"}
    assert set(sample_stats_fields(TunedHMC(model))) == set(adjusted) | {"energy"}
    mcmc = MCMC(NUTS(model), num_warmup=1, num_samples=1, progress_bar=False)
    nuts = sample_stats_fields(mcmc)  # an MCMC works too
    assert {"num_steps", "accept_prob", "energy", "potential_energy"} <= set(nuts)
    assert sample_stats_fields(object()) == ()


def test_numpyro_groups_stats_and_dims(np_adjusted):
    mcmc = np_adjusted
    data = to_arviz(mcmc, coords={"J": SCHOOLS})
    assert _is_arviz_object(data)
    assert {"posterior", "sample_stats", "observed_data"} <= _groups(data)
    assert "log_likelihood" not in _groups(data)

    post = data["posterior"]
    assert set(post.data_vars) == {"mu", "tau", "theta_tilde", "theta"}
    assert post["theta"].dims == ("chain", "draw", "J")  # named after the plate
    assert list(post["J"].values) == SCHOOLS
    samples = mcmc.get_samples(group_by_chain=True)
    np.testing.assert_array_equal(post["tau"].values, np.asarray(samples["tau"]))
    np.testing.assert_array_equal(post["theta"].values, np.asarray(samples["theta"]))

    stats = data["sample_stats"]
    expected = {"diverging", "acceptance_rate", "step_size", "lp", "n_steps", "energy_error",
                "mean_accept_prob", "energy"}  # energy: AdjustedESH's potential energy (docs/arviz.md)
    assert set(stats.data_vars) == expected
    assert "tree_depth" not in stats.data_vars
    assert stats["diverging"].dtype == bool
    assert stats["lp"].dims == ("chain", "draw") and stats["lp"].shape == (2, 60)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    np.testing.assert_allclose(stats["lp"].values, -np.asarray(extra["potential_energy"]))
    np.testing.assert_allclose(stats["acceptance_rate"].values, np.asarray(extra["accept_prob"]))
    np.testing.assert_allclose(stats["step_size"].values, np.asarray(extra["adapt_state.step_size"]))
    assert np.all(stats["n_steps"].values >= 1)

    obs = data["observed_data"]["obs"]
    assert obs.dims == ("J",)
    np.testing.assert_allclose(obs.values, Y)


def test_numpyro_user_dims_override_and_log_likelihood(np_adjusted):
    data = to_arviz(np_adjusted, dims={"theta": ["school"], "obs": ["school"]},
                    coords={"school": SCHOOLS}, log_likelihood=True)
    assert data["posterior"]["theta"].dims == ("chain", "draw", "school")
    assert data["posterior"]["theta_tilde"].dims == ("chain", "draw", "J")
    loglik = data["log_likelihood"]["obs"]
    assert loglik.dims == ("chain", "draw", "school")
    assert np.all(np.isfinite(loglik.values))
    no_obs = to_arviz(np_adjusted, observed_data=False, infer_dims=False)
    assert "observed_data" not in _groups(no_obs)
    assert no_obs["posterior"]["theta"].dims == ("chain", "draw", "theta_dim_0")


def test_numpyro_summary_and_plots(np_adjusted, tmp_path):
    data = to_arviz(np_adjusted)
    summary = az.summary(data, var_names=["mu", "tau"])
    assert list(summary.index) == ["mu", "tau"]
    assert "ess_bulk" in summary.columns and "r_hat" in summary.columns
    assert np.all(np.isfinite(summary["ess_bulk"].values))
    # divergence display: mark two draws as divergent
    data["sample_stats"]["diverging"].values[0, [3, 17]] = True
    _save_plots(data, tmp_path, divergences=True)


@pytest.mark.parametrize("name", ["ESH", "TunedHMC"])
def test_numpyro_other_kernels(np_model, name):
    import esh_kernels.numpyro as ek

    model, args, kwargs = np_model
    mcmc = _np_run(getattr(ek, name)(model), args, kwargs, num_warmup=100, num_samples=30)
    stats = to_arviz(mcmc)["sample_stats"]
    common = {"diverging", "step_size", "lp", "n_steps", "energy_error"}
    assert common <= set(stats.data_vars)
    assert "tree_depth" not in stats.data_vars
    if name == "ESH":  # unadjusted: no acceptance probability
        assert "acceptance_rate" not in stats.data_vars
    else:
        assert {"acceptance_rate", "energy", "mean_accept_prob"} <= set(stats.data_vars)


def test_numpyro_nuts_no_tree_depth(np_model):
    from numpyro.infer import NUTS

    model, args, kwargs = np_model
    mcmc = _np_run(NUTS(model), args, kwargs, num_chains=1, chain_method="sequential",
                   num_warmup=30, num_samples=20)
    stats = to_arviz(mcmc)["sample_stats"]
    assert stats["n_steps"].shape == (1, 20)
    assert "tree_depth" not in stats.data_vars and "reached_max_tree_depth" not in stats.data_vars


@pytest.mark.parametrize("name", ["ESH", "AdjustedESH", "TunedHMC"])
def test_numpyro_default_fields_give_full_sample_stats(np_model, name):
    """Without ``extra_fields`` (the README's snippet) the kernels still collect what ArviZ
    needs, ``az.plot_energy`` / ``az.bfmi`` work, and the isokinetic kernels' ``energy``
    is their potential energy (``docs/arviz.md``)."""
    import arviz as az
    import matplotlib

    import esh_kernels.numpyro as kernels

    matplotlib.use("Agg")
    model, args, kwargs = np_model
    mcmc = _np_run(getattr(kernels, name)(model), args, kwargs, num_chains=1, extra=False,
                   num_warmup=30, num_samples=10, thinning=2)
    data = to_arviz(mcmc)
    stats = data["sample_stats"]
    need = {"diverging", "lp", "step_size", "n_steps", "energy_error", "energy"}
    if name != "ESH":
        need |= {"acceptance_rate"}
    assert need <= set(stats.data_vars)
    assert data["posterior"]["mu"].shape == (1, 5)
    assert stats["energy"].shape == (1, 5)
    if name != "TunedHMC":
        np.testing.assert_array_equal(stats["energy"].values, -stats["lp"].values)
    if arviz_generation() >= 1:
        assert np.all(np.isfinite(az.bfmi(data)["energy"].values))
        az.plot_energy(data, backend="matplotlib")
    else:
        assert np.all(np.isfinite(az.bfmi(data)))
        az.plot_energy(data)


def test_numpyro_potential_fn():
    pytest.importorskip("numpyro")
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC

    from esh_kernels.numpyro import AdjustedESH

    kernel = AdjustedESH(potential_fn=lambda x: 0.5 * jnp.sum(x**2))
    mcmc = MCMC(kernel, num_warmup=30, num_samples=20, num_chains=2, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), init_params=jnp.zeros((2, 3)),
             extra_fields=sample_stats_fields(kernel))
    data = to_arviz(mcmc)
    assert data["posterior"]["Param:0"].shape == (2, 20, 3)
    assert "observed_data" not in _groups(data)
    assert {"lp", "acceptance_rate"} <= set(data["sample_stats"].data_vars)


def test_az_from_numpyro_still_works(np_adjusted):
    data = az.from_numpyro(np_adjusted)
    stats = data["sample_stats"]
    assert {"lp", "acceptance_rate", "step_size", "n_steps", "diverging"} <= set(stats.data_vars)
    assert "tree_depth" not in stats.data_vars  # the kernels name it n_steps, not num_steps
    assert set(data["posterior"].data_vars) >= {"mu", "tau", "theta_tilde"}
    assert az.summary(data, var_names=["mu"]).shape[0] == 1


@pytest.mark.parametrize("name", ["ESH", "AdjustedESH"])
def test_numpyro_energy_extra_field_as_for_nuts(np_model, name):
    """``extra_fields=("energy",)``, as a NUTS script asks for ``az.bfmi`` /
    ``az.plot_energy``: the isokinetic kernels' Hamiltonian at a draw, their potential energy
    (``core/state_fields.py``); before, a ``KeyError`` (the states had no such field)."""
    import jax
    from numpyro.infer import MCMC

    import esh_kernels.numpyro as kernels

    model, args, kwargs = np_model
    mcmc = MCMC(getattr(kernels, name)(model), num_warmup=40, num_samples=30, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), *args, extra_fields=("energy", "potential_energy"), **kwargs)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    assert extra["energy"].shape == (2, 30)
    np.testing.assert_array_equal(np.asarray(extra["energy"]), np.asarray(extra["potential_energy"]))
    data = az.from_numpyro(mcmc)
    np.testing.assert_array_equal(data["sample_stats"]["energy"].values, np.asarray(extra["energy"]))
    bfmi = az.bfmi(data)
    bfmi = bfmi["energy"].values if arviz_generation() >= 1 else np.asarray(bfmi)
    assert bfmi.shape == (2,) and np.all(np.isfinite(bfmi))


@pytest.mark.parametrize("name, expected", [
    ("AdjustedESH", ("steps of size", "acc. prob=")),
])
def test_numpyro_progress_bar_diagnostics(np_model, monkeypatch, capsys, name, expected):
    import jax
    from numpyro.infer import MCMC

    import esh_kernels.numpyro as ek

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    model, args, kwargs = np_model
    mcmc = MCMC(getattr(ek, name)(model), num_warmup=20, num_samples=20, progress_bar=True)
    assert mcmc.progress_bar
    mcmc.run(jax.random.PRNGKey(0), *args, **kwargs)
    err = capsys.readouterr().err
    assert "sample" in err
    for text in expected:
        assert text in err, err[-500:]


# -- Pyro -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyro_model():
    torch = pytest.importorskip("torch")
    pyro = pytest.importorskip("pyro")
    pytest.importorskip("esh_kernels.pyro")
    import pyro.distributions as dist

    def eight_schools(sigma, y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("J", sigma.shape[0]):
            theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)

    return eight_schools, (torch.tensor(SIGMA),), {"y": torch.tensor(Y)}


def _pyro_mcmc(kernel, args, kwargs, warmup=60, samples=30, chains=2, progress=False):
    import pyro
    from pyro.infer import MCMC

    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel, warmup_steps=warmup, num_samples=samples, num_chains=chains,
                disable_progbar=not progress, mp_context=None)
    with _no_chain_warning():
        mcmc.run(*args, **kwargs)
    return mcmc


class _no_chain_warning:
    """Silence Pyro's 'chains will be drawn sequentially' warning on small machines."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message=".*Chains will be drawn sequentially.*")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


@pytest.fixture(scope="module")
def pyro_adjusted(pyro_model):
    from esh_kernels.pyro import AdjustedESH

    model, args, kwargs = pyro_model
    return _pyro_mcmc(AdjustedESH(model), args, kwargs)


def test_pyro_groups_and_stats(pyro_adjusted):
    import torch

    mcmc = pyro_adjusted
    state = torch.get_rng_state()
    data = to_arviz(mcmc, coords={"J": SCHOOLS})
    assert torch.equal(state, torch.get_rng_state())  # tracing the model drew nothing
    assert _is_arviz_object(data)
    post = data["posterior"]
    assert set(post.data_vars) == {"mu", "tau", "theta_tilde"}
    assert post["theta_tilde"].dims == ("chain", "draw", "J")
    samples = mcmc.get_samples(group_by_chain=True)
    np.testing.assert_allclose(post["tau"].values, samples["tau"].numpy())

    stats = data["sample_stats"]
    assert {"diverging", "acceptance_rate", "step_size", "lp", "n_steps", "energy_error",
            "trajectory_length"} <= set(stats.data_vars)
    assert "tree_depth" not in stats.data_vars
    assert stats["diverging"].dtype == bool
    assert stats["n_steps"].dtype.kind == "i"
    for c in range(2):
        diag = mcmc._diagnostics[c]
        np.testing.assert_allclose(stats["lp"].values[c], -np.asarray(diag["potential_energy"]))
        np.testing.assert_allclose(stats["acceptance_rate"].values[c], diag["accept_prob"])
        assert np.all(stats["step_size"].values[c] == diag["step size"])
        assert list(np.flatnonzero(stats["diverging"].values[c])) == list(diag["divergences"])
    np.testing.assert_array_equal(stats["energy"].values, -stats["lp"].values)
    grads = stats.attrs["gradient_evaluations_sampling"]
    assert len(grads) == 2
    np.testing.assert_allclose(grads, stats["n_steps"].values.sum(axis=1))

    obs = data["observed_data"]["obs"]
    assert obs.dims == ("J",)
    np.testing.assert_allclose(obs.values, Y)
    summary = az.summary(data, var_names=["mu", "tau"])
    assert list(summary.index) == ["mu", "tau"]


def test_pyro_log_likelihood_and_plots(pyro_adjusted, tmp_path):
    data = to_arviz(pyro_adjusted, log_likelihood=True)
    loglik = data["log_likelihood"]["obs"]
    assert loglik.shape == (2, 30, 8) and loglik.dims == ("chain", "draw", "J")
    assert np.all(np.isfinite(loglik.values))
    data["sample_stats"]["diverging"].values[1, [2, 5]] = True
    _save_plots(data, tmp_path, divergences=True)


def test_az_from_pyro_works_on_our_kernel(pyro_adjusted):
    if not hasattr(az, "from_pyro"):
        pytest.skip("ArviZ 1.x has no from_pyro")
    data = az.from_pyro(pyro_adjusted)
    assert "diverging" in data.sample_stats


def test_pyro_esh_kernel(pyro_model):
    from esh_kernels.pyro import ESH

    model, args, kwargs = pyro_model
    mcmc = _pyro_mcmc(ESH(model), args, kwargs, warmup=40, samples=20, chains=1)
    stats = to_arviz(mcmc)["sample_stats"]
    assert {"diverging", "step_size", "lp", "n_steps", "energy_error", "energy"} <= set(stats.data_vars)
    assert "acceptance_rate" not in stats.data_vars
    # the isokinetic kernels' energy is their potential energy (docs/arviz.md)
    np.testing.assert_array_equal(stats["energy"].values, -stats["lp"].values)


def test_pyro_tuned_hmc_if_present(pyro_model):
    import esh_kernels.pyro as ep

    if not hasattr(ep, "TunedHMC"):
        pytest.skip("esh_kernels.pyro.TunedHMC is not there yet")
    model, args, kwargs = pyro_model
    mcmc = _pyro_mcmc(ep.TunedHMC(model), args, kwargs, warmup=40, samples=20, chains=1)
    stats = to_arviz(mcmc)["sample_stats"]
    assert {"diverging", "step_size", "lp", "n_steps", "acceptance_rate", "energy"} <= set(stats.data_vars)
    assert "tree_depth" not in stats.data_vars


def test_pyro_builtin_nuts_divergences(pyro_model):
    from pyro.infer import NUTS

    model, args, kwargs = pyro_model
    mcmc = _pyro_mcmc(NUTS(model), args, kwargs, warmup=20, samples=15, chains=1)
    data = to_arviz(mcmc)
    stats = data["sample_stats"]
    assert set(stats.data_vars) == {"diverging"}
    assert list(np.flatnonzero(stats["diverging"].values[0])) == list(mcmc._diagnostics[0]["divergences"])
    assert "acceptance_rate" in stats.attrs  # a per-chain mean: an attribute, not a statistic


def test_pyro_batched_many_chains_in_order(pyro_model):
    from esh_kernels.pyro import AdjustedESH, run_batched

    model, args, kwargs = pyro_model
    import pyro

    pyro.set_rng_seed(0)
    mcmc = run_batched(AdjustedESH, model, num_chains=12, warmup_steps=30, num_samples=12,
                       model_args=args, model_kwargs=kwargs)
    data = to_arviz(mcmc)
    post, stats = data["posterior"], data["sample_stats"]
    assert post["mu"].shape == (12, 12)
    samples = mcmc.get_samples(group_by_chain=True)
    np.testing.assert_allclose(post["mu"].values, samples["mu"].numpy())
    for c in range(12):
        diag = mcmc._diagnostics[c]
        np.testing.assert_allclose(stats["lp"].values[c], -np.asarray(diag["potential_energy"]))
        np.testing.assert_allclose(stats["step_size"].values[c], diag["step size"])


class _FakePyroMCMC:
    """What the public diagnostics() route sees: {stat: {"chain i": value}} for 12 chains."""

    __module__ = "pyro.infer.mcmc.api"

    def __init__(self, num_chains=12, num_draws=12):
        self.num_chains = num_chains
        self.kernel = type("K", (), {"model": None})()
        self._samples = {"x": np.arange(num_chains * num_draws * 2.0).reshape(num_chains, num_draws, 2)}

    def get_samples(self, group_by_chain=False):
        return dict(self._samples)

    def diagnostics(self):
        chains = {f"chain {c}": [c % 6] for c in range(self.num_chains)}
        return {
            "x": {"n_eff": 1.0, "r_hat": 1.0},
            "divergences": chains,
            "acceptance rate": {f"chain {c}": 0.5 + c / 100 for c in range(self.num_chains)},
        }


def test_pyro_chain_keys_sorted_by_number():
    # no torch needed: runs on the ArviZ 1.x venv too
    fake = _FakePyroMCMC()
    data = to_arviz(fake)
    diverging = data["sample_stats"]["diverging"].values
    for c in range(12):  # 'chain 10' and 'chain 11' stay chains 10 and 11
        assert list(np.flatnonzero(diverging[c])) == [c % 6]
    np.testing.assert_allclose(data["sample_stats"].attrs["acceptance_rate"],
                               [0.5 + c / 100 for c in range(12)])


@pytest.mark.parametrize("name, expected", [
    ("AdjustedESH", ("step size=", "acc. prob=")),
    ("ESH", ("step size=", "phase=")),
])
def test_pyro_progress_bar_logging(pyro_model, monkeypatch, capsys, name, expected):
    import esh_kernels.pyro as ep

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    model, args, kwargs = pyro_model
    _pyro_mcmc(getattr(ep, name)(model), args, kwargs, warmup=10, samples=10, chains=1, progress=True)
    err = capsys.readouterr().err
    assert "Sample" in err
    for text in expected:
        assert text in err, err[-500:]


def test_pyro_model_without_latent_sites_gets_a_clear_message():
    """A model with nothing to sample runs (as with NUTS) and has no draws: ``to_arviz``
    says so instead of only asking for ``mcmc.run``."""
    pytest.importorskip("pyro")
    import pyro
    import pyro.distributions as dist
    import torch

    from esh_kernels.pyro import AdjustedESH

    def observed_only():
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.tensor(0.5))

    mcmc = _pyro_mcmc(AdjustedESH(observed_only), (), {}, warmup=5, samples=5, chains=1)
    assert mcmc.get_samples() == {}
    with pytest.raises(ValueError, match="no latent site to sample"):
        to_arviz(mcmc)
