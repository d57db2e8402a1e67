"""``garch11.stan``: GARCH(1, 1) volatility,
``sigma[t]^2 = alpha0 + alpha1 (y[t-1] - mu)^2 + beta1 sigma[t-1]^2``, ``sigma[1] = sigma1``,
``y ~ normal(mu, sigma)``.

Stan's parameters carry only their bounds (flat priors): ``mu`` real, ``alpha0 > 0``,
``0 < alpha1 < 1``, ``0 < beta1 < 1 - alpha1``. The joint density is flat on that region,
so ``beta1 = (1 - alpha1) u`` with ``u`` flat on ``(0, 1)`` and the factor ``1 - alpha1``
of the change of variables (a bound that depends on another parameter, written out).
``beta1`` is a ``deterministic`` site. NumPyro only.
"""


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax import lax
    from numpyro.distributions import constraints

    y = jnp.asarray(data["y"], dtype=jnp.float64)
    sigma1 = float(data["sigma1"])

    def model():
        mu = numpyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
        alpha0 = numpyro.sample("alpha0", dist.ImproperUniform(constraints.positive, (), ()))
        alpha1 = numpyro.sample("alpha1", dist.ImproperUniform(constraints.unit_interval, (), ()))
        u = numpyro.sample("beta1_fraction", dist.ImproperUniform(constraints.unit_interval, (), ()))
        numpyro.factor("beta1_jacobian", jnp.log1p(-alpha1))
        beta1 = numpyro.deterministic("beta1", (1.0 - alpha1) * u)

        def step(var_prev, y_prev):
            var = alpha0 + alpha1 * (y_prev - mu) ** 2 + beta1 * var_prev
            return var, var

        _, var_rest = lax.scan(step, jnp.asarray(sigma1 ** 2), y[:-1])
        sigma = jnp.sqrt(jnp.concatenate([jnp.full((1,), sigma1 ** 2), var_rest]))
        numpyro.sample("y", dist.Normal(mu, sigma).to_event(1), obs=y)

    return model
