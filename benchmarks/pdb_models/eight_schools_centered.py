"""``eight_schools_centered.stan``: ``theta[j] ~ normal(mu, tau)``, ``y[j] ~ normal(theta[j],
sigma[j])``, ``mu ~ normal(0, 5)``, ``tau ~ cauchy(0, 5)`` on ``tau > 0`` (``HalfCauchy``).
The funnel. NumPyro only.
"""


def school_arrays(data):
    """``(y, sigma)`` of the eight schools as float64 JAX arrays (both Stan programs)."""
    import jax.numpy as jnp

    return jnp.asarray(data["y"], dtype=jnp.float64), jnp.asarray(data["sigma"], dtype=jnp.float64)


def numpyro_model(data):
    import numpyro
    import numpyro.distributions as dist

    y, sigma = school_arrays(data)

    def model():
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        theta = numpyro.sample("theta", dist.Normal(mu, tau).expand([y.shape[0]]).to_event(1))
        numpyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)

    return model
