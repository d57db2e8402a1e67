"""The forward algorithm of the two posteriordb HMM programs (``hmm_example.stan``,
``hmm_drive_0.stan``), written once per backend: the log marginal likelihood

    gamma[1, k] = log_emit[1, k]
    gamma[t, k] = log_sum_exp_j(gamma[t-1, j] + log_theta[j, k]) + log_emit[t, k]
    log p(y) = log_sum_exp_k(gamma[N, k])

with no initial-state term, as in both Stan programs. ``log_theta[j, k]`` is the log
probability of moving from state ``j`` to ``k``; ``log_emit`` is ``(N, K)``.
"""


def forward_jax(log_theta, log_emit):
    """``lax.scan`` over time (NumPyro)."""
    from jax import lax
    from jax.scipy.special import logsumexp

    def step(gamma, log_emit_t):
        return logsumexp(gamma[:, None] + log_theta, axis=0) + log_emit_t, None

    gamma, _ = lax.scan(step, log_emit[0], log_emit[1:])
    return logsumexp(gamma)


def forward_torch(log_theta, log_emit):
    """A loop over time (Pyro)."""
    import torch

    gamma = log_emit[0]
    for t in range(1, log_emit.shape[0]):
        gamma = torch.logsumexp(gamma[:, None] + log_theta, dim=0) + log_emit[t]
    return torch.logsumexp(gamma, dim=0)
