"""``diamonds.stan`` (brms): log price of 5000 diamonds on 24 predictors, centred design.

``Y ~ normal(Intercept + Xc b, sigma)`` with ``Xc`` the columns 2..K of ``X`` minus their
means; ``b ~ normal(0, 1)``, ``Intercept ~ student_t(3, 8, 10)``, ``sigma ~
student_t(3, 0, 10)`` truncated to ``sigma > 0`` (a half Student-t: a positive site with the
density as a factor, normalised as Stan's ``- student_t_lccdf(0 | 3, 0, 10)`` does).
``b_Intercept = Intercept - means_X . b`` is a ``deterministic`` site. The predictors
(polynomial contrasts of cut, colour and clarity, and carat terms) are strongly
correlated: posteriordb's hardest regression for NUTS. NumPyro only.
"""

import math


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    X = jnp.asarray(data["X"], dtype=jnp.float64)
    Y = jnp.asarray(data["Y"], dtype=jnp.float64)
    means = X[:, 1:].mean(axis=0)
    Xc = X[:, 1:] - means
    Kc = Xc.shape[1]

    def model():
        b = numpyro.sample("b", dist.Normal(jnp.zeros(Kc), 1.0).to_event(1))
        intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
        sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        numpyro.factor("sigma_prior", dist.StudentT(3.0, 0.0, 10.0).log_prob(sigma) + math.log(2.0))
        numpyro.sample("Y", dist.Normal(intercept + Xc @ b, sigma).to_event(1), obs=Y)
        numpyro.deterministic("b_Intercept", intercept - means @ b)

    return model
