"""``earn_height.stan``: earnings regressed on height on the raw scale, flat priors.

``earn ~ normal(beta[1] + beta[2] * height, sigma)``, ``beta`` and ``sigma > 0`` with
Stan's implicit improper uniform priors (``ImproperUniform`` here: it adds nothing to the
log density, as Stan's omitted priors do). The raw-scale design makes ``beta[1]`` and
``beta[2]`` correlated at about -0.998.
"""

import numpy as np


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    earn = jnp.asarray(data["earn"], dtype=jnp.float64)
    height = jnp.asarray(data["height"], dtype=jnp.float64)

    def model():
        beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
        sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        numpyro.sample("earn", dist.Normal(beta[0] + beta[1] * height, sigma).to_event(1), obs=earn)

    return model


def pyro_model(data):
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.distributions import constraints

    earn = torch.as_tensor(np.asarray(data["earn"], dtype=np.float64))
    height = torch.as_tensor(np.asarray(data["height"], dtype=np.float64))

    def model():
        beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
        sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        pyro.sample("earn", dist.Normal(beta[0] + beta[1] * height, sigma).to_event(1), obs=earn)

    return model
