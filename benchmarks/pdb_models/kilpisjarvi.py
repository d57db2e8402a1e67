"""``kilpisjarvi.stan``: Gaussian linear model of summer temperature at Kilpisjärvi on the
raw (uncentred) year, with priors whose hyperparameters are data.

``alpha ~ normal(pmualpha, psalpha)``, ``beta ~ normal(pmubeta, psbeta)``,
``y ~ normal(alpha + beta * x, sigma)``, ``sigma > 0`` with Stan's implicit improper
uniform prior (``ImproperUniform``). ``xpred`` is in the data but unused by the model
block. With ``x`` the uncentred year, ``alpha`` and ``beta`` are correlated at about
-0.99999 (a ridge).
"""

import numpy as np


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    x = jnp.asarray(data["x"], dtype=jnp.float64)
    y = jnp.asarray(data["y"], dtype=jnp.float64)
    pmualpha, psalpha, pmubeta, psbeta = (jnp.asarray(data[k], dtype=jnp.float64)
                                          for k in ("pmualpha", "psalpha", "pmubeta", "psbeta"))

    def model():
        alpha = numpyro.sample("alpha", dist.Normal(pmualpha, psalpha))
        beta = numpyro.sample("beta", dist.Normal(pmubeta, psbeta))
        sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        numpyro.sample("y", dist.Normal(alpha + beta * x, sigma).to_event(1), obs=y)

    return model


def pyro_model(data):
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.distributions import constraints

    x = torch.as_tensor(np.asarray(data["x"], dtype=np.float64))
    y = torch.as_tensor(np.asarray(data["y"], dtype=np.float64))
    pmualpha, psalpha, pmubeta, psbeta = (torch.as_tensor(np.asarray(data[k], dtype=np.float64))
                                          for k in ("pmualpha", "psalpha", "pmubeta", "psbeta"))

    def model():
        alpha = pyro.sample("alpha", dist.Normal(pmualpha, psalpha))
        beta = pyro.sample("beta", dist.Normal(pmubeta, psbeta))
        sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        pyro.sample("y", dist.Normal(alpha + beta * x, sigma).to_event(1), obs=y)

    return model
