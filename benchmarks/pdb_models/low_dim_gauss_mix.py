"""``low_dim_gauss_mix.stan``: a two-component normal mixture with ordered means.

``y[n] ~ theta normal(mu[1], sigma[1]) + (1 - theta) normal(mu[2], sigma[2])``;
``mu`` ordered with ``mu ~ normal(0, 2)`` (an ``ordered_vector`` site with the prior as a
factor), ``sigma ~ normal(0, 2)`` on ``sigma > 0`` (``HalfNormal(2)``, the same up to a
constant), ``theta ~ beta(5, 5)``. NumPyro only.
"""


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax.scipy.special import logsumexp
    from numpyro.distributions import constraints

    y = jnp.asarray(data["y"], dtype=jnp.float64)

    def model():
        mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
        numpyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum())
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
        theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
        log_w = jnp.stack([jnp.log(theta), jnp.log1p(-theta)])
        comp = dist.Normal(mu, sigma).log_prob(y[:, None])  # (N, 2)
        numpyro.factor("y", logsumexp(comp + log_w, axis=-1).sum())

    return model
