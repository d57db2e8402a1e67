"""``nes.stan``: party identification regressed on nine predictors (NES 2000), flat priors.

``partyid7 ~ normal(X beta, sigma)`` with ``X`` = intercept, ``real_ideo``, ``race_adj``,
the age classes 30-44, 45-64 and 65+ (indicators of ``age_discrete`` = 2, 3, 4),
``educ1``, ``gender``, ``income``; ``beta`` (9) and ``sigma > 0`` with Stan's implicit flat
priors (``ImproperUniform``). NumPyro only.
"""

import numpy as np


def design(data):
    """The 476 x 9 design matrix of the Stan program, column by column."""
    age = np.asarray(data["age_discrete"])
    cols = [np.ones(age.shape[0]), data["real_ideo"], data["race_adj"], age == 2, age == 3,
            age == 4, data["educ1"], data["gender"], data["income"]]
    return np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1)


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    X = jnp.asarray(design(data))
    y = jnp.asarray(data["partyid7"], dtype=jnp.float64)

    def model():
        beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), (9,)))
        sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        numpyro.sample("partyid7", dist.Normal(X @ beta, sigma).to_event(1), obs=y)

    return model
