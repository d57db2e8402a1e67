"""``eight_schools_noncentered.stan``: ``theta = mu + tau theta_trt``, ``theta_trt ~
normal(0, 1)``, ``y[j] ~ normal(theta[j], sigma[j])``, ``mu ~ normal(0, 5)``, ``tau ~
cauchy(0, 5)`` on ``tau > 0`` (``HalfCauchy``). ``theta`` is a ``deterministic`` site.
NumPyro only.
"""

from pdb_models.eight_schools_centered import school_arrays


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    y, sigma = school_arrays(data)

    def model():
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        theta_trt = numpyro.sample("theta_trt", dist.Normal(jnp.zeros(y.shape[0]), 1.0).to_event(1))
        numpyro.sample("y", dist.Normal(numpyro.deterministic("theta", mu + tau * theta_trt), sigma)
                       .to_event(1), obs=y)

    return model
