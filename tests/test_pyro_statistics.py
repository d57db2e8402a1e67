"""The Pyro kernels sample the right distributions: moments within Monte Carlo error.

Tolerances come from the chains themselves: a mean is accepted if it lies within
``Z`` Monte Carlo standard errors of the truth, ``sd / sqrt(ESS)`` with the ESS of Pyro's
``effective_sample_size`` over all chains; a variance likewise through the mean of the
squared deviations from the true mean. ``Z = 5``: with a dozen checks per kernel a false
alarm is far below one in 10^4, while a real error of a few percent in a moment is caught.
ESH is unadjusted (its bias shrinks with the step size, tuned to a small energy error);
these checks hold it to the same standard as the exact kernels.

Runs use ``BatchedMCMC`` with ``jit_compile=True`` (many chains for the price of one on
these small models) unless a test is about ``pyro.infer.MCMC``. Fixed seeds.
"""

import math
import warnings

import pytest

torch = pytest.importorskip("torch")
pyro = pytest.importorskip("pyro")

import pyro.distributions as dist  # noqa: E402
from pyro import poutine  # noqa: E402
from pyro.infer import MCMC, config_enumerate, infer_discrete  # noqa: E402
from pyro.ops.indexing import Vindex  # noqa: E402
from pyro.ops.stats import effective_sample_size  # noqa: E402

import esh_kernels.pyro as ekp  # noqa: E402
from esh_kernels.pyro import ESH, AdjustedESH, run_batched  # noqa: E402

import eight_schools_data  # noqa: E402

KERNELS = [AdjustedESH, ESH]
if hasattr(ekp, "TunedHMC"):
    KERNELS.append(ekp.TunedHMC)
Z = 5.0


@pytest.fixture(autouse=True)
def _setup():
    torch.set_num_threads(1)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def ess(x):
    """ESS of ``(C, N)`` draws of a scalar."""
    return float(effective_sample_size(x.unsqueeze(-1), chain_dim=0, sample_dim=1)[0])


def check_mean(x, truth, what):
    """``x``: ``(C, N)`` draws of a scalar with expectation ``truth``."""
    e = ess(x)
    assert e > 20, f"{what}: ESS {e:.0f} too small to test"
    mcse = float(x.std()) / math.sqrt(e)
    err = float(x.mean()) - truth
    assert abs(err) < Z * mcse, f"{what}: mean {float(x.mean()):.4f} vs {truth:.4f} (mcse {mcse:.4f}, ESS {e:.0f})"


def check_variance(x, mean, var, what):
    check_mean((x - mean) ** 2, var, what + " variance")


def run(cls, model, chains=4, warmup=300, samples=400, seed=0, **kw):
    pyro.set_rng_seed(seed)
    kw.setdefault("jit_compile", True)
    kw.setdefault("ignore_jit_warnings", True)
    return run_batched(cls, model, num_chains=chains, warmup_steps=warmup, num_samples=samples, **kw)


# -- Gaussians ----------------------------------------------------------------------------

F64 = torch.float64
SD = torch.tensor([0.1, 1.0, 3.0, 10.0], dtype=F64)


def diag_gauss():
    pyro.sample("x", dist.Normal(torch.zeros(4, dtype=F64), SD).to_event(1))


@pytest.mark.parametrize("cls", KERNELS)
def test_diagonal_gaussian_moments(cls):
    mcmc = run(cls, diag_gauss)
    x = mcmc.get_samples(group_by_chain=True)["x"]
    for i in range(4):
        check_mean(x[..., i] / SD[i], 0.0, f"x[{i}]")
        check_variance(x[..., i] / SD[i], 0.0, 1.0, f"x[{i}]")
    assert sum(len(v) for v in mcmc.diagnostics()["divergences"].values()) == 0


RHO = 0.95
COV = torch.tensor([[1.0, RHO * 2.0], [RHO * 2.0, 4.0]], dtype=F64)
MEAN = torch.tensor([1.0, -2.0], dtype=F64)


def correlated_gauss():
    pyro.sample("x", dist.MultivariateNormal(MEAN, covariance_matrix=COV))


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("cls", KERNELS)
def test_correlated_2d_gaussian(cls, dense):
    x = run(cls, correlated_gauss, dense_mass=dense, seed=1).get_samples(group_by_chain=True)["x"]
    sd = COV.diagonal().sqrt()
    z = (x - MEAN) / sd
    for i in range(2):
        check_mean(z[..., i], 0.0, f"x[{i}]")
        check_variance(z[..., i], 0.0, 1.0, f"x[{i}]")
    check_mean(z[..., 0] * z[..., 1], RHO, "correlation")


SD_B = 0.1


def correlated_pair_and_scales():
    pyro.sample("a", dist.MultivariateNormal(MEAN, covariance_matrix=COV))
    pyro.sample("b", dist.Normal(torch.ones(3, dtype=F64), SD_B).to_event(1))


@pytest.mark.parametrize("cls", KERNELS)
def test_block_full_mass_estimates_only_the_blocks(cls):
    """``full_mass=[("a",)]`` (Pyro NUTS's block form): ``a``'s 2x2 block of the
    preconditioner is dense (its correlation is learnt), ``b`` stays diagonal, and the
    draws are right. The flat layout is ``a`` (0, 1) then ``b`` (2, 3, 4): sites in sorted
    order."""
    pyro.set_rng_seed(2)
    seen = {}

    def keep_scale(kernel, draws, stage, i):
        seen["scale"] = kernel._state.adapt_state.scale[0].clone()

    mcmc = ekp.BatchedMCMC(cls(correlated_pair_and_scales, full_mass=[("a",)]), num_samples=400,
                           warmup_steps=300, num_chains=4, disable_progbar=True,
                           hook=keep_scale).run()
    scale = seen["scale"]
    assert scale.shape == (5, 5)
    assert float(scale[1, 0]) > 0.5  # the learnt correlation: L[1,0] = 0.95 * 2 for the truth
    assert torch.equal(scale[2:, :2], torch.zeros(3, 2, dtype=F64))
    assert torch.equal(scale[2:, 2:], torch.diag(scale[2:, 2:].diagonal()))
    s = mcmc.get_samples(group_by_chain=True)
    z = (s["a"] - MEAN) / COV.diagonal().sqrt()
    check_mean(z[..., 0] * z[..., 1], RHO, "correlation of a")
    for i in range(2):
        check_variance(z[..., i], 0.0, 1.0, f"a[{i}]")
    for i in range(3):
        check_variance(s["b"][..., i], 1.0, SD_B**2, f"b[{i}]")


# -- eight schools (non-centred) ------------------------------------------------------------

Y8 = torch.tensor(eight_schools_data.Y, dtype=F64)
SIGMA8 = torch.tensor(eight_schools_data.SIGMA, dtype=F64)

# Posterior means from NumPyro NUTS (target_accept_prob=0.9), 4 chains x 50000 draws after
# 2000 warmup, float64, PRNGKey(123), 1 divergence in 200000 draws. Their Monte Carlo
# standard errors (mu 0.0075, log tau 0.0039, theta[0] 0.013; ESS 1e5-2e5) are negligible
# against the tolerances here (those of ~2000 draws: ~0.1-0.3).
EIGHT_SCHOOLS_REF = {"mu": 4.3984, "log_tau": 0.7942, "theta0": 6.2069}


def eight_schools():
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", 8):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu + tau * theta_tilde, SIGMA8), obs=Y8)


@pytest.mark.parametrize("cls", KERNELS)
def test_eight_schools_against_reference(cls):
    mcmc = run(cls, eight_schools, chains=6, warmup=400, samples=400, seed=2)
    s = mcmc.get_samples(group_by_chain=True)
    check_mean(s["mu"], EIGHT_SCHOOLS_REF["mu"], "mu")
    check_mean(s["tau"].log(), EIGHT_SCHOOLS_REF["log_tau"], "log tau")
    check_mean(s["mu"] + s["tau"] * s["theta_tilde"][..., 0], EIGHT_SCHOOLS_REF["theta0"], "theta[0]")


# -- constrained sites ----------------------------------------------------------------------

ALPHA = torch.tensor([1.0, 2.0, 3.0], dtype=F64)


def constrained():
    pyro.sample("sigma", dist.HalfNormal(torch.tensor(2.0, dtype=F64)))
    pyro.sample("p", dist.Dirichlet(ALPHA))


@pytest.mark.parametrize("cls", KERNELS)
def test_constrained_sites_in_constrained_space(cls):
    s = run(cls, constrained, chains=8, seed=3).get_samples(group_by_chain=True)
    sigma, p = s["sigma"], s["p"]
    assert bool((sigma > 0).all())
    assert bool((p > 0).all()) and torch.allclose(p.sum(-1), torch.ones(()), atol=1e-12)
    check_mean(sigma, 2.0 * math.sqrt(2.0 / math.pi), "E[sigma]")
    check_variance(sigma, 2.0 * math.sqrt(2.0 / math.pi), 4.0 * (1.0 - 2.0 / math.pi), "sigma")
    a0 = float(ALPHA.sum())
    for k in range(3):
        m = float(ALPHA[k]) / a0
        check_mean(p[..., k], m, f"E[p{k}]")
        check_variance(p[..., k], m, m * (1 - m) / (a0 + 1), f"p{k}")


# -- pyro.infer.MCMC, two chains one after another ------------------------------------------


SD_MCMC = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=F64)


def diag_gauss_mcmc():
    pyro.sample("x", dist.Normal(torch.zeros(4, dtype=F64), SD_MCMC).to_event(1))


@pytest.mark.parametrize("cls", KERNELS)
def test_mcmc_two_chains_gaussian(cls):
    """Two chains of 400 draws: a milder spread of scales than the batched test, whose
    largest-scale coordinate gets an ESS too small (and too noisy) to test with in one
    chain of ESH (in NumPyro too: the metric from ~150 warmup draws misses its scale by
    tens of percent, and ESH mixes slowly along a mis-scaled direction)."""
    pyro.set_rng_seed(4)
    mcmc = MCMC(cls(diag_gauss_mcmc, jit_compile=True, ignore_jit_warnings=True), num_samples=400,
                warmup_steps=300, num_chains=2, disable_progbar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mcmc.run()
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert x.shape == (2, 400, 4)
    for i in range(4):
        check_mean(x[..., i] / SD_MCMC[i], 0.0, f"x[{i}]")
        check_variance(x[..., i] / SD_MCMC[i], 0.0, 1.0, f"x[{i}]")


# -- discrete sites summed out (enumerated, as NUTS does) -------------------------------------

Y_MIX = torch.tensor([-2.3, -1.9, -2.6, -1.4, -2.0, -2.2, 1.7, 2.4, 2.1, 1.5], dtype=F64)
LOC_PRIOR = torch.tensor([-2.0, 2.0], dtype=F64)
W1 = 0.4  # P(k = 1)


def mixture():
    """Two Gaussian components with an enumerated assignment per point. The priors on the
    locations are far apart enough that the labels never switch (the swapped mode is ~20
    nats lower), so the posterior means are well defined."""
    locs = pyro.sample("locs", dist.Normal(LOC_PRIOR, 1.0).to_event(1))
    with pyro.plate("data", len(Y_MIX)):
        k = pyro.sample("k", dist.Bernoulli(torch.tensor(W1, dtype=F64)),
                        infer={"enumerate": "parallel"})
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., k.long()], 1.0), obs=Y_MIX)


def mixture_posterior_means():
    """``E[locs]`` by quadrature on a 601 x 601 grid (spacing 0.02; the posterior sds are
    ~0.3-0.4) of the exact log density, the assignments summed out by hand."""
    g0 = torch.linspace(-8.0, 4.0, 601, dtype=F64)
    g1 = torch.linspace(-4.0, 8.0, 601, dtype=F64)
    l0, l1 = torch.meshgrid(g0, g1, indexing="ij")
    normal = dist.Normal(torch.zeros((), dtype=F64), 1.0)
    y = Y_MIX[:, None, None]
    lik = torch.logaddexp(math.log(1 - W1) + normal.log_prob(y - l0),
                          math.log(W1) + normal.log_prob(y - l1)).sum(0)
    logp = lik + normal.log_prob(l0 - LOC_PRIOR[0]) + normal.log_prob(l1 - LOC_PRIOR[1])
    p = torch.softmax(logp.reshape(-1), 0).reshape(logp.shape)
    return float((p * l0).sum()), float((p * l1).sum())


@pytest.mark.parametrize("cls", KERNELS)
def test_enumerated_mixture_against_quadrature(cls):
    """One chain of ``pyro.infer.MCMC`` (compiled) on a mixture whose assignments are
    summed out: the component locations' posterior means match quadrature."""
    pyro.set_rng_seed(5)
    mcmc = MCMC(cls(mixture, jit_compile=True, ignore_jit_warnings=True), num_samples=500,
                warmup_steps=300, disable_progbar=True)
    mcmc.run()
    locs = mcmc.get_samples(group_by_chain=True)["locs"]
    for i, truth in enumerate(mixture_posterior_means()):
        check_mean(locs[..., i], truth, f"locs[{i}]")


Y_LATENT = torch.tensor([1.2, 0.9], dtype=F64)
SHIFT = 1.5
P_LATENT = 0.3


def bernoulli_latent(y=Y_LATENT):
    """``x ~ N(0, I)``, ``k ~ Bernoulli(0.3)`` (unmarked: enumerated as by NUTS),
    ``y ~ N(x + 1.5 k, I)``."""
    x = pyro.sample("x", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
    k = pyro.sample("k", dist.Bernoulli(torch.tensor(P_LATENT, dtype=F64)))
    pyro.sample("y", dist.Normal(x + SHIFT * k[..., None], 1.0).to_event(1), obs=y)


def bernoulli_latent_truth():
    """``P(k = 1 | y)`` and ``E[x | y]``: given ``k``, ``y ~ N(1.5 k, 2 I)`` and
    ``x | y, k ~ N((y - 1.5 k) / 2, I / 2)``."""
    log_w = torch.stack([
        math.log(1 - P_LATENT) + dist.Normal(0.0, math.sqrt(2.0)).log_prob(Y_LATENT).sum(),
        math.log(P_LATENT) + dist.Normal(SHIFT, math.sqrt(2.0)).log_prob(Y_LATENT).sum(),
    ])
    w = torch.softmax(log_w, 0)
    mean_x = w[0] * Y_LATENT / 2 + w[1] * (Y_LATENT - SHIFT) / 2
    return float(w[1]), mean_x


def discrete_draws(model, samples, site, first_available_dim):
    """The recipe of ``docs/pyro.md``: one draw of ``site`` from its conditional given each
    posterior draw, by ``infer_discrete`` (temperature 1) on the conditioned model."""
    n = len(next(iter(samples.values())))
    out = []
    for i in range(n):
        conditioned = poutine.condition(model, {k: v[i] for k, v in samples.items()})
        sampler = infer_discrete(config_enumerate(conditioned), temperature=1,
                                 first_available_dim=first_available_dim)
        out.append(poutine.trace(sampler).get_trace().nodes[site]["value"])
    return torch.stack(out)


@pytest.mark.parametrize("cls", KERNELS)
def test_bernoulli_latent_and_infer_discrete(cls):
    """BatchedMCMC (compiled) on a model with a global Bernoulli site summed out: the
    continuous site's posterior mean is the analytic one, and ``infer_discrete`` on the
    draws recovers ``P(k = 1 | y)``."""
    w1, mean_x = bernoulli_latent_truth()
    mcmc = run(cls, bernoulli_latent, chains=4, warmup=300, samples=300, seed=6)
    x = mcmc.get_samples(group_by_chain=True)["x"]
    for i in range(2):
        check_mean(x[..., i], float(mean_x[i]), f"x[{i}]")
    k = discrete_draws(bernoulli_latent, mcmc.get_samples(), "k", first_available_dim=-1)
    check_mean(k.reshape(x.shape[:2]), w1, "P(k = 1)")


def test_esh_clock_reanchored_after_energy_drift():
    """Issue 14 case 5, cheaply: the energy error that a long run accumulates in the log
    speed ``r`` is injected directly (``r += 2``, an error of +4 in 2-D), and the next
    draws must take as many steps as before it, since the clock is re-anchored to the
    energy shell at each draw (``esh_math.md`` §4.4). A carried clock would run ``e^2``
    times too fast and take about 1/7 of the steps."""
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.95], [0.95, 1.0]])

    def model():
        pyro.sample("x", dist.MultivariateNormal(torch.zeros(2), covariance_matrix=cov))

    kernel = ESH(model)
    kernel.setup_batched(200, 4)
    for _ in range(200):
        kernel.sample_batched()

    def mean_steps(n):
        total = 0.0
        for _ in range(n):
            kernel.sample_batched()
            total += float(kernel._state.n_steps.mean())
        return total / n

    before = mean_steps(200)
    state = kernel._state
    kernel._state = state._replace(integrator=state.integrator._replace(r=state.integrator.r + 2.0))
    after = mean_steps(200)
    assert after > 0.7 * before, f"steps per draw {before:.2f} before the drift, {after:.2f} after"


@pytest.mark.parametrize("kernel_cls", [AdjustedESH, ESH])
def test_step_size_survives_a_nan_region(kernel_cls):
    """Issue 14 case 1: next to a region where the density is NaN (``-sqrt(x0 + 1)``,
    ``x0 < -1``) warmup drove the step to 1e-4 or below (trajectories reaching the
    region were rejected, or lowered the ESH predictor's cap, whatever the step size).
    The NumPyro twin, with the moments, is ``tests/test_numpyro_hard_targets.py``."""
    torch.manual_seed(0)

    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        pyro.factor("f", -torch.sqrt(x[..., 0] + 1.0))

    kernel = kernel_cls(model, init_strategy=pyro.infer.autoguide.initialization.init_to_sample)
    with pyro.validation_enabled(False):  # the NaN factor is the point of the test
        kernel.setup_batched(300, 2)
        for _ in range(300):
            kernel.sample_batched()
    step = kernel._state.adapt_state.step_size
    assert bool((step > 1e-2).all()), f"step sizes {step}"


def structured_model(cov):
    w = pyro.sample("w", dist.Normal(0.0, 1000.0).expand([2]).to_event(1))
    x = pyro.sample("x", dist.Normal(0.0, 1000.0).expand([1]).to_event(1))
    y = pyro.sample("y", dist.Normal(0.0, 1000.0).expand([1]).to_event(1))
    z = pyro.sample("z", dist.Normal(0.0, 1000.0).expand([1]).to_event(1))
    pyro.sample("obs", dist.MultivariateNormal(torch.zeros(5, dtype=F64), cov),
                obs=torch.cat([w, x, y, z]))


COV_99 = torch.tensor([[1.0, 0.99 * 2.0], [0.99 * 2.0, 4.0]], dtype=F64)


def strongly_correlated_pair_and_scales():
    pyro.sample("a", dist.MultivariateNormal(MEAN, covariance_matrix=COV_99))
    pyro.sample("b", dist.Normal(torch.ones(3, dtype=F64), SD_B).to_event(1))


@pytest.mark.parametrize("cls", KERNELS)
def test_automatic_metric_learns_the_correlation(cls):
    """The default ``full_mass`` / ``dense_mass`` (``"auto"``, ``esh_math.md`` §7.6): the
    pair with correlation 0.99 gets a dense preconditioner in every chain, and
    ``kernel.inverse_mass_matrix`` is one matrix over all sites per chain, with that
    correlation."""
    pyro.set_rng_seed(2)
    seen = {}

    def keep_scale(kernel, draws, stage, i):
        seen["scale"] = kernel._state.adapt_state.scale.clone()
        seen["kernel"] = kernel

    ekp.BatchedMCMC(cls(strongly_correlated_pair_and_scales), num_samples=5, warmup_steps=500,
                    num_chains=4, disable_progbar=True, hook=keep_scale).run()
    scale = seen["scale"]
    assert scale.shape == (4, 5, 5)
    assert bool(torch.all(scale[:, 1, 0] > 0.5))  # L[1,0] = 0.99 * 2 for the truth
    imm = seen["kernel"].inverse_mass_matrix[("a", "b")]  # one matrix per chain
    assert imm.shape == (4, 5, 5)
    correlation = imm[:, 0, 1] / (imm[:, 0, 0] * imm[:, 1, 1]).sqrt()
    assert bool(torch.all(correlation > 0.95)), correlation


def test_automatic_metric_learns_the_correlations_of_a_60d_posterior():
    """Between 51 and ``AUTO_DENSE_MAX_DIM`` (150) dimensions the default ``full_mass``
    learns a dense metric in Pyro too (diagonal there until 2026-12-06): a 60-D Gaussian whose
    neighbouring coordinates correlate at 0.9, ``AdjustedESH``, 2 chains, 800 warmup
    iterations. The windows' gradient estimate is exact on a Gaussian (``esh_math.md`` §7.6),
    so the adapted ``M^{-1}`` is the covariance."""
    pyro.set_rng_seed(0)
    d = 60
    idx = torch.arange(d, dtype=F64)
    cov = 0.9 ** (idx[:, None] - idx[None, :]).abs()

    def correlated():
        pyro.sample("x", dist.MultivariateNormal(torch.zeros(d, dtype=F64), covariance_matrix=cov))

    mcmc = ekp.BatchedMCMC(AdjustedESH(correlated), num_samples=5, warmup_steps=800, num_chains=2,
                           disable_progbar=True)
    mcmc.run()
    imm = mcmc.kernel.inverse_mass_matrix[("x",)]
    assert imm.shape == (2, d, d)
    assert float((imm - cov).abs().max()) < 0.02


@pytest.mark.parametrize("cls", KERNELS)
def test_inverse_mass_matrix_reads_like_pyros(cls):
    """``kernel.inverse_mass_matrix`` after a run is keyed as Pyro's ``HMC`` keys it (Pyro's
    own ``test_structured_mass``): one key with every site for ``full_mass=True/False``
    (a matrix / a vector), and per block plus the sites in no block for block lists; the
    adapted blocks are the posterior covariance blocks within 50% (Pyro's tolerance)."""
    w_cov = torch.tensor([[1.5, 0.5], [0.5, 1.5]], dtype=F64)
    xy_cov = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=F64)
    cov = torch.zeros(5, 5, dtype=F64)
    cov[:2, :2], cov[2:4, 2:4], cov[4, 4] = w_cov, xy_cov, 2.5
    for full in (True, False):
        kernel = cls(structured_model, full_mass=full)
        MCMC(kernel, num_samples=1, warmup_steps=1, disable_progbar=True).run(cov)
        assert kernel.inverse_mass_matrix[("w", "x", "y", "z")].dim() == 1 + int(full)
    pyro.set_rng_seed(0)
    kernel = cls(structured_model, full_mass=[("w",), ("x", "y")])
    MCMC(kernel, num_samples=1, warmup_steps=1000, disable_progbar=True).run(cov)
    imm = kernel.inverse_mass_matrix
    assert set(imm) == {("w",), ("x", "y"), ("z",)}
    torch.testing.assert_close(imm[("w",)], w_cov, atol=0.5, rtol=0.5)
    torch.testing.assert_close(imm[("x", "y")], xy_cov, atol=0.5, rtol=0.5)
    torch.testing.assert_close(imm[("z",)], torch.tensor([2.5], dtype=F64), atol=0.5, rtol=0.5)
