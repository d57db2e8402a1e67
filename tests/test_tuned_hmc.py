"""Tests of the NumPyro ``TunedHMC`` kernel and the ChEES primitives it adds to the core.

Statistical checks use tolerances from the Monte Carlo error: ``|mean - truth| <
5 sd / sqrt(ess)`` and, for variances, ``5 sqrt(2 / ess)`` relative error. Runs are small
(2-4 chains, a few hundred iterations, float32): a compiled run costs seconds of
compilation whatever its length.
"""

import io
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
from numpyro.infer import MCMC, NUTS

from esh_kernels.core.adaptation import (
    chees_gradient,
    chees_init,
    chees_restart_average,
    chees_update,
    halton,
    welford_covariance,
    welford_init,
    welford_pool,
    welford_update,
)
from esh_kernels.numpyro import TunedHMC  # noqa: E402

import eight_schools_data  # noqa: E402

N_SE = 5.0
FIELDS = ("n_steps", "accept_prob", "potential_energy", "energy", "energy_error",
          "adapt_state.step_size", "adapt_state.trajectory_length", "mean_accept_prob")


def make_mcmc(kernel, num_warmup=200, num_samples=200, num_chains=2, chain_method="vectorized", **kw):
    return MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method=chain_method, progress_bar=False, **kw)


def assert_mean(draws, truth, sd, what=""):
    """``|mean - truth| < 5 sd / sqrt(ess)`` per coordinate; draws ``(C, N, ...)``."""
    draws = np.asarray(draws, np.float64)
    ess = np.asarray(effective_sample_size(draws))
    assert np.all(ess > 20), (what, ess)
    err = np.abs(draws.mean((0, 1)) - truth)
    tol = N_SE * np.asarray(sd) / np.sqrt(ess)
    assert np.all(err < tol), (what, draws.mean((0, 1)), truth, tol)


def assert_variance(draws, var, what=""):
    """Relative error of the variance below ``5 sqrt(2 / ess)`` (ess of the squares)."""
    draws = np.asarray(draws, np.float64)
    centred = draws - draws.mean((0, 1))
    ess = np.asarray(effective_sample_size(centred**2))
    assert np.all(ess > 20), (what, ess)
    rel = np.abs(centred.reshape(-1, *draws.shape[2:]).var(0) / var - 1.0)
    assert np.all(rel < N_SE * np.sqrt(2.0 / ess)), (what, rel, ess)


# ---------------------------------------------------------------------------------------
# Core: ChEES gradient, Adam, Halton, pooled Welford


def _chees_inputs(seed=0, c=6, d=5):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(c, d)), rng.normal(size=(c, d)), rng.normal(size=(c, d)),
            rng.uniform(0.5, 2.0, size=c), rng.uniform(0.1, 1.0, size=c),
            np.array([True] * (c - 1) + [False]))


def test_chees_gradient_is_derivative_of_criterion(jax_x64):
    """The estimate equals ``d/dlog T`` of the acceptance-weighted ChEES, with the proposals
    moved along their velocities (TFP's construction), centres held fixed."""
    x0, x1, v, t, a, valid = _chees_inputs()
    w = np.where(valid, a, 0.0)
    m0 = x0.mean(0)
    m1 = (w[:, None] * x1).sum(0) / w.sum()

    def criterion(s):  # s: log-time shift of each proposal, x'(s) = x' + s * t * v
        y1 = x1 + (s * t)[:, None] * v
        c = 0.25 * (jnp.sum((y1 - m1) ** 2, -1) - jnp.sum((x0 - m0) ** 2, -1)) ** 2
        return jnp.sum(w * c) / jnp.sum(w)

    expected = jnp.sum(jax.grad(criterion)(jnp.zeros(len(t))))
    got = chees_gradient(jnp.asarray(x0), jnp.asarray(x1), jnp.asarray(v), jnp.asarray(t),
                         jnp.asarray(a), jnp.asarray(valid))
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-10)


def test_chees_gradient_backends_agree_and_guard_non_finite(jax_x64):
    torch = pytest.importorskip("torch")
    x0, x1, v, t, a, valid = _chees_inputs(1)
    x1[2, 0] = np.nan  # a non-finite proposal carries no weight
    centre = np.linspace(-1, 1, x0.shape[1])
    for kw in ({}, {"center_start": centre, "center_proposal": centre, "normalize": False}):
        ref = chees_gradient(x0, x1, v, t, a, valid, **kw)
        assert np.isfinite(ref)
        jx = chees_gradient(*map(jnp.asarray, (x0, x1, v, t, a, valid)),
                            **{k: jnp.asarray(u) if isinstance(u, np.ndarray) else u for k, u in kw.items()})
        tx = chees_gradient(*map(torch.as_tensor, (x0, x1, v, t, a, valid)),
                            **{k: torch.as_tensor(u) if isinstance(u, np.ndarray) else u for k, u in kw.items()})
        np.testing.assert_allclose(float(jx), ref, rtol=1e-10)
        np.testing.assert_allclose(float(tx), ref, rtol=1e-10)
    # nothing valid: zero, not nan
    assert float(chees_gradient(x0, x1, v, t, a, np.zeros(len(t), bool))) == 0.0


def test_chees_update_ascends_clips_and_averages():
    s = chees_init(np.float64(1.0))
    for _ in range(5):
        s = chees_update(s, np.float64(3.0))
    assert s.log_length > 0 and s.count == 5  # positive gradient: longer
    assert 0 < s.log_length_avg < s.log_length  # the average lags the iterate
    big = chees_update(chees_init(np.float64(1.0)), np.float64(1e30), learning_rate=10.0)
    assert big.log_length == pytest.approx(0.35)  # clipped step
    bad = chees_update(s, np.float64(np.nan))
    assert bad.log_length == s.log_length and bad.moment2 == s.moment2
    restarted = chees_update(chees_restart_average(s, True), np.float64(-1.0))
    assert restarted.log_length_avg == restarted.log_length


def test_halton_and_welford_pool():
    np.testing.assert_allclose([halton(i) for i in range(6)], [0.5, 0.25, 0.75, 0.125, 0.625, 0.375])
    h = np.asarray(halton(jnp.arange(1024)))
    assert h.min() > 0 and h.max() < 1 and abs(h.mean() - 0.5) < 1e-3
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 40, 4)) + np.array([[0.0], [1.0], [3.0]])[:, :, None]
    for dense in (False, True):
        states = []
        for c in range(3):
            s = welford_init(data[c, 0], dense=dense)
            for row in data[c]:
                s = welford_update(s, row)
            states.append(s)
        batch = type(states[0])(*[np.stack(f) for f in zip(*states)])
        pooled = welford_covariance(welford_pool(batch), regularize=False)
        flat = data.reshape(-1, 4)
        expected = np.cov(flat.T) if dense else flat.var(0, ddof=1)
        np.testing.assert_allclose(pooled, expected, rtol=1e-10)


# ---------------------------------------------------------------------------------------
# Statistics


def correlated_2d_potential(z):
    prec = jnp.asarray(np.linalg.inv(COV_2D), z.dtype)
    return 0.5 * z @ prec @ z


COV_2D = np.array([[1.0, 0.95], [0.95, 1.0]]) * np.array([[1.0, 3.0], [3.0, 9.0]])  # sds 1, 3


@pytest.mark.parametrize("dense_mass", [False, True])
def test_correlated_2d_gaussian(dense_mass):
    mcmc = make_mcmc(TunedHMC(potential_fn=correlated_2d_potential, dense_mass=dense_mass),
                     num_warmup=400, num_samples=1000)
    mcmc.run(random.PRNGKey(0), init_params=jnp.ones((2, 2)), extra_fields=("diverging",))
    x = mcmc.get_samples(group_by_chain=True)
    sd = np.sqrt(np.diag(COV_2D))
    assert_mean(x, np.zeros(2), sd, "2-D mean")
    assert_variance(x, np.diag(COV_2D), "2-D variance")
    flat = np.asarray(x).reshape(-1, 2)
    assert abs(np.corrcoef(flat.T)[0, 1] - 0.95) < 0.03
    assert not mcmc.get_extra_fields()["diverging"].any()


def test_fixed_num_steps_as_hmc():
    """NumPyro's ``test_fixed_num_steps``: ``num_steps=5`` (HMC's argument) makes every
    draw exactly 5 leapfrog steps (no jitter, no length tuning, no U-turn tracking); the
    step size is still tuned and the draws are right."""
    mcmc = make_mcmc(TunedHMC(potential_fn=correlated_2d_potential, num_steps=5),
                     num_warmup=400, num_samples=1000)
    mcmc.run(random.PRNGKey(1), init_params=jnp.ones((2, 2)),
             extra_fields=("num_steps", "adapt_state.step_size"))
    fields = mcmc.get_extra_fields(group_by_chain=True)
    assert np.all(np.asarray(fields["num_steps"]) == 5)
    assert np.all(np.asarray(fields["adapt_state.step_size"]) != 1.0)  # tuned from the search
    x = mcmc.get_samples(group_by_chain=True)
    assert_mean(x, np.zeros(2), np.sqrt(np.diag(COV_2D)), "2-D mean")
    assert_variance(x, np.diag(COV_2D), "2-D variance")


def ill_conditioned_model():
    numpyro.sample("x", dist.Normal(jnp.zeros(50), jnp.sqrt(jnp.linspace(0.01, 1.0, 50))).to_event(1))


@pytest.mark.parametrize("chain_method", ["vectorized", "sequential"])
def test_ill_conditioned_50d(chain_method):
    """Variances 0.01..1: the windowed diagonal mass matrix whitens the target, so the tuned
    step size is O(1) in the whitened frame and a few gradients buy an effective sample.
    Vectorized: the opt-in cross-chain (ChEES) tuning; sequential: the default
    single-chain (U-turn) rule."""
    kernel = TunedHMC(ill_conditioned_model, cross_chain=chain_method == "vectorized")
    mcmc = make_mcmc(kernel, num_warmup=400, num_samples=400, chain_method=chain_method)
    mcmc.run(random.PRNGKey(1), extra_fields=FIELDS)
    x = mcmc.get_samples(group_by_chain=True)["x"]
    var = np.linspace(0.01, 1.0, 50)
    assert_mean(x, np.zeros(50), np.sqrt(var), "50-D mean")
    assert_variance(x, var, "50-D variance")
    extra = mcmc.get_extra_fields(group_by_chain=True)
    ess = np.asarray(effective_sample_size(np.asarray(x, np.float64)))
    per_1k = 1000 * ess.min() / extra["n_steps"].sum()
    assert per_1k > 40, per_1k  # NumPyro NUTS: ~30 on a 100-D version
    assert not extra["accept_prob"].mean() < 0.6


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", sigma.shape[0]):
        theta_t = numpyro.sample("theta_t", dist.Normal(0.0, 1.0))
        numpyro.deterministic("theta", mu + tau * theta_t)
        numpyro.sample("obs", dist.Normal(mu + tau * theta_t, sigma), obs=y)


Y8 = jnp.array(eight_schools_data.Y)
SIGMA8 = jnp.array(eight_schools_data.SIGMA)


def test_eight_schools_non_centred_matches_nuts():
    nuts = make_mcmc(NUTS(eight_schools), num_warmup=300, num_samples=500, num_chains=2)
    nuts.run(random.PRNGKey(2), SIGMA8, Y8)
    ref = nuts.get_samples(group_by_chain=True)
    mcmc = make_mcmc(TunedHMC(eight_schools), num_warmup=400, num_samples=800, num_chains=3)
    mcmc.run(random.PRNGKey(3), SIGMA8, Y8, extra_fields=("diverging",))
    got = mcmc.get_samples(group_by_chain=True)
    for site in ("mu", "tau", "theta"):
        a, b = np.asarray(got[site], np.float64), np.asarray(ref[site], np.float64)
        ess_a, ess_b = effective_sample_size(a), effective_sample_size(b)
        sd = b.reshape(-1, *b.shape[2:]).std(0)
        err = np.abs(a.mean((0, 1)) - b.mean((0, 1)))
        assert np.all(err < N_SE * sd * np.sqrt(1 / ess_a + 1 / ess_b)), site
    assert mcmc.get_extra_fields()["diverging"].mean() < 0.01


def constrained_model():
    numpyro.sample("scale", dist.HalfNormal(2.0))
    numpyro.sample("w", dist.Dirichlet(jnp.array([1.0, 2.0, 3.0])))


def test_constrained_sites_in_constrained_space():
    mcmc = make_mcmc(TunedHMC(constrained_model), num_warmup=300, num_samples=800)
    mcmc.run(random.PRNGKey(4))
    s = mcmc.get_samples(group_by_chain=True)
    assert np.all(np.asarray(s["scale"]) > 0)
    w = np.asarray(s["w"])
    assert np.all(w > 0)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert_mean(s["scale"], 2.0 * np.sqrt(2.0 / np.pi), 2.0 * np.sqrt(1.0 - 2.0 / np.pi), "scale")
    alpha = np.array([1.0, 2.0, 3.0])
    mean_w = alpha / alpha.sum()
    assert_mean(w, mean_w, np.sqrt(mean_w * (1 - mean_w) / (alpha.sum() + 1)), "w")


def test_one_dimensional_target():
    mcmc = make_mcmc(TunedHMC(lambda: numpyro.sample("x", dist.Normal(1.0, 2.0))), num_warmup=300,
                     num_samples=1000)
    mcmc.run(random.PRNGKey(5))
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert_mean(x, 1.0, 2.0, "1-D")
    assert_variance(x, 4.0, "1-D")


# ---------------------------------------------------------------------------------------
# API: chain methods, seeds, warmup/continuation, jit_model_args, pickling, ArviZ


def api_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.deterministic("mu_sum", mu.sum(-1))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("obs", dist.Normal(mu, sigma).to_event(1), obs=y)


def api_data():
    return jnp.asarray(np.random.default_rng(0).normal([1.0, -1.0], 1.5, size=(30, 2)), jnp.float32)


@pytest.fixture(scope="module")
def per_chain_run():
    """Vectorized chains with per-chain tuning (the default), seed 0."""
    kernel = TunedHMC(api_model)
    pickled = pickle.dumps(kernel)
    mcmc = make_mcmc(kernel, num_warmup=150, num_samples=100)
    mcmc.run(random.PRNGKey(0), api_data(), extra_fields=FIELDS)
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return {"kernel": kernel, "mcmc": mcmc, "pickled": pickled, "samples": samples}


@pytest.fixture(scope="module")
def cross_chain_run():
    """Vectorized chains with cross-chain (ChEES ensemble) tuning, the opt-in."""
    mcmc = make_mcmc(TunedHMC(api_model, cross_chain=True), num_warmup=150, num_samples=100, num_chains=3)
    mcmc.run(random.PRNGKey(0), api_data(), extra_fields=FIELDS)
    return mcmc


def assert_same_draws(a, b, what):
    for site in a:
        np.testing.assert_allclose(np.asarray(a[site]), np.asarray(b[site]), rtol=1e-4, atol=1e-5,
                                   err_msg=f"{what}: {site}")


def _per_chain_draws(chain_method, **kw):
    mcmc = make_mcmc(TunedHMC(api_model, **kw), num_warmup=40, num_samples=30, chain_method=chain_method)
    mcmc.run(random.PRNGKey(0), api_data())
    return mcmc


def test_per_chain_tuning_sequential_equals_vectorized(jax_x64):
    """Per-chain tuning: chain k does the same computation batched or alone. Up to rounding:
    vmap may sum in another order, and warmup's feedback loops (dual averaging multiplies
    acceptance errors by ~sqrt(t)/0.05) amplify last-bit differences about 1.5x per
    iteration, so the check runs in float64 over 70 iterations."""
    ref = _per_chain_draws("vectorized").get_samples(group_by_chain=True)
    assert np.asarray(ref["mu"]).dtype == np.float64
    # one chain at a time: the single-chain rule whatever cross_chain says
    seq = _per_chain_draws("sequential").get_samples(group_by_chain=True)
    assert_same_draws(seq, ref, "sequential")


def test_default_vectorized_chain_equals_chain_run_alone(jax_x64):
    """Chains are independent by default (NumPyro's ``test_compile_warmup_run``): chain 0 of
    a 2-chain vectorized run is the 1-chain run fed the key ``MCMC`` hands chain 0, i.e.
    ``random.split(key, 2)[0]`` (``MCMC.run`` splits one key into ``num_chains``)."""
    key = random.PRNGKey(7)
    both = make_mcmc(TunedHMC(api_model), num_warmup=40, num_samples=30, num_chains=2)
    both.run(key, api_data())
    alone = make_mcmc(TunedHMC(api_model), num_warmup=40, num_samples=30, num_chains=1)
    alone.run(random.split(key, 2)[0], api_data())
    a = both.get_samples(group_by_chain=True)["mu"][0]
    b = alone.get_samples(group_by_chain=True)["mu"][0]
    assert np.asarray(a).dtype == np.float64
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)


def test_cross_chain_tuning_is_shared_and_differs_from_per_chain(cross_chain_run, per_chain_run):
    extra = cross_chain_run.get_extra_fields(group_by_chain=True)
    for name in ("adapt_state.step_size", "adapt_state.trajectory_length"):
        v = np.asarray(extra[name])
        assert v.shape == (3, 100)
        np.testing.assert_array_equal(v, np.broadcast_to(v[:1, :1], v.shape))  # shared, frozen
    per_chain = np.asarray(per_chain_run["mcmc"].get_extra_fields(group_by_chain=True)["adapt_state.step_size"])
    assert per_chain[0, 0] != per_chain[1, 0]  # each chain tuned its own
    first_two = np.asarray(cross_chain_run.get_samples(group_by_chain=True)["mu"])[:2]
    assert not np.allclose(first_two, per_chain_run["samples"]["mu"])  # documented: differs


def test_chain_method_parallel(jax_x64):
    par = _per_chain_draws("parallel")
    assert par.chain_method == "parallel"
    ref = _per_chain_draws("vectorized", cross_chain=False)
    assert_same_draws(par.get_samples(group_by_chain=True), ref.get_samples(group_by_chain=True), "parallel")


def test_same_seed_same_draws(cross_chain_run):
    """Re-running the same MCMC object (compiled once): another seed gives other draws, the
    same seed the same draws (the per-chain path is checked in ``test_pickling``)."""
    ref = {k: np.asarray(v) for k, v in cross_chain_run.get_samples(group_by_chain=True).items()}
    cross_chain_run.run(random.PRNGKey(1), api_data(), extra_fields=FIELDS)
    assert not np.allclose(np.asarray(cross_chain_run.get_samples(group_by_chain=True)["mu"]), ref["mu"])
    cross_chain_run.run(random.PRNGKey(0), api_data(), extra_fields=FIELDS)
    for site, v in cross_chain_run.get_samples(group_by_chain=True).items():
        np.testing.assert_array_equal(np.asarray(v), ref[site], err_msg=site)


def test_sample_stats_and_arviz(cross_chain_run):
    mcmc = cross_chain_run
    extra = mcmc.get_extra_fields(group_by_chain=True)
    for name in FIELDS + ("diverging",):
        assert np.asarray(extra[name]).shape == (3, 100), name
    acc = np.asarray(extra["accept_prob"])
    assert np.all((acc >= 0) & (acc <= 1))
    n = np.asarray(extra["n_steps"])
    assert np.all(n >= 1) and n.dtype.kind == "i"
    # the energy is the Hamiltonian at the start: potential of the previous draw + kinetic >= potential
    pe = np.asarray(extra["potential_energy"])
    assert np.all(np.asarray(extra["energy"])[:, 1:] >= pe[:, :-1] - 1e-4)
    idata = az.from_numpyro(mcmc)
    stats = set(idata.sample_stats.data_vars)
    assert {"diverging", "lp", "step_size", "n_steps", "acceptance_rate", "energy", "energy_error"} <= stats
    assert "tree_depth" not in stats
    assert np.isfinite(az.bfmi(idata)).all()
    assert idata.posterior["mu"].shape == (3, 100, 2) and "mu_sum" in idata.posterior
    out = io.StringIO()
    with redirect_stdout(out):
        mcmc.print_summary()
    assert "Number of divergences" in out.getvalue() and "sigma" in out.getvalue()


def test_pickling(per_chain_run):
    before = pickle.loads(per_chain_run["pickled"])
    after = pickle.loads(pickle.dumps(per_chain_run["kernel"]))
    for kernel in (before, after):
        mcmc = make_mcmc(kernel, num_warmup=150, num_samples=100)
        # the same extra fields as the fixture's run: another set compiles another program,
        # whose last-bit rounding differs, and a fixed-seed HMC path then drifts apart
        mcmc.run(random.PRNGKey(0), api_data(), extra_fields=FIELDS)
        assert_same_draws(mcmc.get_samples(group_by_chain=True), per_chain_run["samples"], "unpickled")
    mcmc = pickle.loads(pickle.dumps(per_chain_run["mcmc"]))
    assert np.asarray(mcmc.get_samples()["mu"]).shape == (200, 2)


def test_warmup_then_run_then_continue():
    """Cross-chain tuning (the batched code path of its own): ``warmup()`` then ``run()``
    samples without adapting; continuing from ``last_state`` neither re-adapts nor
    restarts the iteration counter."""
    y = api_data()
    mcmc = make_mcmc(TunedHMC(api_model, cross_chain=True), num_warmup=150, num_samples=100)
    mcmc.warmup(random.PRNGKey(3), y)
    warm = mcmc.post_warmup_state
    np.testing.assert_array_equal(np.asarray(warm.i), 150)
    fields = ("adapt_state.step_size", "i")
    leaves = lambda s: [np.asarray(a) for a in jax.tree.leaves(s.adapt_state)]  # noqa: E731
    mcmc.run(random.PRNGKey(4), y, extra_fields=fields)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    step0 = np.asarray(warm.adapt_state.step_size)
    np.testing.assert_array_equal(extra["adapt_state.step_size"], np.broadcast_to(step0[:, None], (2, 100)))
    np.testing.assert_array_equal(extra["i"][0], 151 + np.arange(100))
    for a, b in zip(leaves(warm), leaves(mcmc.last_state)):
        np.testing.assert_array_equal(a, b)
    first = np.asarray(mcmc.get_samples(group_by_chain=True)["mu"])
    mcmc.post_warmup_state = mcmc.last_state
    mcmc.run(mcmc.post_warmup_state.rng_key, y, extra_fields=fields)
    np.testing.assert_array_equal(mcmc.get_extra_fields(group_by_chain=True)["i"][0], 251 + np.arange(100))
    second = np.asarray(mcmc.get_samples(group_by_chain=True)["mu"])
    assert np.all(np.isfinite(second)) and not np.allclose(first, second)


def normal_mean_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("obs", dist.Normal(mu, 1.0).to_event(1), obs=y)


def test_jit_model_args_new_data():
    noise = np.random.default_rng(1).normal(size=(40, 2))
    mcmc = make_mcmc(TunedHMC(normal_mean_model), num_warmup=200, num_samples=300, jit_model_args=True)
    for centre in (1.0, 10.0):
        y = jnp.asarray(centre + noise, jnp.float32)
        mcmc.run(random.PRNGKey(2), y)
        prec = 40 + 1e-2
        assert_mean(mcmc.get_samples(group_by_chain=True)["mu"], np.asarray(y, np.float64).sum(0) / prec,
                    np.full(2, prec**-0.5), f"data centred at {centre}")


# ---------------------------------------------------------------------------------------
# Divergences and bad input


def test_divergences_flagged_chain_continues():
    """A fixed step size far too large for the narrow direction: transitions diverge, are
    flagged and rejected; the chain neither crashes nor produces non-finite draws."""
    pf = lambda z: 0.5 * jnp.sum(z**2 / jnp.array([1e-4, 1.0]))  # noqa: E731
    mcmc = make_mcmc(TunedHMC(potential_fn=pf, step_size=1.0, adapt_step_size=False, adapt_mass_matrix=False), num_warmup=50,
                     num_samples=100)
    mcmc.run(random.PRNGKey(6), init_params=jnp.zeros((2, 2)), extra_fields=("accept_prob", "energy_error"))
    extra = mcmc.get_extra_fields()
    assert extra["diverging"].any()
    assert np.all(np.asarray(extra["accept_prob"])[np.asarray(extra["diverging"])] < 1e-6)
    assert np.all(np.isfinite(np.asarray(mcmc.get_samples())))
    # nan potential away from the start: rejected as divergent, chain keeps going
    pf_nan = lambda z: jnp.where(z[0] > 1.5, jnp.nan, 0.5 * jnp.sum(z**2))  # noqa: E731
    mcmc = make_mcmc(TunedHMC(potential_fn=pf_nan), num_warmup=100, num_samples=200)
    mcmc.run(random.PRNGKey(7), init_params=jnp.zeros((2, 2)))
    z = np.asarray(mcmc.get_samples())
    assert np.all(np.isfinite(z)) and np.all(z[:, 0] <= 1.5)
    assert mcmc.get_extra_fields()["diverging"].any()


def test_potential_fn_needs_init_params_and_finite_start():
    mcmc = make_mcmc(TunedHMC(potential_fn=lambda z: 0.5 * jnp.sum(z**2)))
    with pytest.raises(ValueError, match="init_params"):
        mcmc.run(random.PRNGKey(0))
    mcmc = make_mcmc(TunedHMC(potential_fn=lambda z: -jnp.sum(jnp.log(z))))
    with pytest.raises(ValueError, match="not finite"):
        mcmc.run(random.PRNGKey(0), init_params=jnp.zeros((2, 2)))


def test_discrete_site_raises(without_funsor):
    def model():
        numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.sample("coin", dist.Bernoulli(0.3))

    with pytest.raises(ValueError, match="coin"):
        make_mcmc(TunedHMC(model), num_chains=1).run(random.PRNGKey(0))


@pytest.mark.parametrize("bad", [
    {"step_size": -0.1}, {"step_size": 0.0}, {"step_size": float("nan")},
    {"trajectory_length": -1.0}, {"trajectory_length": float("inf")},
    {"target_accept_prob": 1.0}, {"target_accept_prob": 0.0}, {"target_accept_prob": "high"},
    {"max_steps": 0}, {"max_steps": 2.5}, {"learning_rate": 0.0},
    {"cross_chain": "yes"}, {"adapt_mass_matrix": None}, {"dense_mass": "full"},
], ids=lambda b: f"{next(iter(b))}={next(iter(b.values()))}")
def test_invalid_arguments_raise_at_construction(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TunedHMC(api_model, **bad)


def test_model_and_potential_fn_exclusive():
    with pytest.raises(ValueError, match="exactly one"):
        TunedHMC()
    with pytest.raises(ValueError, match="exactly one"):
        TunedHMC(api_model, potential_fn=lambda z: 0.0)
