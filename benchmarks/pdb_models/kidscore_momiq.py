"""``kidscore_momiq.stan``: child test score regressed on the mother's IQ, raw scale.

``kid_score ~ normal(beta[1] + beta[2] * mom_iq, sigma)``, ``beta`` flat (``ImproperUniform``),
``sigma ~ cauchy(0, 2.5)`` on ``sigma > 0`` (``HalfCauchy(2.5)``, the same up to a constant).
The uncentred predictor (``mom_iq`` about 100 +- 15) makes ``beta[1]`` and ``beta[2]``
correlated at about -0.99. NumPyro only.
"""


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    score = jnp.asarray(data["kid_score"], dtype=jnp.float64)
    iq = jnp.asarray(data["mom_iq"], dtype=jnp.float64)

    def model():
        beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
        sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
        numpyro.sample("kid_score", dist.Normal(beta[0] + beta[1] * iq, sigma).to_event(1), obs=score)

    return model
