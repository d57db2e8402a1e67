"""API tests of the NumPyro ``ESH`` and ``AdjustedESH`` kernels: the ``MCMCKernel``
contract as ``numpyro.infer.MCMC`` uses it (``docs/api_notes.md`` §1), ArviZ conversion,
pickling, and the bad-input rules of ``DESIGN.md``.

Runs are small (2 chains, at most 500 iterations, float32 unless a test says otherwise):
a compiled MCMC run costs seconds of compilation whatever its length. Statistical accuracy
is tested in ``test_numpyro_statistics.py``; checks of values here use tolerances derived
from the Monte Carlo error (``sd / sqrt(ess)``).
"""

import io
import math
import pickle
from contextlib import redirect_stdout

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC

from esh_kernels.numpyro import ESH, AdjustedESH, TunedHMC
from tests.test_numpyro_statistics import assert_esh_steps_per_draw

KERNELS = [ESH, AdjustedESH]
N_SE = 5.0
ESH_MEAN_BIAS = 0.03  # ESH is unadjusted: allowance on means, in posterior sds (see stats tests)
NUM_CHAINS = 2
NUM_WARMUP = 150
NUM_SAMPLES = 100


def _kernel_id(k):
    return k.__name__


def extra_fields_for(kernel_cls):
    fields = ("n_steps", "energy_error", "potential_energy", "adapt_state.step_size")
    if kernel_cls is AdjustedESH:
        fields += ("accept_prob",)
    return fields


def make_mcmc(kernel, chain_method="vectorized", num_chains=NUM_CHAINS, num_warmup=NUM_WARMUP,
              num_samples=NUM_SAMPLES, **kw):
    return MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
        **kw,
    )


# ---------------------------------------------------------------------------------------
# Models


def api_model(y):
    """3 unconstrained dimensions: a 2-vector location, a positive scale; one deterministic."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.deterministic("mu_sum", mu.sum(-1))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("obs", dist.Normal(mu, sigma).to_event(1), obs=y)


def api_data(dtype=jnp.float32):
    y = np.random.default_rng(0).normal(loc=[1.0, -1.0], scale=1.5, size=(30, 2))
    return jnp.asarray(y, dtype)


PRIOR_SD = 10.0


def normal_mean_model(y):
    """y_i ~ N(mu, I_2), mu ~ N(0, 10^2 I_2): conjugate, posterior known exactly."""
    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SD).expand([2]).to_event(1))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("obs", dist.Normal(mu, 1.0).to_event(1), obs=y)


def normal_mean_posterior(y):
    y = np.asarray(y, np.float64)
    prec = y.shape[0] + 1.0 / PRIOR_SD**2
    return y.sum(0) / prec, 1.0 / math.sqrt(prec)


def assert_posterior_mean(draws, mean, sd, kernel_cls):
    """``|mean_hat - mean| < 5 sd / sqrt(ess)`` (+ 3% sd for the unadjusted ESH)."""
    draws = np.asarray(draws, np.float64)
    ess = np.asarray(effective_sample_size(draws))
    assert np.all(ess > 20), ess
    tol = N_SE * sd / np.sqrt(ess) + (ESH_MEAN_BIAS * sd if kernel_cls is ESH else 0.0)
    err = np.abs(draws.mean((0, 1)) - mean)
    assert np.all(err < tol), (kernel_cls.__name__, draws.mean((0, 1)), mean, tol)


# ---------------------------------------------------------------------------------------
# One reference run per kernel, shared by several tests


@pytest.fixture(scope="module", params=KERNELS, ids=_kernel_id)
def fitted(request):
    """``chain_method="vectorized"``, 2 chains, seed 0, every extra field collected."""
    kernel_cls = request.param
    kernel = kernel_cls(api_model)
    pickled_before_run = pickle.dumps(kernel)
    mcmc = make_mcmc(kernel)
    mcmc.run(random.PRNGKey(0), api_data(), extra_fields=extra_fields_for(kernel_cls))
    return {
        "kernel_cls": kernel_cls,
        "kernel": kernel,
        "mcmc": mcmc,
        "pickled_before_run": pickled_before_run,
        "samples": {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()},
    }


def test_float32_draws_finite_with_chain_axis(fitted):
    samples = fitted["samples"]
    assert set(samples) == {"mu", "sigma", "mu_sum"}
    assert samples["mu"].shape == (NUM_CHAINS, NUM_SAMPLES, 2)
    assert samples["sigma"].shape == (NUM_CHAINS, NUM_SAMPLES)
    for name, v in samples.items():
        assert v.dtype == np.float32, (name, v.dtype)
        assert np.all(np.isfinite(v)), name
    assert np.all(samples["sigma"] > 0)
    # the chains are not stuck: draws move
    assert np.all(np.std(samples["mu"], axis=1) > 0)


def test_deterministic_sites_in_get_samples(fitted):
    samples = fitted["mcmc"].get_samples()
    assert "mu_sum" in samples
    assert samples["mu_sum"].shape == (NUM_CHAINS * NUM_SAMPLES,)
    np.testing.assert_allclose(samples["mu_sum"], samples["mu"].sum(-1), rtol=1e-5, atol=1e-5)


def test_print_summary_reports_divergences(fitted):
    out = io.StringIO()
    with redirect_stdout(out):
        fitted["mcmc"].print_summary()
    text = out.getvalue()
    assert "Number of divergences" in text
    for site in ("mu[0]", "mu[1]", "sigma"):
        assert site in text


def test_extra_fields_have_chain_axes(fitted):
    kernel_cls, mcmc = fitted["kernel_cls"], fitted["mcmc"]
    extra = mcmc.get_extra_fields(group_by_chain=True)
    expected = set(extra_fields_for(kernel_cls)) | {"diverging"}
    assert expected <= set(extra), sorted(extra)
    for name in expected:
        v = np.asarray(extra[name])
        assert v.shape == (NUM_CHAINS, NUM_SAMPLES), (name, v.shape)
        if name != "diverging":
            assert np.all(np.isfinite(v)), name
    assert extra["diverging"].dtype == bool
    n_steps = np.asarray(extra["n_steps"])
    if kernel_cls is AdjustedESH:
        assert np.all(n_steps >= 1)
    else:
        # an ESH draw may fall entirely inside the physical time of a step begun in the
        # previous draw (draws tile the physical-time axis): zero new gradients then
        assert np.all(n_steps >= 0) and n_steps.mean() >= 0.5
    step = np.asarray(extra["adapt_state.step_size"])
    assert np.all(step > 0)
    # no adaptation after warmup: one step size per chain during sampling
    np.testing.assert_array_equal(step, np.broadcast_to(step[:, :1], step.shape))
    if kernel_cls is AdjustedESH:
        acc = np.asarray(extra["accept_prob"])
        assert np.all((acc >= 0) & (acc <= 1))
    flat = mcmc.get_extra_fields()
    assert flat["n_steps"].shape == (NUM_CHAINS * NUM_SAMPLES,)


def test_arviz_from_numpyro(fitted):
    kernel_cls, mcmc = fitted["kernel_cls"], fitted["mcmc"]
    idata = az.from_numpyro(mcmc)
    post = idata.posterior
    assert post["mu"].shape == (NUM_CHAINS, NUM_SAMPLES, 2)
    assert "mu_sum" in post
    stats = idata.sample_stats
    expected = {"diverging", "lp", "step_size", "n_steps", "energy_error"}
    if kernel_cls is AdjustedESH:
        expected.add("acceptance_rate")
    assert expected <= set(stats.data_vars), sorted(stats.data_vars)
    assert "tree_depth" not in stats.data_vars
    assert stats["diverging"].shape == (NUM_CHAINS, NUM_SAMPLES)
    pe = mcmc.get_extra_fields(group_by_chain=True)["potential_energy"]
    np.testing.assert_allclose(stats["lp"].values, -np.asarray(pe), rtol=1e-6)
    summary = az.summary(idata, var_names=["mu", "sigma"])
    assert np.all(np.isfinite(summary["mean"].values))


def test_pickling_before_and_after_run(fitted):
    """The kernel pickles before and after a run; an unpickled kernel runs again and, with
    the same seed and settings, reproduces the original draws bit for bit (same seed, same
    draws, across kernel instances and ``MCMC`` objects)."""
    kernel_cls = fitted["kernel_cls"]
    before = pickle.loads(fitted["pickled_before_run"])
    assert type(before) is kernel_cls
    after = pickle.loads(pickle.dumps(fitted["kernel"]))
    assert type(after) is kernel_cls
    mcmc = make_mcmc(after)
    mcmc.run(random.PRNGKey(0), api_data())
    rerun = mcmc.get_samples(group_by_chain=True)
    for site, v in fitted["samples"].items():
        np.testing.assert_array_equal(np.asarray(rerun[site]), v, err_msg=site)


# ---------------------------------------------------------------------------------------
# Chain methods and seeds
#
# Tuning is per chain, so chain k sees the same key and the same arithmetic whether chains
# run one after another, on separate devices, or batched with vmap. The batched and
# unbatched XLA programs round differently in the last bit (e.g. dual averaging's running
# average differs by 3e-17 after two iterations in float64), and adaptive MCMC amplifies
# such differences exponentially (measured: AdjustedESH float64, 1e-16 -> 1e-4 within 50
# iterations; float32 runs of 250 iterations end up O(1) apart). So these comparisons run
# in float64 and short (15 warmup + 15 draws, measured agreement ~1e-11): long enough to
# run init, adaptation and sampling, short enough that any difference above roundoff
# (cross-chain coupling, different keys or inits) would show.

SHORT_WARMUP = 15
SHORT_SAMPLES = 15


def x64():
    """Context manager enabling JAX float64 (name moved across JAX versions)."""
    enable = getattr(jax, "enable_x64", None)
    if enable is not None:
        return enable(True)
    from jax.experimental import enable_x64  # older JAX

    return enable_x64()


def run_short64(kernel_cls, chain_method):
    with x64():
        mcmc = make_mcmc(
            kernel_cls(api_model), chain_method=chain_method, num_warmup=SHORT_WARMUP,
            num_samples=SHORT_SAMPLES,
        )
        mcmc.run(random.PRNGKey(0), api_data(jnp.float64), extra_fields=("potential_energy", "adapt_state.step_size"))
        samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    return mcmc, samples, extra


@pytest.fixture(scope="module", params=KERNELS, ids=_kernel_id)
def short64(request):
    """A short float64 run, ``chain_method="vectorized"``, seed 0."""
    mcmc, samples, extra = run_short64(request.param, "vectorized")
    return {"kernel_cls": request.param, "samples": samples, "extra": extra}


def assert_same_draws(a, b, what):
    assert set(a) == set(b)
    for site in a:
        np.testing.assert_allclose(a[site], b[site], rtol=1e-6, atol=1e-9, err_msg=f"{what}: {site}")


def test_float64_run(short64):
    """With ``jax_enable_x64`` the kernels run in float64 end to end."""
    for name, v in short64["samples"].items():
        assert v.dtype == np.float64, (name, v.dtype)
        assert np.all(np.isfinite(v)), name
    for name in ("potential_energy", "adapt_state.step_size"):
        v = short64["extra"][name]
        assert v.dtype == np.float64, (name, v.dtype)
        assert v.shape == (NUM_CHAINS, SHORT_SAMPLES)
        assert np.all(np.isfinite(v)), name


def test_chain_method_sequential_matches_vectorized(short64):
    mcmc, samples, _ = run_short64(short64["kernel_cls"], "sequential")
    assert mcmc.chain_method == "sequential"
    assert_same_draws(samples, short64["samples"], "sequential vs vectorized")


def test_chain_method_parallel_matches_vectorized(short64):
    """``chain_method="parallel"`` (pmap over the workers' host devices, ``conftest.py``)
    runs and matches the vectorized draws."""
    mcmc, samples, _ = run_short64(short64["kernel_cls"], "parallel")
    assert mcmc.chain_method == "parallel"  # no silent fallback to sequential
    assert_same_draws(samples, short64["samples"], "parallel vs vectorized")


def test_different_seed_different_draws(fitted):
    """(Same seed, same draws: ``test_pickling_before_and_after_run`` reruns seed 0 with
    a new kernel and a new ``MCMC`` and requires bit-identical draws.)"""
    mcmc = make_mcmc(fitted["kernel_cls"](api_model))
    mcmc.run(random.PRNGKey(1), api_data())
    other = mcmc.get_samples(group_by_chain=True)
    for site, v in fitted["samples"].items():
        assert np.all(np.isfinite(np.asarray(other[site])))
        assert not np.allclose(np.asarray(other[site]), v), site


# ---------------------------------------------------------------------------------------
# jit_model_args, warmup(), post_warmup_state


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_kernel_id)
def test_jit_model_args_new_data(kernel_cls):
    """With ``jit_model_args=True`` a second ``run()`` on new data of the same shape samples
    the posterior of the new data (the kernel rebuilds the potential from ``model_args``)."""
    noise = np.random.default_rng(1).normal(size=(40, 2))
    mcmc = make_mcmc(kernel_cls(normal_mean_model), num_warmup=200, num_samples=300, jit_model_args=True)
    for centre in (1.0, 10.0):
        y = jnp.asarray(centre + noise, jnp.float32)
        mcmc.run(random.PRNGKey(2), y, extra_fields=("n_steps",))
        if kernel_cls is ESH:
            assert_esh_steps_per_draw(mcmc.get_extra_fields(group_by_chain=True)["n_steps"])
        mean, sd = normal_mean_posterior(y)
        assert_posterior_mean(mcmc.get_samples(group_by_chain=True)["mu"], mean, sd, kernel_cls)


def _adapt_leaves(state):
    return [np.asarray(a) for a in jax.tree.leaves(state.adapt_state)]


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_kernel_id)
def test_warmup_then_run_then_continue(kernel_cls):
    """``mcmc.warmup()`` then ``run()`` samples without adapting; continuing from
    ``post_warmup_state = last_state`` neither re-adapts (step size and every adaptation
    field unchanged) nor restarts the iteration counter."""
    y = api_data()
    mcmc = make_mcmc(kernel_cls(api_model))
    mcmc.warmup(random.PRNGKey(3), y)
    warm = mcmc.post_warmup_state
    np.testing.assert_array_equal(np.asarray(warm.i), NUM_WARMUP)
    fields = ("adapt_state.step_size", "i")

    mcmc.run(random.PRNGKey(4), y, extra_fields=fields)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    step0 = np.asarray(warm.adapt_state.step_size)
    np.testing.assert_array_equal(extra["adapt_state.step_size"], np.broadcast_to(step0[:, None], (NUM_CHAINS, NUM_SAMPLES)))
    np.testing.assert_array_equal(extra["i"][0], NUM_WARMUP + 1 + np.arange(NUM_SAMPLES))
    for a, b in zip(_adapt_leaves(warm), _adapt_leaves(mcmc.last_state)):
        np.testing.assert_array_equal(a, b)
    first = mcmc.get_samples(group_by_chain=True)["mu"]
    assert first.shape == (NUM_CHAINS, NUM_SAMPLES, 2) and np.all(np.isfinite(first))

    mcmc.post_warmup_state = mcmc.last_state
    mcmc.run(mcmc.post_warmup_state.rng_key, y, extra_fields=fields)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    np.testing.assert_array_equal(extra["adapt_state.step_size"], np.broadcast_to(step0[:, None], (NUM_CHAINS, NUM_SAMPLES)))
    np.testing.assert_array_equal(extra["i"][0], NUM_WARMUP + NUM_SAMPLES + 1 + np.arange(NUM_SAMPLES))
    for a, b in zip(_adapt_leaves(warm), _adapt_leaves(mcmc.last_state)):
        np.testing.assert_array_equal(a, b)
    second = mcmc.get_samples(group_by_chain=True)["mu"]
    assert np.all(np.isfinite(second))
    assert not np.allclose(second, first)


# ---------------------------------------------------------------------------------------
# potential_fn


VAR_PF = np.array([1.0, 4.0])


def gaussian_potential(z):
    return 0.5 * jnp.sum(z["a"] ** 2 / jnp.asarray(VAR_PF, z["a"].dtype))


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_kernel_id)
def test_potential_fn_with_init_params(kernel_cls):
    mcmc = make_mcmc(kernel_cls(potential_fn=gaussian_potential), num_warmup=200, num_samples=300)
    assert mcmc.sampler.model is None
    mcmc.run(random.PRNGKey(5), init_params={"a": jnp.zeros((NUM_CHAINS, 2))})
    a = np.asarray(mcmc.get_samples(group_by_chain=True)["a"])
    assert a.shape == (NUM_CHAINS, 300, 2)
    assert np.all(np.isfinite(a))
    assert_posterior_mean(a, np.zeros(2), np.sqrt(VAR_PF), kernel_cls)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_kernel_id)
def test_potential_fn_without_init_params_raises(kernel_cls):
    mcmc = make_mcmc(kernel_cls(potential_fn=gaussian_potential))
    with pytest.raises(ValueError, match="init_params"):
        mcmc.run(random.PRNGKey(0))


# ---------------------------------------------------------------------------------------
# Bad input (DESIGN.md)


def discrete_model():
    numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.sample("coin", dist.Bernoulli(0.3))


def log_zero_model():
    x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    numpyro.factor("log_abs_x0", jnp.log(jnp.abs(x[0])))  # -inf at x0 = 0


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_kernel_id)
def test_discrete_latent_site_raises(kernel_cls, without_funsor):
    mcmc = make_mcmc(kernel_cls(discrete_model), num_chains=1)
    with pytest.raises(ValueError, match="coin"):
        mcmc.run(random.PRNGKey(0))


def mixture_model():
    coin = numpyro.sample("coin", dist.Bernoulli(0.3))
    numpyro.sample("x", dist.Normal(2.0 * coin, 1.0))


@pytest.mark.parametrize("kernel_cls", [ESH, AdjustedESH, TunedHMC], ids=_kernel_id)
def test_discrete_latent_site_is_enumerated_with_funsor(kernel_cls):
    """With ``funsor`` installed NumPyro sums a discrete site out, as for NUTS (README): ``x``
    is then the mixture ``0.3 N(2, 1) + 0.7 N(0, 1)``, mean 0.6 and variance 1.84."""
    pytest.importorskip("funsor")
    mcmc = make_mcmc(kernel_cls(mixture_model), num_warmup=300, num_samples=1000)
    mcmc.run(random.PRNGKey(0))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"], np.float64)
    assert "coin" not in mcmc.get_samples()
    se = math.sqrt(1.84 / float(effective_sample_size(x)))
    assert abs(x.mean() - 0.6) < N_SE * se + (ESH_MEAN_BIAS * math.sqrt(1.84) if kernel_cls is ESH else 0.0)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_kernel_id)
def test_non_finite_initial_potential_raises(kernel_cls):
    mcmc = make_mcmc(kernel_cls(log_zero_model), num_chains=1)
    with pytest.raises(ValueError, match="not finite") as info:
        mcmc.run(random.PRNGKey(0), init_params={"x": jnp.zeros(2)})
    assert "potential" in str(info.value).lower()
    assert "init" in str(info.value)
    # same with a potential_fn and vectorized chains
    mcmc = make_mcmc(kernel_cls(potential_fn=lambda z: -jnp.sum(jnp.log(z))))
    with pytest.raises(ValueError, match="not finite"):
        mcmc.run(random.PRNGKey(0), init_params=jnp.zeros((NUM_CHAINS, 2)))


BAD_COMMON = [
    {"step_size": -0.1},
    {"step_size": 0.0},
    {"step_size": float("nan")},
    {"step_size": float("inf")},
    {"trajectory_length": -1.0},
    {"max_steps": 0},
    {"max_steps": True},
    {"adapt_mass_matrix": None},
    {"adapt_mass_matrix": "yes"},
]


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_kernel_id)
@pytest.mark.parametrize("bad", BAD_COMMON, ids=lambda b: f"{next(iter(b))}={next(iter(b.values()))}")
def test_invalid_arguments_raise_at_construction(kernel_cls, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        kernel_cls(api_model, **bad)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.2, float("nan")])
def test_target_accept_prob_outside_unit_interval_raises(value):
    with pytest.raises(ValueError, match="target_accept_prob"):
        AdjustedESH(api_model, target_accept_prob=value)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_invalid_refresh_rate_raises(value):
    with pytest.raises(ValueError, match="refresh_rate"):
        ESH(api_model, refresh_rate=value)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_kernel_id)
def test_model_and_potential_fn_exactly_one(kernel_cls):
    with pytest.raises(ValueError, match="exactly one"):
        kernel_cls()
    with pytest.raises(ValueError, match="exactly one"):
        kernel_cls(api_model, potential_fn=gaussian_potential)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_kernel_id)
def test_unknown_keyword_raises(kernel_cls):
    with pytest.raises((TypeError, ValueError), match="no_such_option"):
        kernel_cls(api_model, no_such_option=1)
    # an option of the other kernel is unknown here too
    other = "refresh_rate" if kernel_cls is AdjustedESH else "target_accept_prob"
    with pytest.raises((TypeError, ValueError), match=other):
        kernel_cls(api_model, **{other: 0.5})


# ---------------------------------------------------------------------------------------
# Numerical trouble during sampling


def walled_potential(x):
    """Standard normal with walls: +inf where x0 > 1, NaN where x1 > 1.5."""
    e = 0.5 * jnp.sum(x**2)
    e = jnp.where(x[0] > 1.0, jnp.inf, e)
    return jnp.where(x[1] > 1.5, jnp.nan, e)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_kernel_id)
def test_non_finite_potential_during_sampling_is_survived(kernel_cls):
    """Proposals that step through a wall (inf or NaN potential) are rejected and flagged
    ``diverging``; the chains run to completion inside the support, with finite draws."""
    mcmc = make_mcmc(kernel_cls(potential_fn=walled_potential), num_warmup=200, num_samples=300)
    mcmc.run(random.PRNGKey(6), init_params=jnp.zeros((NUM_CHAINS, 2)), extra_fields=("potential_energy",))
    x = np.asarray(mcmc.get_samples(group_by_chain=True))
    assert x.shape == (NUM_CHAINS, 300, 2)
    assert np.all(np.isfinite(x))
    assert np.all(x[..., 0] <= 1.0) and np.all(x[..., 1] <= 1.5)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    assert np.all(np.isfinite(np.asarray(extra["potential_energy"])))
    diverging = np.asarray(extra["diverging"])
    assert diverging.any(), "no transition hit a wall: the test does not test anything"
    assert not diverging.all()
    # the chains keep moving after divergences
    assert np.all(np.std(x[..., 0], axis=1) > 0.1)


def _normal_2d():
    numpyro.sample("x", dist.Normal(jnp.zeros(2), 1.0).to_event(1))


def test_memory_map_count_is_read_on_linux():
    from esh_kernels.numpyro._code_maps import map_count_and_limit

    numbers = map_count_and_limit()
    if numbers is None:
        pytest.skip("no /proc/self/maps here (not Linux): the warning is off")
    count, limit = numbers
    assert 0 < count < limit


@pytest.mark.parametrize("count, warns", [(60000, True), (1000, False)])
def test_init_warns_by_name_near_the_memory_map_limit(monkeypatch, count, warns):
    """XLA aborts the process without a word when compiled programs exhaust
    vm.max_map_count (about 85 ESH runs in one process at Linux's default); the kernel
    warns while there is room."""
    import warnings as _warnings

    from esh_kernels.numpyro import _code_maps

    monkeypatch.setattr(_code_maps, "map_count_and_limit", lambda: (count, 65530))
    kernel = ESH(_normal_2d)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        kernel.init(random.PRNGKey(0), 10, model_args=(), model_kwargs={})
    hits = [w for w in caught if "vm.max_map_count" in str(w.message)]
    assert bool(hits) == warns
    if warns:
        text = str(hits[0].message)
        assert hits[0].category is RuntimeWarning
        assert "ESH" in text and "jax.clear_caches()" in text and "60000" in text
