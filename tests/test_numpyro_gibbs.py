"""The NumPyro kernels as blocks of ``numpyro.infer.Gibbs`` (NumPyro >= 0.22), the way NumPyro's
own ``test/infer/test_gibbs.py`` uses ``NUTS``: ``refresh`` after another block moved, ``wrap_model``
to condition the block, the constrained start Gibbs gives a block that is not NumPyro's ``HMC``, and
the joint law of a sweep against the exact posterior (``docs/numpyro.md``, "Gibbs blocks";
``docs/esh_math.md`` §4.6).

The statistical checks use the tolerance of ``test_numpyro_statistics.py``: ``N_SE = 5`` Monte
Carlo standard errors from the ESS, plus ESH's documented allowance for its discretisation bias
(3% relative on second moments, 3% of a standard deviation on means).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS, CustomGibbs, DiscreteGibbs, Gibbs
from numpyro.infer.gibbs import GIBBS_SITES_KWARG, discrete_latent_sites, with_conditioning

from esh_kernels.numpyro import ESH, AdjustedESH, TunedHMC

KERNELS = [ESH, AdjustedESH, TunedHMC]
N_SE = 5.0
ESH_BIAS = 0.03

#: ``x`` (1-D) and ``y`` (3-D), priors N(0, 2^2), observations ``1 ~ N(x + y_i, 1)``
DIM_Y = 3


def _name(k):
    return k.__name__


def xy_model():
    x = numpyro.sample("x", dist.Normal(0.0, 2.0))
    y = numpyro.sample("y", dist.Normal(0.0, 2.0).expand([DIM_Y]))
    numpyro.sample("obs", dist.Normal(x + y, 1.0), obs=jnp.ones(DIM_Y))


def x_given_y(rng_key, gibbs_sites, hmc_sites):
    """The exact conditional of ``x``: precision 1/4 + 3, mean sum(1 - y) / precision."""
    precision = 0.25 + DIM_Y
    mean = jnp.sum(1.0 - hmc_sites["y"]) / precision
    return {"x": mean + random.normal(rng_key) / jnp.sqrt(precision)}


def xy_posterior():
    """Exact mean and covariance of ``(x, y_0, ..., y_{d-1})``."""
    precision = np.eye(DIM_Y + 1) / 4.0
    precision[0, 0] += DIM_Y
    precision[1:, 1:] += np.eye(DIM_Y)
    precision[0, 1:] += 1.0
    precision[1:, 0] += 1.0
    cov = np.linalg.inv(precision)
    return cov @ np.r_[float(DIM_Y), np.ones(DIM_Y)], cov


def _estimate(f):
    """Mean of ``f`` (chains, draws) and its Monte Carlo standard error from the ESS."""
    f = np.asarray(f, dtype=np.float64)
    ess = float(effective_sample_size(f[..., None])[0])
    assert ess > 100, f"effective sample size too small for a test: {ess}"
    return f.mean(), f.std() / np.sqrt(ess)


@pytest.mark.parametrize("kernel_cls", [ESH, AdjustedESH], ids=_name)
def test_gibbs_sweep_with_our_block_samples_the_joint_posterior(kernel_cls):
    """``x`` by its exact conditional, ``y`` by our kernel: the means, variances and the
    covariance of ``x`` with each ``y_i`` match the exact joint posterior (correlation -0.70).
    The cross moments are what a block that does not restart where Gibbs conditioned the other
    block gets wrong: ESH continuing its trajectory across sweeps read -0.59 (the ESH docstring
    of ``_refresh_chain``). ``TunedHMC`` shares ``AdjustedESH``'s ``refresh``."""
    kernel = Gibbs([(CustomGibbs(x_given_y), ["x"]), (kernel_cls(xy_model), None)])
    mcmc = MCMC(kernel, num_warmup=400, num_samples=1500, num_chains=4, chain_method=jax.vmap,
                progress_bar=False)
    mcmc.run(random.PRNGKey(0))
    draws = mcmc.get_samples(group_by_chain=True)
    joint = np.concatenate([np.asarray(draws["x"])[..., None], np.asarray(draws["y"])], axis=-1)
    mean, cov = xy_posterior()
    bias = ESH_BIAS if kernel_cls is ESH else 0.0
    for i in range(DIM_Y + 1):
        m, se = _estimate(joint[..., i])
        assert abs(m - mean[i]) < N_SE * se + bias * np.sqrt(cov[i, i]), (i, m, mean[i], se)
        for j in range(i + 1):
            c, se = _estimate((joint[..., i] - mean[i]) * (joint[..., j] - mean[j]))
            assert abs(c - cov[i, j]) < N_SE * se + bias * abs(cov[i, j]), (i, j, c, cov[i, j], se)


def mixture_model(probs, locs):
    c = numpyro.sample("c", dist.Categorical(probs))
    numpyro.sample("x", dist.Normal(locs[c], 1.0))


@pytest.mark.parametrize("kernel_cls", [ESH, AdjustedESH], ids=_name)
def test_discrete_latent_site_by_discrete_gibbs_and_the_rest_by_our_kernel(kernel_cls):
    """NumPyro's ``test_discrete_gibbs_gmm_1d`` with our kernel in place of ``NUTS`` (its
    components closer, so that 2 x 1500 sweeps mix): the discrete component by
    ``DiscreteGibbs``, the 1-D position by our kernel (an auxiliary coordinate for the
    isokinetic kernels). Against the mixture's exact mean and variance and E[c]. ``TunedHMC``
    shares ``AdjustedESH``'s ``refresh``."""
    probs = np.array([0.15, 0.3, 0.3, 0.25])
    locs = np.array([-1.0, 0.0, 1.0, 2.0])
    kernel = Gibbs([(DiscreteGibbs(mixture_model), discrete_latent_sites),
                    (kernel_cls(mixture_model), None)])
    mcmc = MCMC(kernel, num_warmup=300, num_samples=1500, num_chains=2, chain_method=jax.vmap,
                progress_bar=False)
    mcmc.run(random.PRNGKey(1), jnp.asarray(probs), jnp.asarray(locs))
    draws = mcmc.get_samples(group_by_chain=True)
    x, c = np.asarray(draws["x"]), np.asarray(draws["c"], dtype=np.float64)
    mean = probs @ locs
    var = probs @ (1.0 + locs**2) - mean**2
    bias = ESH_BIAS if kernel_cls is ESH else 0.0
    m, se = _estimate(x)
    assert abs(m - mean) < N_SE * se + bias * np.sqrt(var), (m, mean, se)
    v, se = _estimate((x - mean) ** 2)
    assert abs(v - var) < N_SE * se + bias * var, (v, var, se)
    m, se = _estimate(c)
    assert abs(m - probs @ np.arange(4.0)) < N_SE * se, (m, se)


def _gibbs_block(kernel_cls, init_params=None):
    """A two-block Gibbs kernel initialised on ``xy_model`` and its block of ours."""
    gibbs = Gibbs([(CustomGibbs(x_given_y), ["x"]), (kernel_cls(xy_model), None)])
    state = gibbs.init(random.PRNGKey(0), 10, init_params, (), {})
    return gibbs, state, gibbs.blocks[1][0]


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_refresh_recomputes_the_cached_potential_under_the_new_conditioning(kernel_cls):
    gibbs, state, block = _gibbs_block(kernel_cls)
    ours = state.block_states[1]
    kwargs = with_conditioning({}, {"x": jnp.array(3.0)})
    refreshed = block.refresh(ours, (), kwargs)
    # the chain stays at its draw; energy and gradient are those of the new conditional
    x = refreshed.integrator.x
    np.testing.assert_array_equal(np.asarray(x), np.asarray(ravel_pytree(ours.z)[0]))
    energy, grad = jax.value_and_grad(lambda v: block._flat_value_and_grad((), kwargs)(v)[0])(x)
    np.testing.assert_allclose(refreshed.potential_energy, energy, rtol=1e-5)
    np.testing.assert_allclose(refreshed.integrator.grad, grad, rtol=1e-5)
    old = block._flat_value_and_grad((), with_conditioning({}, {"x": state.z["x"]}))(x)[0]
    assert abs(float(old) - float(energy)) > 1.0
    # a gated refresh under jit keeps the state's structure (Gibbs wraps it in ``cond``)
    gated = jax.jit(lambda flag, s: jax.lax.cond(flag, lambda t: block.refresh(t, (), kwargs),
                                                 lambda t: t, s))
    np.testing.assert_allclose(gated(True, ours).potential_energy, energy, rtol=1e-5)


def test_esh_refresh_puts_the_chain_back_at_its_draw():
    """After sampling draws the trajectory has run on past the draw ``z``; ``refresh`` puts
    the chain back at ``z`` with no physical time pending (§4.6)."""
    gibbs = Gibbs([(CustomGibbs(x_given_y), ["x"]), (ESH(xy_model), None)])
    mcmc = MCMC(gibbs, num_warmup=10, num_samples=20, progress_bar=False)
    mcmc.run(random.PRNGKey(0))
    state, block = mcmc.last_state, mcmc.sampler.blocks[1][0]
    ours = state.block_states[1]
    flat_z = ravel_pytree(ours.z)[0]
    assert float(jnp.max(jnp.abs(ours.integrator.x - flat_z))) > 1e-3  # the trajectory ran on
    refreshed = block.refresh(ours, (), with_conditioning({}, {"x": state.z["x"]}))
    np.testing.assert_array_equal(np.asarray(refreshed.integrator.x), np.asarray(flat_z))
    np.testing.assert_array_equal(np.asarray(refreshed.x_prev), np.asarray(flat_z))
    assert float(refreshed.time_prev) == float(refreshed.time_cur) == 0.0


def scalar_model():
    x = numpyro.sample("x", dist.Normal(0.0, 2.0))
    y = numpyro.sample("y", dist.Normal(0.0, 2.0))
    numpyro.sample("obs", dist.Normal(x + y, 1.0), obs=jnp.array([1.0]))


def y_given_x(rng_key, gibbs_sites, hmc_sites):
    return {"x": 0.8 * (1.0 - hmc_sites["y"]) + jnp.sqrt(0.8) * random.normal(rng_key)}


@pytest.mark.parametrize("model, at_draw", [(xy_model, 1.0), (scalar_model, 1.0), (scalar_model, 0.0)],
                         ids=["3-D", "1-D refreshed", "1-D run on"])
def test_esh_restart_reuses_the_refreshed_gradient(model, at_draw):
    """An ESH draw of a Gibbs block restarts at its draw with fresh auxiliary coordinates
    (``_restart_at_draw``). After a ``refresh`` the chain is at the draw already, and the
    restart reuses its energy and gradient (the auxiliary part closed-form) instead of
    evaluating them again: the same numbers as an evaluation, at no gradient (``at_draw`` 1,
    then ``refresh``); a chain whose trajectory ran on past the draw costs one (``at_draw``
    0)."""
    site = {"x": jnp.array(0.25)}
    gibbs = Gibbs([(CustomGibbs(x_given_y if model is xy_model else y_given_x), ["x"]),
                   (ESH(model), None)])
    state = gibbs.init(random.PRNGKey(0), 10, None, (), {})
    block, ours = gibbs.blocks[1][0], state.block_states[1]
    kwargs = with_conditioning({}, site)
    value_and_grad = block._flat_value_and_grad((), kwargs)
    away = ours.integrator.x + 1.0 - at_draw  # 1 away: a trajectory that ran on past the draw
    energy, grad = value_and_grad(away)
    ours = ours._replace(integrator=ours.integrator._replace(x=away, energy=energy, grad=grad))
    if at_draw:
        ours = block.refresh(ours, (), kwargs)
    restarted, cost = block._restart_at_draw(ours, value_and_grad)
    assert int(cost) == (0 if at_draw else 1)
    x = restarted.integrator.x
    np.testing.assert_array_equal(np.asarray(x[: block._data_dim]), np.asarray(ravel_pytree(ours.z)[0]))
    energy, grad = value_and_grad(x)
    np.testing.assert_allclose(restarted.integrator.energy, energy, rtol=1e-6)
    np.testing.assert_allclose(restarted.integrator.grad, grad, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(restarted.potential_energy, block._model_energy(x, energy), rtol=1e-6)


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_refresh_under_the_same_conditioning_keeps_the_cached_potential(kernel_cls):
    """NumPyro's ``test_init_params_and_gated_refresh``: a 1-D block (the isokinetic kernels
    add an auxiliary coordinate, which ``refresh`` keeps) refreshed under its own
    conditioning reads the potential it cached at ``init``, twice over."""
    gibbs = Gibbs([(CustomGibbs(y_given_x), ["x"]), (kernel_cls(scalar_model), None)])
    state = gibbs.init(random.PRNGKey(0), 10, {"x": jnp.array(0.25), "y": jnp.array(-0.75)}, (), {})
    block, ours = gibbs.blocks[1][0], state.block_states[1]
    kwargs = with_conditioning({}, {"x": state.z["x"]})
    once = block.refresh(ours, (), kwargs)
    twice = block.refresh(once, (), kwargs)
    np.testing.assert_allclose(once.potential_energy, ours.potential_energy, rtol=1e-6)
    np.testing.assert_allclose(twice.potential_energy, ours.potential_energy, rtol=1e-6)


def test_esh_as_a_gibbs_block_starts_every_draw_at_the_last_one():
    """Also when Gibbs calls no ``refresh`` (the other block did not move): a trajectory that
    ran on past the draw is not continued (§4.6: continuing it then biased a mixture's
    variance by -4% to -6%). A short draw (physical time 0.01) from a trajectory left 3 away
    from the draw lands next to the draw."""
    gibbs = Gibbs([(CustomGibbs(x_given_y), ["x"]),
                   (ESH(xy_model, step_size=0.05, trajectory_length=0.01), None)])
    state = gibbs.init(random.PRNGKey(0), 0, None, (), {})
    block, ours = gibbs.blocks[1][0], state.block_states[1]
    kwargs = with_conditioning({}, {"x": state.z["x"]})
    away = ours.integrator.x + 3.0
    energy, grad = block._flat_value_and_grad((), kwargs)(away)
    ours = ours._replace(integrator=ours.integrator._replace(x=away, energy=energy, grad=grad))
    new = block.sample(ours, (), kwargs)
    draw, last = ravel_pytree(new.z)[0], ravel_pytree(ours.z)[0]
    assert float(jnp.max(jnp.abs(draw - last))) < 0.3
    assert float(jnp.min(jnp.abs(draw - away))) > 2.0


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_wrap_model_returns_a_copy_bound_to_the_wrapped_model(kernel_cls):
    kernel = kernel_cls(xy_model)
    kernel.init(random.PRNGKey(0), 5, None, (), {})
    calls = []

    def wrapper(model):
        def wrapped(*args, **kwargs):
            calls.append(1)
            return model(*args, **kwargs)
        return wrapped

    copy = kernel.wrap_model(wrapper)
    assert copy is not kernel and copy.model is not kernel.model
    for attr in ("_sample_fn", "_potential_fn_gen", "_postprocess_fn"):
        assert getattr(copy, attr) is None and getattr(kernel, attr) is not None
    assert copy.self_check_findings is not kernel.self_check_findings
    copy.init(random.PRNGKey(0), 5, None, (), {})
    assert calls
    with pytest.raises(ValueError, match="potential function"):
        kernel_cls(potential_fn=lambda z: jnp.sum(z ** 2)).wrap_model(wrapper)


def test_constrain_and_potential_functions_as_numpyro_hmc_gives_them():
    """NumPyro's ``test_hmc_get_constrain_fn`` and the potential of ``test_kernel_hooks``:
    an error before ``init``; after it, the transforms alone (no deterministic site) unless
    ``return_deterministic``; ``get_potential_fn`` is NumPyro's potential of the model."""
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        numpyro.deterministic("x2", x**2)
        numpyro.sample("obs", dist.Normal(x, s), obs=jnp.array([0.3, -0.2]))

    for kernel_cls in KERNELS:
        kernel = kernel_cls(model)
        with pytest.raises(RuntimeError, match="init"):
            kernel.get_constrain_fn((), {})
        with pytest.raises(RuntimeError, match="init"):
            kernel.get_potential_fn((), {})
        state = kernel.init(random.PRNGKey(0), 10, None, (), {})
        plain = kernel.get_constrain_fn((), {})(state.z)
        replay = kernel.get_constrain_fn((), {}, return_deterministic=True)(state.z)
        assert set(plain) == {"x", "s"} and set(replay) == {"x", "s", "x2"}
        np.testing.assert_allclose(float(plain["s"]), float(jnp.exp(state.z["s"])), rtol=1e-6)
        nuts = NUTS(model)
        nuts.init(random.PRNGKey(0), 10, None, (), {})
        np.testing.assert_allclose(float(kernel.get_potential_fn((), {})(state.z)),
                                   float(nuts.get_potential_fn((), {})(state.z)), rtol=1e-6)


def positive_model():
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    numpyro.sample("obs", dist.Normal(x, s), obs=jnp.array([0.3, -0.2]))


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_gibbs_start_values_are_constrained_and_the_block_starts_there(kernel_cls):
    """Gibbs gives a block that is not NumPyro's ``HMC`` the constrained values of its sites
    (``numpyro.infer.Gibbs``'s docstring): ``s = 2`` starts the chain at ``log 2``."""
    def x_draw(rng_key, gibbs_sites, hmc_sites):
        return {"x": random.normal(rng_key)}

    gibbs = Gibbs([(CustomGibbs(x_draw), ["x"]), (kernel_cls(positive_model), None)])
    state = gibbs.init(random.PRNGKey(0), 10, {"x": jnp.array(0.5), "s": jnp.array(2.0)}, (), {})
    np.testing.assert_allclose(float(state.block_states[1].z["s"]), np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(float(state.z["s"]), np.log(2.0), rtol=1e-6)
    # conditioning values reach the siblings constrained, by the transforms alone
    block = gibbs.blocks[1][0]
    constrain = block.get_constrain_fn((), {GIBBS_SITES_KWARG: {"x": jnp.array(0.5)}})
    np.testing.assert_allclose(float(constrain(state.block_states[1].z)["s"]), 2.0, rtol=1e-6)


def dynamic_support_model():
    lb = numpyro.sample("lb", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Uniform(lb, lb + 1.0))


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_a_block_whose_support_moves_with_another_block_is_refused(kernel_cls):
    """As Gibbs refuses it for ``NUTS`` (its own check runs only for NumPyro's ``HMC``)."""
    gibbs = Gibbs([(kernel_cls(dynamic_support_model), ["y"]), (NUTS(dynamic_support_model), None)])
    with pytest.raises(ValueError, match="value-dependent supports"):
        gibbs.init(random.PRNGKey(0), 10, None, (), {})


def discrete_model():
    c = numpyro.sample("c", dist.Bernoulli(0.3))
    numpyro.sample("x", dist.Normal(c, 1.0))


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_a_discrete_site_left_to_our_block_is_refused_with_the_remedy(kernel_cls):
    """As Gibbs refuses it for ``NUTS``: NumPyro would sum the site out of our block's
    potential, and Gibbs would find no draw of it."""
    with pytest.raises(ValueError, match="Discrete latent sites .*DiscreteGibbs"):
        Gibbs([(kernel_cls(discrete_model), None)]).init(random.PRNGKey(0), 10, None, (), {})


def enumerated_model():
    numpyro.sample("b", dist.Bernoulli(0.7), infer={"enumerate": "parallel"})
    y = numpyro.sample("y", dist.Binomial(10, 0.3))
    z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    numpyro.sample("obs", dist.Normal(z + y, 1.0), obs=jnp.array(3.0))


@pytest.mark.parametrize("kernel_cls", KERNELS, ids=_name)
def test_a_site_enumerated_out_of_our_block_does_not_stop_its_start(kernel_cls):
    """NumPyro's ``test_discrete_gibbs_enum`` set-up: the start values reach our block
    without a model trace (which would try to draw the enumerated site without a key)."""
    gibbs = Gibbs([(DiscreteGibbs(enumerated_model), discrete_latent_sites),
                   (kernel_cls(enumerated_model), None)])
    state = gibbs.init(random.PRNGKey(0), 10, None, (), {})
    assert set(state.z) == {"y", "z"}
    assert np.isfinite(float(state.block_states[1].potential_energy))

