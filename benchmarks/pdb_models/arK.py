"""``arK.stan``: autoregression of order ``K`` (5 here).

``y[t] ~ normal(alpha + sum_k beta[k] y[t-k], sigma)`` for ``t > K``; ``alpha ~ normal(0, 10)``,
``beta ~ normal(0, 10)``, ``sigma ~ cauchy(0, 2.5)`` on ``sigma > 0`` (``HalfCauchy``).
NumPyro only.
"""

import numpy as np


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    K = int(data["K"])
    y = np.asarray(data["y"], dtype=np.float64)
    T = y.shape[0]
    # lags[t - K, k - 1] = y[t - k] (0-based t = K..T-1)
    lags = jnp.asarray(np.stack([y[K - k:T - k] for k in range(1, K + 1)], axis=1))
    target = jnp.asarray(y[K:])

    def model():
        alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
        beta = numpyro.sample("beta", dist.Normal(jnp.zeros(K), 10.0).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
        numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma).to_event(1), obs=target)

    return model
