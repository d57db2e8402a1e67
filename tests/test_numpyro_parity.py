"""Drop-in parity with NumPyro's NUTS for the ``esh_kernels.numpyro`` kernels: models
without continuous latent sites, independent chains, and the start-up error for a
non-finite density (it names the sites). Each case is one that NumPyro's own MCMC tests run
with ``NUTS``; the expected behaviour is what ``NUTS`` does.
"""

import warnings

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random
from numpyro.infer import MCMC, NUTS

from esh_kernels.numpyro import ESH, AdjustedESH, TunedHMC
from moments import GAMMA_3_2_MOMENTS, raw_moment_z

KERNELS = [ESH, AdjustedESH, TunedHMC]


def _name(k):
    return k.__name__


def empty_model():
    pass


def deterministic_only(y=1.0):
    numpyro.deterministic("c", jnp.arange(3.0))
    numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)


def trivial_dirichlet():
    # a 1-component Dirichlet has no free coordinate: 0 unconstrained dimensions
    numpyro.sample("p", dist.Dirichlet(jnp.ones(1)))


def _run(kernel, chains=2, **run_kw):
    mcmc = MCMC(kernel, num_warmup=20, num_samples=7, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(0), **run_kw)
    return mcmc


@pytest.mark.parametrize("model", [empty_model, deterministic_only, trivial_dirichlet])
@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_model_without_continuous_latent_sites_returns_what_nuts_returns(kernel_cls, model):
    ours = _run(kernel_cls(model)).get_samples(group_by_chain=True)
    nuts = _run(NUTS(model)).get_samples(group_by_chain=True)
    assert set(ours) == set(nuts)
    for name in nuts:
        assert ours[name].shape == nuts[name].shape == (2, 7) + nuts[name].shape[2:]
        np.testing.assert_array_equal(np.asarray(ours[name]), np.asarray(nuts[name]))


@pytest.mark.parametrize("kernel_cls", [ESH, AdjustedESH], ids=_name)
def test_one_dimensional_model_is_sampled(kernel_cls, jax_x64):
    """A 1-D model, as NUTS samples it (15 of NumPyro's own MCMC tests have one): the ESH
    kernels add an auxiliary standard normal coordinate (``core/auxiliary.py``) that the
    user never sees. Gamma(3, 2): skewed, and positive (an ``exp`` transform)."""
    def one_d():
        numpyro.sample("x", dist.Gamma(3.0, 2.0))

    mcmc = MCMC(kernel_cls(one_d), num_warmup=1000, num_samples=2000, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    fields = ("potential_energy", "z_grad") if kernel_cls is AdjustedESH else ("potential_energy",)
    mcmc.run(random.PRNGKey(1), extra_fields=fields)
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert x.shape == (2, 2000)
    mean_z, second_z = raw_moment_z(x, *GAMMA_3_2_MOMENTS)
    assert abs(mean_z) < 4 and abs(second_z) < 4, (mean_z, second_z)
    # what the user reads has the model's one dimension, not the auxiliary coordinate's
    assert mcmc.last_state.z["x"].shape == (2,)
    imm = mcmc.last_state.adapt_state.inverse_mass_matrix
    assert list(imm) == [("x",)] and imm[("x",)].size == 2  # one entry per chain
    if "z_grad" in fields:
        assert mcmc.get_extra_fields()["z_grad"]["x"].shape == (4000,)
    # the reported potential energy (ArviZ's lp) is the model's at the draw, without the
    # auxiliary coordinate's y^2 / 2 (mean 1/2: off by up to several nats per draw before)
    u = jnp.log(mcmc.get_samples()["x"])
    model_pe = -(dist.Gamma(3.0, 2.0).log_prob(jnp.exp(u)) + u)  # with the log-Jacobian of exp
    np.testing.assert_allclose(mcmc.get_extra_fields()["potential_energy"], model_pe, rtol=1e-9, atol=1e-9)


def _two_d():
    numpyro.sample("x", dist.Normal(jnp.zeros(2), jnp.array([1.0, 3.0])))


@pytest.mark.parametrize("kernel_cls", [ESH, AdjustedESH], ids=_name)
def test_vectorized_chain_equals_the_chain_run_alone(kernel_cls, jax_x64):
    """NumPyro's ``test_compile_warmup_run``: chain 0 of a 2-chain vectorized run is the
    1-chain run with the key ``MCMC`` hands chain 0 (``random.split(key, 2)[0]``). TunedHMC's
    case is in ``test_tuned_hmc.py``."""
    key = random.PRNGKey(3)
    both = MCMC(kernel_cls(_two_d), num_warmup=30, num_samples=20, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    both.run(key)
    alone = MCMC(kernel_cls(_two_d), num_warmup=30, num_samples=20, progress_bar=False)
    alone.run(random.split(key, 2)[0])
    a = np.asarray(both.get_samples(group_by_chain=True)["x"][0])
    b = np.asarray(alone.get_samples(group_by_chain=True)["x"][0])
    assert a.dtype == np.float64
    assert np.std(a[:, 0]) > 0.1  # the chain moved: the comparison is not of constants
    # up to rounding: the batched program may fuse arithmetic differently, and warmup's
    # feedback loops amplify last-bit differences until, after ~60 iterations, an accept
    # decision flips (see test_tuned_hmc.py); hence a short run. Coupled chains differ by O(1)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def wall_model():
    x = numpyro.sample("x", dist.Normal(jnp.zeros(2), 1.0))
    numpyro.factor("wall", jnp.where(x[0] > 100.0, 0.0, -jnp.inf))


def bad_observation():
    s = numpyro.sample("s", dist.HalfNormal(jnp.ones(2)))
    numpyro.sample("y", dist.Exponential(s.sum()), obs=-1.0)


def sqrt_model():
    x = numpyro.sample("x", dist.Normal(jnp.zeros(2), 1.0))
    numpyro.factor("root", -jnp.sqrt(x[0] + 1.0))


@pytest.mark.parametrize("model, site", [(wall_model, "'wall'"), (bad_observation, "'y'")])
@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_no_valid_start_names_the_site(kernel_cls, model, site):
    """Where NumPyro says only "Cannot find valid initial parameters", the kernels raise a
    ``ValueError`` naming the site whose log density is not finite."""
    with pytest.raises(ValueError, match=f"init_strategy=init_to_uniform.*{site}"):
        _run(kernel_cls(model))


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_invalid_init_params_blame_the_init_params_and_name_the_site(kernel_cls):
    with pytest.raises(ValueError, match="given `init_params`.*'root'") as info:
        _run(kernel_cls(sqrt_model), chains=1, init_params={"x": jnp.array([-3.0, 0.0])})
    assert "init_strategy" not in str(info.value)


# -- NumPyro's mass-matrix arguments (numpyro/_mass.py) ----------------------------------

COV_A = np.array([[4.0, 3.8], [3.8, 4.0]])  # correlation 0.95
SD_B = 0.1


def correlated_pair_and_scales():
    numpyro.sample("a", dist.MultivariateNormal(jnp.zeros(2), jnp.asarray(COV_A)))
    numpyro.sample("b", dist.Normal(jnp.ones(3), SD_B))


def _scale(mcmc):
    adapt = mcmc.last_state.adapt_state
    return np.asarray(getattr(adapt, "adjusted", adapt).scale)


def _check_moments(mcmc):
    """Covariance of ``a`` and sd of ``b`` against the truth, within 6 Monte Carlo
    standard errors computed from the bulk ESS of each (squared) coordinate."""
    from numpyro.diagnostics import effective_sample_size

    s = mcmc.get_samples(group_by_chain=True)
    a, b = np.asarray(s["a"]), np.asarray(s["b"])
    for stat, truth in [(a[..., 0] ** 2, 4.0), (a[..., 1] ** 2, 4.0), (a[..., 0] * a[..., 1], 3.8)]:
        ess = effective_sample_size(stat[..., None])[0]
        assert abs(stat.mean() - truth) < 6 * stat.std() / np.sqrt(ess), (stat.mean(), truth, ess)
    dev2 = (b - 1.0) ** 2
    ess = effective_sample_size(dev2).min()
    assert np.all(np.abs(dev2.mean(axis=(0, 1)) - SD_B**2) < 6 * dev2.std(axis=(0, 1)) / np.sqrt(ess))


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_block_dense_mass_estimates_only_the_blocks(kernel_cls, jax_x64):
    """``dense_mass=[("a",)]``: ``a``'s 2x2 block is dense (its correlation is learnt),
    ``b`` stays diagonal: the Cholesky factor is zero between the blocks and inside ``b``.
    The flat layout is ``a`` (0, 1) then ``b`` (2, 3, 4): dict sites ravel in sorted order."""
    mcmc = MCMC(kernel_cls(correlated_pair_and_scales, dense_mass=[("a",)]), num_warmup=400,
                num_samples=600, num_chains=2, chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(1))
    scale = _scale(mcmc)[0]
    assert scale.shape == (5, 5)
    assert scale[1, 0] > 0.5  # the learnt correlation: L[1,0] = 0.95 * 2 for the truth
    np.testing.assert_array_equal(scale[2:, :2], 0.0)
    np.testing.assert_array_equal(scale[2:, 2:], np.diag(np.diag(scale[2:, 2:])))
    _check_moments(mcmc)


def _correlated_mvn():
    """NumPyro's ``test_correlated_mvn`` target: 5-D, a correlated covariance."""
    d = 5
    a = jnp.tril(0.5 * jnp.fliplr(jnp.eye(d)) + 0.1 * jnp.exp(random.normal(random.PRNGKey(0), (d, d))))
    cov = a @ a.T
    prec = jnp.linalg.inv(cov)
    return (lambda z: 0.5 * z @ prec @ z), np.asarray(cov)


@pytest.mark.parametrize("kernel_cls", [AdjustedESH, TunedHMC], ids=_name)
def test_unregularised_dense_mass_matrix_samples_as_nuts_does(kernel_cls, jax_x64):
    """NumPyro's ``test_correlated_mvn[False]``: ``dense_mass=True,
    regularize_mass_matrix=False`` (refused before). The metric windows then keep their raw
    sample covariance (``core.adaptation.metric_covariance``), so the adapted matrix differs
    from the regularised run's; the draws, whitened by the true covariance, have the
    standard normal's moments within their Monte Carlo error. (``ESH``'s warmup adapts its
    metric with ``AdjustedESH``'s rule, from the configuration that ``test_options.py``
    shows carries the flag.)"""
    from numpyro.diagnostics import effective_sample_size

    from moments import gaussian_moment_z

    potential, cov = _correlated_mvn()
    imm = {}
    for regularize in (True, False):
        mcmc = MCMC(kernel_cls(potential_fn=potential, dense_mass=True, regularize_mass_matrix=regularize),
                    num_warmup=500, num_samples=2000, num_chains=2, chain_method="vectorized",
                    progress_bar=False)
        mcmc.run(random.PRNGKey(0), init_params=jnp.zeros((2, 5)))
        imm[regularize] = np.asarray(mcmc.last_state.adapt_state.inverse_mass_matrix)
    assert not np.allclose(imm[False], imm[True], rtol=1e-6)
    z = np.asarray(mcmc.get_samples(group_by_chain=True), np.float64)
    white = z @ np.linalg.inv(np.linalg.cholesky(cov)).T  # N(0, I) under the target
    ess_x, ess_x2 = effective_sample_size(white), effective_sample_size(white**2)
    mean_z, second_z = gaussian_moment_z(white.reshape(-1, 5), np.ones(5), ess_x, ess_x2)
    assert np.max(np.abs(mean_z)) < 4.0 and np.max(np.abs(second_z)) < 4.0, (mean_z, second_z)


def test_adjusted_esh_fixed_num_steps_as_hmc(jax_x64):
    """NumPyro's ``test_fixed_num_steps`` for ``AdjustedESH``: ``num_steps=5`` makes every
    draw exactly 5 isokinetic steps (no jitter, no length tuning); the step size is still
    tuned and the draws, whitened, have the standard normal's moments. (TunedHMC's case is
    in ``test_tuned_hmc.py``.)"""
    from numpyro.diagnostics import effective_sample_size

    from moments import gaussian_moment_z

    potential, cov = _correlated_mvn()
    mcmc = MCMC(AdjustedESH(potential_fn=potential, num_steps=5), num_warmup=500, num_samples=2000,
                num_chains=2, chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(1), init_params=jnp.zeros((2, 5)), extra_fields=("num_steps",))
    assert np.all(np.asarray(mcmc.get_extra_fields()["num_steps"]) == 5)
    z = np.asarray(mcmc.get_samples(group_by_chain=True), np.float64)
    white = z @ np.linalg.inv(np.linalg.cholesky(cov)).T
    mean_z, second_z = gaussian_moment_z(white.reshape(-1, 5), np.ones(5), effective_sample_size(white),
                                         effective_sample_size(white**2))
    assert np.max(np.abs(mean_z)) < 4.0 and np.max(np.abs(second_z)) < 4.0, (mean_z, second_z)


def test_esh_num_steps_is_the_mean_number_of_steps_per_draw(jax_x64):
    """``ESH(num_steps=n)`` (NumPyro's ``test_fixed_num_steps`` passes it): every draw spans
    the physical time of ``n`` mean steps, not lengthened for slow statistics, so the draws
    take about ``n`` steps on average (each its own number: ESH's clock runs with the
    energy), and the draws, whitened, have the standard normal's moments (second moments
    within ESH's 3% discretisation allowance on top of 4 standard errors, as in
    ``test_numpyro_statistics.py``)."""
    from numpyro.diagnostics import effective_sample_size

    potential, cov = _correlated_mvn()
    for n in (3, 12):
        mcmc = MCMC(ESH(potential_fn=potential, num_steps=n), num_warmup=500, num_samples=2000,
                    num_chains=2, chain_method="vectorized", progress_bar=False)
        mcmc.run(random.PRNGKey(1), init_params=jnp.zeros((2, 5)), extra_fields=("num_steps",))
        steps = np.asarray(mcmc.get_extra_fields()["num_steps"], np.float64)
        assert 0.75 * n < steps.mean() < 1.35 * n, (n, steps.mean())
        assert len(np.unique(steps)) > 1
        z = np.asarray(mcmc.get_samples(group_by_chain=True), np.float64)
        white = (z @ np.linalg.inv(np.linalg.cholesky(cov)).T).reshape(-1, 5)
        se_mean = 1.0 / np.sqrt(effective_sample_size(white.reshape(2, -1, 5)))
        se_second = np.sqrt(2.0) / np.sqrt(effective_sample_size(white.reshape(2, -1, 5) ** 2))
        assert np.all(np.abs(white.mean(0)) < 4.0 * se_mean + 0.03), (n, white.mean(0))
        assert np.all(np.abs(np.mean(white**2, 0) - 1.0) < 4.0 * se_second + 0.03), (n, np.mean(white**2, 0))


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_fixed_inverse_mass_matrix_is_used_as_given(kernel_cls, jax_x64):
    """A dict ``inverse_mass_matrix`` with ``adapt_mass_matrix=False``: the preconditioner
    stays the Cholesky factor of the given blocks, and the draws are right."""
    imm = {("a",): COV_A, ("b",): np.full(3, SD_B**2)}
    mcmc = MCMC(kernel_cls(correlated_pair_and_scales, dense_mass=[("a",)], inverse_mass_matrix=imm,
                           adapt_mass_matrix=False),
                num_warmup=300, num_samples=600, num_chains=2, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(random.PRNGKey(2))
    expected = np.zeros((5, 5))
    expected[:2, :2] = np.linalg.cholesky(COV_A)
    expected[2:, 2:] = np.diag(np.full(3, SD_B))
    np.testing.assert_allclose(_scale(mcmc)[0], expected, rtol=1e-12)
    _check_moments(mcmc)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_automatic_metric_learns_a_correlation_and_keeps_independence_diagonal(kernel_cls, jax_x64):
    """The default ``dense_mass="auto"`` (``esh_math.md`` §7.6): on a target with a
    correlation of 0.95 the adapted preconditioner is dense (``L[1, 0]`` near its true
    1.9) in every chain and the moments are right; on independent coordinates it stays
    exactly diagonal."""
    mcmc = MCMC(kernel_cls(correlated_pair_and_scales), num_warmup=400, num_samples=600,
                num_chains=2, chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(1))
    scale = _scale(mcmc)
    assert scale.shape == (2, 5, 5)
    assert np.all(scale[:, 1, 0] > 0.5)
    _check_moments(mcmc)
    # NumPyro's name for the adapted metric: M^{-1} = L L^T, with a's correlation of 0.95,
    # keyed as NumPyro keys it (one key of all sites, sorted)
    imm = np.asarray(mcmc.last_state.adapt_state.inverse_mass_matrix[("a", "b")])
    np.testing.assert_allclose(imm, scale @ np.swapaxes(scale, 1, 2), rtol=1e-12)
    assert np.all(imm[:, 0, 1] / np.sqrt(imm[:, 0, 0] * imm[:, 1, 1]) > 0.8)

    def independent():
        numpyro.sample("x", dist.Normal(jnp.zeros(5), jnp.arange(1.0, 6.0)))

    _, scale = _run_with_diagonal_metric(kernel_cls(independent), 5, num_warmup=400, num_samples=5)
    assert np.all(np.diagonal(scale, axis1=1, axis2=2) > 0.5)


def _run_with_diagonal_metric(kernel, d, num_warmup, num_samples):
    """Two vectorized chains (key 1); checks that each chain's adapted preconditioner is a
    diagonal in the ``d x d`` layout of the automatic metric. Returns ``(mcmc, scale)``."""
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(1))
    scale = _scale(mcmc)
    assert scale.shape == (2, d, d)
    np.testing.assert_array_equal(scale, scale * np.eye(d))
    return mcmc, scale


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_automatic_metric_is_diagonal_for_sampling_where_the_target_bends(kernel_cls, jax_x64):
    """``esh_math.md`` §7.6, ``core.adaptation.curved``: ``x2 = 3 x1 + 0.5 x1^2 + 0.1 e``
    is correlated at 0.98, which alone makes the metric dense, but it bends: warmup's last
    window keeps the diagonal, in every chain, and the moments are right (posteriordb's
    ``gp_pois_regr``, a latent Gaussian process, bends so; under a dense metric
    AdjustedESH's chains rejected for dozens of draws in a row there, R-hat 1.09-1.23).
    The last window reads the bend from the draws the chain made: after 400 warmup
    iterations (a 200-draw last window) one AdjustedESH chain read a stretch of 2.3, after
    1000 (500 draws) the chains read 12-54 against a threshold of 5.9."""

    def bent():
        x1 = numpyro.sample("x1", dist.Normal(0.0, 1.0))
        numpyro.sample("x2", dist.Normal(3.0 * x1 + 0.5 * x1**2, 0.1))
        numpyro.sample("rest", dist.Normal(jnp.zeros(2), 1.0))

    mcmc, _ = _run_with_diagonal_metric(kernel_cls(bent), 4, num_warmup=1000, num_samples=1000)
    x2 = np.asarray(mcmc.get_samples(group_by_chain=True)["x2"])
    # E x2 = 0.5, Var x2 = 9 + 2 (0.5)^2 + 0.1^2 = 9.51; errors from the draws' own ESS
    from numpyro.diagnostics import effective_sample_size

    for f, truth in ((x2, 0.5), ((x2 - 0.5) ** 2, 9.51)):
        se = f.std() / np.sqrt(effective_sample_size(f[..., None])[0])
        assert abs(f.mean() - truth) < 5 * se + (0.05 * truth if kernel_cls is ESH else 0.0), (f.mean(), se)


def test_automatic_metric_is_diagonal_above_its_dimension_limit_or_with_a_given_matrix(jax_x64):
    """``dense_mass="auto"`` resolves to a diagonal layout above ``AUTO_DENSE_MAX_DIM``
    dimensions and where an ``inverse_mass_matrix`` is given; ``dense_mass=True`` is
    dense at any dimension."""
    from esh_kernels.core.mass_matrix import AUTO_DENSE_MAX_DIM

    d = AUTO_DENSE_MAX_DIM + 1

    def wide():
        numpyro.sample("x", dist.Normal(jnp.zeros(d), 1.0))

    for kwargs, shape in [({}, (d,)), ({"dense_mass": True}, (d, d))]:
        mcmc = MCMC(AdjustedESH(wide, **kwargs), num_warmup=3, num_samples=2, progress_bar=False)
        mcmc.run(random.PRNGKey(0))
        assert _scale(mcmc).shape == shape
    mcmc = MCMC(AdjustedESH(correlated_pair_and_scales, inverse_mass_matrix=np.ones(5)),
                num_warmup=3, num_samples=2, progress_bar=False)
    mcmc.run(random.PRNGKey(0))
    assert _scale(mcmc).shape == (5,)


@pytest.mark.parametrize("kernel_cls", [AdjustedESH, ESH, TunedHMC])
def test_automatic_metric_goes_dense_on_a_correlated_60d_posterior(jax_x64, kernel_cls):
    """Between 51 and ``AUTO_DENSE_MAX_DIM`` dimensions ``dense_mass="auto"`` learns the
    correlations (diagonal there until 2026-12-06): a 60-D Gaussian whose neighbouring
    coordinates correlate at 0.9, 800 warmup iterations, one chain. The windows' gradient
    estimate is exact on a Gaussian (``esh_math.md`` §7.6), so the adapted ``M^{-1}`` is the
    covariance."""
    d = 60
    idx = np.arange(d)
    cov = 0.9 ** np.abs(idx[:, None] - idx[None, :])

    def correlated():
        numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(d), covariance_matrix=jnp.asarray(cov)))

    mcmc = MCMC(kernel_cls(correlated), num_warmup=800, num_samples=5, progress_bar=False)
    mcmc.run(random.PRNGKey(0))
    scale = _scale(mcmc)
    assert scale.shape == (d, d)
    np.testing.assert_allclose(scale @ scale.T, cov, atol=0.02)


def test_diagonal_inverse_mass_matrix_array_starts_the_metric(jax_x64):
    mcmc = MCMC(AdjustedESH(correlated_pair_and_scales, inverse_mass_matrix=np.arange(1.0, 6.0),
                            adapt_mass_matrix=False),
                num_warmup=5, num_samples=5, progress_bar=False)
    mcmc.run(random.PRNGKey(0))
    np.testing.assert_allclose(_scale(mcmc), np.sqrt(np.arange(1.0, 6.0)), rtol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dense_mass=[("a", "nope")]), "unknown latent site.*'nope'"),
    (dict(dense_mass="a"), "dense_mass"),
    (dict(inverse_mass_matrix=np.ones(4)), r"shape \(5,\) or \(5, 5\)"),
    (dict(inverse_mass_matrix=np.eye(5) + 0.1), "needs `dense_mass=True`"),
    (dict(inverse_mass_matrix=-np.ones(5)), "positive diagonal"),
    (dict(dense_mass=True, inverse_mass_matrix=np.ones((5, 5)) * 2.0), "positive definite"),
])
def test_mass_matrix_argument_errors_name_the_problem(kwargs, message, jax_x64):
    with pytest.raises(ValueError, match=message):
        _run(TunedHMC(correlated_pair_and_scales, **kwargs), chains=1)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_numpyro_field_names_in_extra_fields(kernel_cls):
    """NumPyro users collect ``num_steps`` and ``adapt_state.inverse_mass_matrix`` (names of
    ``HMCState`` / ``HMCAdaptState``; ``core/state_fields.py``): they read our ``n_steps``
    and ``L L^T``. An unknown field is a ``KeyError`` that names it (before: ``TypeError:
    tuple indices must be integers or slices, not str``)."""

    def model():
        numpyro.sample("x", dist.Normal(jnp.zeros(3), jnp.array([0.5, 1.0, 2.0])))

    mcmc = MCMC(kernel_cls(model), num_warmup=150, num_samples=10, progress_bar=False)
    mcmc.run(random.PRNGKey(0), extra_fields=("num_steps", "n_steps", "adapt_state.inverse_mass_matrix"))
    fields = mcmc.get_extra_fields()
    np.testing.assert_array_equal(fields["num_steps"], fields["n_steps"])
    assert np.all(np.asarray(fields["num_steps"]) >= 1)
    imm = np.asarray(fields["adapt_state.inverse_mass_matrix"][("x",)])
    assert imm.shape == (10, 3, 3)  # dense layout of dense_mass="auto" below 50 dimensions
    scale = _scale(mcmc)
    np.testing.assert_allclose(imm[-1], scale @ scale.T, rtol=1e-6)
    with pytest.raises(KeyError, match="has no field 'nmu_steps'.*num_steps"):
        mcmc.run(random.PRNGKey(0), extra_fields=("nmu_steps",))


_MASS_FIELDS = ("inverse_mass_matrix", "mass_matrix_sqrt", "mass_matrix_sqrt_inv")


def _mass_fields(mcmc):
    adapt = mcmc.last_state.adapt_state
    return {name: getattr(adapt, name) for name in _MASS_FIELDS}


def _assert_same_blocks(ours, nuts):
    """Same keys (NumPyro's site tuples) or both arrays, and the same values."""
    if isinstance(nuts, dict):
        assert isinstance(ours, dict) and set(ours) == set(nuts)
        for key in nuts:
            np.testing.assert_allclose(np.asarray(ours[key]), np.asarray(nuts[key]), rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(np.asarray(ours), np.asarray(nuts), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dense_mass, inverse_mass_matrix", [
    ([("a",)], {("a",): COV_A, ("b",): np.full(3, SD_B**2)}),
    # one dense block with its sites out of name order (b's 3 coordinates, then a's 2)
    ([("b", "a")], {("b", "a"): np.diag([1.0, 2.0, 3.0, 4.0, 4.0]) + np.diag([0.0, 0.0, 0.0, 3.8], 1)
                    + np.diag([0.0, 0.0, 0.0, 3.8], -1) + 0.3 * np.eye(5)[[3, 1, 2, 0, 4]]}),
    (False, {("b",): np.array([1.0, 2.0, 3.0])}),
    (False, np.arange(1.0, 6.0)),
    (True, None),
], ids=["blocks+dict", "reordered-block", "diagonal+dict", "diagonal+array", "dense"])
@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_mass_matrix_fields_read_as_nuts_reports_them(kernel_cls, dense_mass, inverse_mass_matrix, jax_x64):
    """``adapt_state.inverse_mass_matrix``, ``mass_matrix_sqrt`` and ``mass_matrix_sqrt_inv``
    (NumPyro's ``HMCAdaptState`` fields; ``core/state_fields.py``) for a fixed metric: the
    keys (tuples of site names, as NumPyro's ``test_structured_mass`` and
    ``test_dense_mass`` index them) and the values that ``NUTS`` reports for the same
    ``dense_mass`` / ``inverse_mass_matrix``. Before: one array, and no square roots."""
    kwargs = dict(dense_mass=dense_mass, inverse_mass_matrix=inverse_mass_matrix, adapt_mass_matrix=False)
    fields = {}
    for cls in (NUTS, kernel_cls):
        mcmc = MCMC(cls(correlated_pair_and_scales, **kwargs), num_warmup=2, num_samples=2,
                    progress_bar=False)
        mcmc.run(random.PRNGKey(0))
        fields[cls] = _mass_fields(mcmc)
    for name in _MASS_FIELDS:
        _assert_same_blocks(fields[kernel_cls][name], fields[NUTS][name])
    # what NumPyro's test_dense_mass reads: (R R^T)^{-1} = M^{-1}
    for key, root in fields[kernel_cls]["mass_matrix_sqrt"].items():
        root = np.asarray(root)
        mass = root @ root.T if root.ndim == 2 else root**2
        imm = np.asarray(fields[kernel_cls]["inverse_mass_matrix"][key])
        np.testing.assert_allclose(np.linalg.inv(mass) if root.ndim == 2 else 1.0 / mass, imm, rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_mass_matrix_fields_of_a_potential_fn_are_arrays_as_nuts_reports_them(kernel_cls, jax_x64):
    """With a ``potential_fn`` (no site names) NumPyro's fields are arrays; so are ours,
    adapted per chain in a vectorized run, with the adapted metric's values."""
    def potential(x):
        return 0.5 * jnp.sum((x / jnp.array([1.0, 2.0, 3.0])) ** 2)

    imm = np.array([1.0, 4.0, 9.0])
    fields = {}
    for cls in (NUTS, kernel_cls):
        mcmc = MCMC(cls(potential_fn=potential, inverse_mass_matrix=imm, adapt_mass_matrix=False),
                    num_warmup=2, num_samples=2, progress_bar=False)
        mcmc.run(random.PRNGKey(0), init_params=jnp.zeros(3))
        fields[cls] = _mass_fields(mcmc)
    for name in _MASS_FIELDS:
        _assert_same_blocks(fields[kernel_cls][name], fields[NUTS][name])
    mcmc = MCMC(kernel_cls(potential_fn=potential), num_warmup=150, num_samples=2, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(0), init_params=jnp.zeros((2, 3)))
    adapt = mcmc.last_state.adapt_state
    imm = np.asarray(adapt.inverse_mass_matrix)
    root_inv = np.asarray(adapt.mass_matrix_sqrt_inv)
    assert imm.shape[:2] == (2, 3)  # per chain
    np.testing.assert_allclose(root_inv @ np.swapaxes(root_inv, 1, 2) if imm.ndim == 3 else root_inv**2,
                               imm if imm.ndim == 2 else np.swapaxes(root_inv, 1, 2) @ root_inv, rtol=1e-10)


@pytest.mark.parametrize("kernel_cls", [AdjustedESH, TunedHMC], ids=_name)
@pytest.mark.parametrize("chains", [1, 2])
def test_z_grad_is_the_potential_gradient_at_the_draw(kernel_cls, chains, jax_x64):
    """``HMCState.z_grad`` (NumPyro's name): the gradient of the potential energy at ``z``,
    shaped like ``z`` (a dict of sites), per chain in a vectorized run, also collected as
    an extra field; against a direct computation at ``last_state.z``."""
    import jax
    from numpyro.infer.util import potential_energy

    def grad_at(z):
        return jax.grad(lambda p: potential_energy(correlated_pair_and_scales, (), {}, p))(z)

    mcmc = MCMC(kernel_cls(correlated_pair_and_scales), num_warmup=30, num_samples=5,
                num_chains=chains, chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(1), extra_fields=("z_grad",))
    state = mcmc.last_state
    z = state.z if chains > 1 else jax.tree.map(lambda a: a[None], state.z)
    got = state.z_grad if chains > 1 else jax.tree.map(lambda a: a[None], state.z_grad)
    assert set(got) == {"a", "b"}
    for c in range(chains):
        expected = grad_at({k: v[c] for k, v in z.items()})
        for name in ("a", "b"):
            np.testing.assert_allclose(np.asarray(got[name][c]), np.asarray(expected[name]), rtol=1e-10)
    collected = mcmc.get_extra_fields(group_by_chain=True)["z_grad"]
    np.testing.assert_allclose(np.asarray(collected["b"][:, -1]), np.asarray(got["b"]), rtol=1e-12)


def test_esh_z_grad_error_says_why():
    """ESH's draw is a reservoir pick inside the trajectory, with no cached gradient: asking
    for ``z_grad`` (directly or as an extra field) is an error that says so, not a generic
    'no field'."""
    mcmc = MCMC(ESH(_two_d), num_warmup=5, num_samples=2, progress_bar=False)
    mcmc.run(random.PRNGKey(0))
    with pytest.raises(AttributeError, match="ESHState has no z_grad: ESH's draw is a point picked"):
        mcmc.last_state.z_grad
    with pytest.raises(AttributeError, match="gradient is not kept"):
        mcmc.run(random.PRNGKey(0), extra_fields=("z_grad",))


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_mcmc_inside_jit_with_traced_arguments(kernel_cls):
    """NumPyro's ``test_chain_inside_jit``: the kernel is built and run inside ``jax.jit``,
    with a traced step size (constructor checks let tracers through). Its 20 warmup
    iterations also check a short warmup: Stan's schedule ends its one metric window two
    iterations before the end, and a dual-averaging restart there left AdjustedESH at 7x
    the right step with every draw rejected (``core.warmup.MIN_ITERATIONS_AFTER_RESTART``)."""
    import jax

    @jax.jit
    def draws(key, step_size):
        mcmc = MCMC(kernel_cls(_two_d, step_size=step_size), num_warmup=20, num_samples=300,
                    progress_bar=False)
        mcmc.run(key)
        return mcmc.get_samples()["x"]

    x = np.asarray(draws(random.PRNGKey(0), 0.5))
    assert x.shape == (300, 2) and np.all(np.isfinite(x))
    assert np.std(x[:, 1]) > 1.0  # the chain moves (the sd of x[1] is 3)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_reused_kernel_gives_the_same_post_warmup_state(kernel_cls):
    """NumPyro's ``test_mcmc_progbar`` compares ``post_warmup_state`` of two MCMC runs of
    one kernel: nothing in the state may depend on how often the kernel was used."""
    import jax

    kernel = kernel_cls(_two_d)
    states = []
    for _ in range(2):
        mcmc = MCMC(kernel, num_warmup=10, num_samples=10, progress_bar=False)
        mcmc.warmup(random.PRNGKey(2))
        states.append(mcmc.post_warmup_state)
    for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# -- chain_method="parallel" on several devices (pmap) -------------------------------------

def test_parallel_chains_on_two_devices_equal_sequential_chains(jax_x64):
    """``chain_method="parallel"`` (pmap, one chain per device, over 2 of the workers' CPU
    devices, ``conftest.py``) gives each chain the draws it gets run alone in sequence, to
    float64 rounding (the same per-chain program on another device; under the suite's
    fast-compilation flags the two programs round differently, up to 1.4e-11 after 40
    draws, seen 2026-12-05). ESH, whose draw has the most
    state; AdjustedESH and TunedHMC share the pmap path (``numpyro/_base.py``) and gave
    identical draws on 4 devices when checked by hand (2026-12-03)."""
    import jax

    assert jax.local_device_count() >= 2, jax.devices()

    def model():
        numpyro.sample("x", dist.Normal(jax_x64.zeros(3), jax_x64.array([1.0, 2.0, 3.0])))

    draws = {}
    for method in ("parallel", "sequential"):
        mcmc = MCMC(ESH(model), num_warmup=30, num_samples=10, num_chains=2, chain_method=method,
                    progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0))
        assert mcmc.chain_method == method  # no silent fallback to sequential
        draws[method] = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    assert draws["parallel"].shape == (2, 10, 3)
    np.testing.assert_allclose(draws["parallel"], draws["sequential"], rtol=1e-9, atol=1e-10)


def _final_step_size(kernel, num_warmup=200):
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=5, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(4))
    return np.asarray(mcmc.last_state.adapt_state.step_size)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_given_step_size_is_where_warmup_starts_as_for_nuts(kernel_cls):
    """``NUTS(model, step_size=...)`` adapts from the given value; a script that swaps the
    kernel must not get a silently fixed step size. ``adapt_step_size=False`` (NumPyro's
    argument) fixes it, and asks for the value it fixes."""
    start = 1e-3
    tuned = _final_step_size(kernel_cls(_two_d, step_size=start))
    default = _final_step_size(kernel_cls(_two_d))
    # warmup left the poor start behind and landed where it lands without one
    assert np.all(tuned > 50 * start) and np.all(np.abs(np.log(tuned / default)) < np.log(3.0)), (tuned, default)
    fixed = _final_step_size(kernel_cls(_two_d, step_size=0.25, adapt_step_size=False))
    np.testing.assert_allclose(fixed, 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="adapt_step_size=False.*step_size"):
        kernel_cls(_two_d, adapt_step_size=False)


@pytest.mark.parametrize("kernel_cls", [AdjustedESH, ESH], ids=["AdjustedESH", "ESH"])
def test_one_dimensional_model_rejects_every_transition_at_a_huge_fixed_step(kernel_cls):
    """NumPyro's ``test_diverging`` (its ``adapt_step_size=False`` case): a 1-D posterior of
    sd 0.03 and a fixed step of 10. Every transition, warmup included, must be flagged and
    rejected, as with ``NUTS``, and the self-check names the step size as too large.

    With the auxiliary coordinate started at exactly 0 (its gradient exactly 0) the
    saturated velocity update met the gradient exactly head-on after a turn, and
    ``AdjustedESH`` accepted jumps up by 44 000 in energy (326 of 2000 flagged). ``ESH``'s
    warmup phase 1 tuned its own step size even so (253 of its 1000 warmup draws flagged),
    and the frozen chain was put down to a step size "far too small"."""
    data = random.normal(random.PRNGKey(0), (1000,))

    def model(data):
        loc = numpyro.sample("loc", dist.Normal(0.0, 1.0))
        numpyro.sample("obs", dist.Normal(loc, 1), obs=data)

    kernel = kernel_cls(model, step_size=10.0, adapt_step_size=False, adapt_mass_matrix=False)
    mcmc = MCMC(kernel, num_warmup=200, num_samples=200, progress_bar=False)
    fields = ("diverging", "potential_energy") + (("accept_prob",) if kernel_cls is AdjustedESH else ())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.warmup(random.PRNGKey(1), data, extra_fields=fields, collect_warmup=True)
        warm = mcmc.get_extra_fields()
        mcmc.run(mcmc.post_warmup_state.rng_key, data, extra_fields=fields)
    extra = {k: np.concatenate([np.asarray(warm[k]), np.asarray(v)])
             for k, v in mcmc.get_extra_fields().items()}
    assert extra["diverging"].shape == (400,) and np.all(extra["diverging"]), int(np.sum(extra["diverging"]))
    if kernel_cls is AdjustedESH:
        assert np.all(extra["accept_prob"] < 1e-6)
    assert np.ptp(extra["potential_energy"][1:]) == 0.0  # never moved after its first draw
    frozen = [str(w.message) for w in caught if "is frozen" in str(w.message)]
    assert frozen and all("too large" in m and "adapt_step_size" in m for m in frozen), frozen
