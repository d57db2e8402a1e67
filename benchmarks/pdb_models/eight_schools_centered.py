"""``eight_schools_centered.stan``: ``theta[j] ~ normal(mu, tau)``, ``y[j] ~ normal(theta[j],
sigma[j])``, ``mu ~ normal(0, 5)``, ``tau ~ cauchy(0, 5)`` on ``tau > 0`` (``HalfCauchy``).
The funnel. NumPyro only.
"""


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    y = jnp.asarray(data["y"], dtype=jnp.float64)
    sigma = jnp.asarray(data["sigma"], dtype=jnp.float64)
    J = y.shape[0]

    def model():
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        theta = numpyro.sample("theta", dist.Normal(mu, tau).expand([J]).to_event(1))
        numpyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)

    return model
