"""``blr.stan``: Bayesian linear regression, ``beta ~ normal(0, 10)``,
``sigma ~ normal(0, 10)`` on ``sigma > 0`` (a half-normal up to a constant, which we keep
normalised: it does not change the posterior), ``y ~ normal(X beta, sigma)``.
"""

import numpy as np


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    X = jnp.asarray(data["X"], dtype=jnp.float64)
    y = jnp.asarray(data["y"], dtype=jnp.float64)
    D = X.shape[1]

    def model():
        beta = numpyro.sample("beta", dist.Normal(jnp.zeros(D), 10.0).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
        numpyro.sample("y", dist.Normal(X @ beta, sigma).to_event(1), obs=y)

    return model


def pyro_model(data):
    import pyro
    import pyro.distributions as dist
    import torch

    X = torch.as_tensor(np.asarray(data["X"], dtype=np.float64))
    y = torch.as_tensor(np.asarray(data["y"], dtype=np.float64))
    D = X.shape[1]

    def model():
        beta = pyro.sample("beta", dist.Normal(torch.zeros(D, dtype=X.dtype), 10.0).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(10.0, dtype=X.dtype)))
        pyro.sample("y", dist.Normal(X @ beta, sigma).to_event(1), obs=y)

    return model
