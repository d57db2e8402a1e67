"""``arma11.stan``: ARMA(1, 1) time series,
``y[t] = mu + phi * y[t-1] + theta * err[t-1] + err[t]``, ``err[t] ~ normal(0, sigma)``.

Priors as in Stan: ``mu ~ normal(0, 10)``, ``phi ~ normal(0, 2)``, ``theta ~ normal(0, 2)``
(``phi`` and ``theta`` unconstrained: no stationarity or invertibility constraint),
``sigma ~ cauchy(0, 2.5)`` on ``sigma > 0`` (``HalfCauchy(2.5)``: the same density up to
the constant ``log 2``). The first prediction assumes ``err[0] = 0`` and ``y[0] = mu``:
``nu[1] = mu + phi * mu``. The errors are computed recursively,
``err[t] = y[t] - nu[t]`` with ``nu[t] = mu + phi * y[t-1] + theta * err[t-1]`` (``lax.scan``
in NumPyro, a loop over time in Pyro), and Stan's ``err ~ normal(0, sigma)`` is written as
the observed site ``y ~ normal(nu, sigma)``, the same log density term by term.
"""

import numpy as np


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax import lax

    y = jnp.asarray(data["y"], dtype=jnp.float64)

    def model():
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        phi = numpyro.sample("phi", dist.Normal(0.0, 2.0))
        theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
        sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))

        nu1 = mu + phi * mu

        def step(err_prev, y_pair):
            y_prev, y_t = y_pair
            nu_t = mu + phi * y_prev + theta * err_prev
            return y_t - nu_t, nu_t

        _, nu_rest = lax.scan(step, y[0] - nu1, (y[:-1], y[1:]))
        nu = jnp.concatenate([jnp.reshape(nu1, (1,)), nu_rest])
        numpyro.sample("y", dist.Normal(nu, sigma).to_event(1), obs=y)

    return model


def pyro_model(data):
    import pyro
    import pyro.distributions as dist
    import torch

    y = torch.as_tensor(np.asarray(data["y"], dtype=np.float64))
    T = y.shape[0]
    zero = torch.zeros((), dtype=y.dtype)

    def model():
        mu = pyro.sample("mu", dist.Normal(zero, 10.0))
        phi = pyro.sample("phi", dist.Normal(zero, 2.0))
        theta = pyro.sample("theta", dist.Normal(zero, 2.0))
        sigma = pyro.sample("sigma", dist.HalfCauchy(torch.tensor(2.5, dtype=y.dtype)))

        nu = [mu + phi * mu]
        err = y[0] - nu[0]
        for t in range(1, T):
            nu_t = mu + phi * y[t - 1] + theta * err
            err = y[t] - nu_t
            nu.append(nu_t)
        pyro.sample("y", dist.Normal(torch.stack(nu), sigma).to_event(1), obs=y)

    return model
