"""``logearn_interaction.stan``: log earnings on height, sex and their interaction.

``log(earn) ~ normal(beta[1] + beta[2] height + beta[3] male + beta[4] height male, sigma)``,
``beta`` (4) and ``sigma > 0`` flat (``ImproperUniform``). Height enters uncentred, so the
intercept and slopes are strongly correlated. NumPyro only.
"""


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    log_earn = jnp.log(jnp.asarray(data["earn"], dtype=jnp.float64))
    height = jnp.asarray(data["height"], dtype=jnp.float64)
    male = jnp.asarray(data["male"], dtype=jnp.float64)

    def model():
        beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), (4,)))
        sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        mu = beta[0] + beta[1] * height + beta[2] * male + beta[3] * height * male
        numpyro.sample("log_earn", dist.Normal(mu, sigma).to_event(1), obs=log_earn)

    return model
