"""``hmm_example.stan``: two-state hidden Markov model with unit-variance normal
emissions, the hidden states marginalised by the forward algorithm.

Parameters as in Stan: the transition rows ``theta1`` and ``theta2`` (``simplex[K]``, no
explicit prior: ``Dirichlet(ones)``, Stan's implicit uniform on the simplex) and the
emission means ``mu`` (``positive_ordered[K]``: ``ImproperUniform`` on
``constraints.positive_ordered_vector``, with Stan's ``target += normal_lpdf(mu[1] | 3, 1)
+ normal_lpdf(mu[2] | 10, 1)`` added as a ``factor``, so the prior is these normals
restricted to ``0 < mu[1] < mu[2]``, unnormalised as in Stan). Stan's transformed
parameter ``theta`` (the rows stacked, ``theta[j, k]`` = P(state j -> state k)) is not a
site. Forward algorithm, as in the Stan program: ``gamma[1, k] = normal_lpdf(y[1] | mu[k], 1)``,
``gamma[t, k] = log_sum_exp_j(gamma[t-1, j] + log theta[j, k]) + normal_lpdf(y[t] | mu[k], 1)``,
``target += log_sum_exp(gamma[N])`` (``lax.scan`` in NumPyro, a loop over time in Pyro);
there is no initial-state distribution term, as in Stan. The program has two rows
``theta1``, ``theta2``, so ``K`` must be 2. The Viterbi generated quantities are not
translated.
"""

import numpy as np

from pdb_models.hmm_forward import forward_jax, forward_torch


def numpyro_model(data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    K = int(data["K"])
    if K != 2:
        raise ValueError(f"hmm_example has two transition rows, so K must be 2, not {K}")
    y = jnp.asarray(data["y"], dtype=jnp.float64)
    prior_mean = jnp.array([3.0, 10.0], dtype=jnp.float64)  # mu[1] ~ normal(3, 1), mu[2] ~ normal(10, 1)

    def model():
        theta1 = numpyro.sample("theta1", dist.Dirichlet(jnp.ones(K)))
        theta2 = numpyro.sample("theta2", dist.Dirichlet(jnp.ones(K)))
        mu = numpyro.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
        numpyro.factor("mu_prior", dist.Normal(prior_mean, 1.0).log_prob(mu).sum(-1))

        log_theta = jnp.log(jnp.stack([theta1, theta2]))  # [j, k]: from j to k
        log_emit = dist.Normal(mu, 1.0).log_prob(y[:, None])  # (N, K)
        numpyro.factor("y", forward_jax(log_theta, log_emit))

    return model


def pyro_model(data):
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.distributions import constraints

    K = int(data["K"])
    if K != 2:
        raise ValueError(f"hmm_example has two transition rows, so K must be 2, not {K}")
    y = torch.as_tensor(np.asarray(data["y"], dtype=np.float64))
    ones = torch.ones(K, dtype=y.dtype)
    prior_mean = torch.tensor([3.0, 10.0], dtype=y.dtype)  # mu[1] ~ normal(3, 1), mu[2] ~ normal(10, 1)

    def model():
        theta1 = pyro.sample("theta1", dist.Dirichlet(ones))
        theta2 = pyro.sample("theta2", dist.Dirichlet(ones))
        mu = pyro.sample("mu", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
        pyro.factor("mu_prior", dist.Normal(prior_mean, 1.0).log_prob(mu).sum(-1))

        log_theta = torch.log(torch.stack([theta1, theta2]))  # [j, k]: from j to k
        log_emit = dist.Normal(mu, 1.0).log_prob(y[:, None])  # (N, K)
        pyro.factor("y", forward_torch(log_theta, log_emit))

    return model
