"""``gp_pois_regr.stan``: a latent Gaussian process with a Poisson likelihood, non-centred.

``f = L f_tilde`` with ``L = cholesky(alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + 1e-10 I)``,
``f_tilde ~ normal(0, 1)``, ``rho ~ gamma(25, 4)`` (rate 4), ``alpha ~ normal(0, 2)`` on
``alpha > 0`` (``HalfNormal(2)``), ``k ~ poisson_log(f)``. ``f`` is a ``deterministic``
site. NumPyro only.
"""


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    x = jnp.asarray(data["x"], dtype=jnp.float64)
    k = jnp.asarray(data["k"], dtype=jnp.float64)
    N = x.shape[0]

    def model():
        rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
        alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
        f_tilde = numpyro.sample("f_tilde", dist.Normal(jnp.zeros(N), 1.0).to_event(1))
        cov = alpha ** 2 * jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho ** 2)
        L = jnp.linalg.cholesky(cov + 1e-10 * jnp.eye(N))
        f = numpyro.deterministic("f", L @ f_tilde)
        numpyro.sample("k", dist.Poisson(jnp.exp(f)).to_event(1), obs=k)

    return model
