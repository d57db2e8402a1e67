"""``kidscore_interaction_c.stan``: child test score regressed on the mother's high-school
completion, her IQ and their interaction, with centred predictors, flat priors.

Stan's transformed data are computed here from the data: ``c_mom_hs = mom_hs -
mean(mom_hs)``, ``c_mom_iq = mom_iq - mean(mom_iq)``, ``inter = c_mom_hs * c_mom_iq``.
``kid_score ~ normal(beta[1] + beta[2] c_mom_hs + beta[3] c_mom_iq + beta[4] inter, sigma)``,
``beta`` (4) and ``sigma > 0`` with Stan's implicit improper uniform priors
(``ImproperUniform``, adding nothing to the log density). ``mom_work`` is in the data but
not in the model.
"""

import numpy as np


def _design(data):
    mom_hs = np.asarray(data["mom_hs"], dtype=np.float64)
    mom_iq = np.asarray(data["mom_iq"], dtype=np.float64)
    c_mom_hs = mom_hs - mom_hs.mean()
    c_mom_iq = mom_iq - mom_iq.mean()
    return c_mom_hs, c_mom_iq, c_mom_hs * c_mom_iq


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    kid_score = jnp.asarray(data["kid_score"], dtype=jnp.float64)
    c_mom_hs, c_mom_iq, inter = (jnp.asarray(a, dtype=jnp.float64) for a in _design(data))

    def model():
        beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), (4,)))
        sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        mean = beta[0] + beta[1] * c_mom_hs + beta[2] * c_mom_iq + beta[3] * inter
        numpyro.sample("kid_score", dist.Normal(mean, sigma).to_event(1), obs=kid_score)

    return model


def pyro_model(data):
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.distributions import constraints

    kid_score = torch.as_tensor(np.asarray(data["kid_score"], dtype=np.float64))
    c_mom_hs, c_mom_iq, inter = (torch.as_tensor(a) for a in _design(data))

    def model():
        beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (4,)))
        sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        mean = beta[0] + beta[1] * c_mom_hs + beta[2] * c_mom_iq + beta[3] * inter
        pyro.sample("kid_score", dist.Normal(mean, sigma).to_event(1), obs=kid_score)

    return model
