"""``hmm_drive_0.stan``: two-state hidden Markov model of a basketball player's drive
(SportVU tracking), exponential emissions for ``u = 1/speed`` and ``v`` = distance to the
hoop, the hidden states marginalised by the forward algorithm.

Parameters as in Stan: the transition rows ``theta1``, ``theta2`` (``simplex[K]``, with
``target += dirichlet_lpdf(theta[k] | alpha[k, ])``: ``theta1 ~ Dirichlet(alpha[1, ])``,
``theta2 ~ Dirichlet(alpha[2, ])``, ``alpha`` from the data), and the emission rates ``phi``
and ``lambda`` (both ``positive_ordered[K]``: ``ImproperUniform`` on
``constraints.positive_ordered_vector`` with Stan's ``target += normal_lpdf(phi[1] | 0, 1)
+ normal_lpdf(phi[2] | 3, 1)`` and the same for ``lambda`` added as ``factor`` sites, i.e.
these normals restricted to the ordered positive cone, unnormalised as in Stan). The site
is named ``"lambda"`` as in Stan (a Python keyword, so the local variable is ``lam``).
``exponential_lpdf(x | rate)`` is the rate parametrisation, ``dist.Exponential(rate)``.
Forward algorithm as in the Stan program: ``gamma[1, k] = log p(u[1], v[1] | k)``,
``gamma[t, k] = log_sum_exp_j(gamma[t-1, j] + log theta[j, k]) + log p(u[t], v[t] | k)``,
``target += log_sum_exp(gamma[N])`` (``lax.scan`` in NumPyro, a loop over time in Pyro);
no initial-state distribution term, as in Stan. Stan's transformed parameter ``theta``
(the rows stacked) is not a site, and the Viterbi generated quantities are not translated.
The program has two rows ``theta1``, ``theta2``, so ``K`` must be 2.
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
        raise ValueError(f"hmm_drive_0 has two transition rows, so K must be 2, not {K}")
    u = jnp.asarray(data["u"], dtype=jnp.float64)
    v = jnp.asarray(data["v"], dtype=jnp.float64)
    alpha = jnp.asarray(data["alpha"], dtype=jnp.float64)
    prior_mean = jnp.array([0.0, 3.0], dtype=jnp.float64)  # x[1] ~ normal(0, 1), x[2] ~ normal(3, 1)

    def model():
        theta1 = numpyro.sample("theta1", dist.Dirichlet(alpha[0]))
        theta2 = numpyro.sample("theta2", dist.Dirichlet(alpha[1]))
        phi = numpyro.sample("phi", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
        lam = numpyro.sample("lambda", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
        numpyro.factor("phi_prior", dist.Normal(prior_mean, 1.0).log_prob(phi).sum(-1))
        numpyro.factor("lambda_prior", dist.Normal(prior_mean, 1.0).log_prob(lam).sum(-1))

        log_theta = jnp.log(jnp.stack([theta1, theta2]))  # [j, k]: from j to k
        log_emit = (dist.Exponential(phi).log_prob(u[:, None])
                    + dist.Exponential(lam).log_prob(v[:, None]))  # (N, K)
        numpyro.factor("uv", forward_jax(log_theta, log_emit))

    return model


def pyro_model(data):
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.distributions import constraints

    K = int(data["K"])
    if K != 2:
        raise ValueError(f"hmm_drive_0 has two transition rows, so K must be 2, not {K}")
    u = torch.as_tensor(np.asarray(data["u"], dtype=np.float64))
    v = torch.as_tensor(np.asarray(data["v"], dtype=np.float64))
    alpha = torch.as_tensor(np.asarray(data["alpha"], dtype=np.float64))
    prior_mean = torch.tensor([0.0, 3.0], dtype=u.dtype)  # x[1] ~ normal(0, 1), x[2] ~ normal(3, 1)

    def model():
        theta1 = pyro.sample("theta1", dist.Dirichlet(alpha[0]))
        theta2 = pyro.sample("theta2", dist.Dirichlet(alpha[1]))
        phi = pyro.sample("phi", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
        lam = pyro.sample("lambda", dist.ImproperUniform(constraints.positive_ordered_vector, (), (K,)))
        pyro.factor("phi_prior", dist.Normal(prior_mean, 1.0).log_prob(phi).sum(-1))
        pyro.factor("lambda_prior", dist.Normal(prior_mean, 1.0).log_prob(lam).sum(-1))

        log_theta = torch.log(torch.stack([theta1, theta2]))  # [j, k]: from j to k
        log_emit = (dist.Exponential(phi).log_prob(u[:, None])
                    + dist.Exponential(lam).log_prob(v[:, None]))  # (N, K)
        pyro.factor("uv", forward_torch(log_theta, log_emit))

    return model
