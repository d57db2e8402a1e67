"""Drop-in parity with NumPyro's NUTS for the ``esh_kernels.numpyro`` kernels: models
without continuous latent sites, independent chains, and the start-up error for a
non-finite density (it names the sites). Each case is one that NumPyro's own MCMC tests run
with ``NUTS``; the expected behaviour is what ``NUTS`` does.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax import random
from numpyro.infer import MCMC, NUTS

from esh_kernels.numpyro import ESH, AdjustedESH, TunedHMC

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
def test_one_dimensional_model_error_names_the_problem(kernel_cls):
    def one_d():
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="singular in one dimension.*TunedHMC"):
        _run(kernel_cls(one_d))


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
