"""The ESH paper's synthetic targets, exactly as its code defines them (esh_math.md §9.1).

Each :class:`PaperTarget` carries the energy (``-log p`` up to a constant, for one point of
shape ``(d,)``), the paper's initial-state distribution, an exact sampler of the target
(the MMD reference), the whitening map applied before the MMD kernel (§9.3), and the true
mean / variance / feature scales used by the paper's ESS (§9.4).

========================  ====  ====================================================
name                       d    paper name / initialisation
========================  ====  ====================================================
``mog``                    2    2D MOG: 8 Gaussians on a circle of radius 0.5, sd 0.075;
                                init ``N(0, I)``
``mog_prior``              2    2D MOG-prior: same target, every chain starts at the mode
                                ``(0, 0.5)``
``icg``                   50    50D ICG: variances ``linspace(0.01, 1, 50)``; init ``N(0, I)``
``scg``                    2    2D SCG: variances (0.01, 1) rotated by 45 degrees
                                (correlation -0.98); init ``N(0, I)``
``scg_bias``               2    2D SCG-bias: same target, init ``N((-2, 2), I)``
``funnel``                20    20D Funnel: ``y ~ N(0, 9)``, ``x_i | y ~ N(0, e^{-y})``;
                                init ``N(0, I)``
========================  ====  ====================================================

Functions of positions work on arrays of shape ``(..., d)`` (numpy float64) unless they
say otherwise; ``energy`` is a JAX function of one point.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

TARGET_NAMES = ("mog", "mog_prior", "scg", "scg_bias", "icg", "funnel")

MOG_SIGMA = 0.075
MOG_MEANS = 0.5 * np.stack(
    [np.cos(2 * np.pi * np.arange(8) / 8), np.sin(2 * np.pi * np.arange(8) / 8)], axis=1
)
# Empirical [sd of x, sd of x^2] per coordinate, from the paper's code (§9.1).
MOG_TRUE_SCALE = np.sqrt(np.array([[0.1305, 0.1308], [0.0107, 0.0107]]))

FUNNEL_D = 20
FUNNEL_Y_SD = 3.0
FUNNEL_CLAMP = 25.0  # the energy's exp(y) is clamped at |y| = 25, as in the paper's code
FUNNEL_Y_CLIP = 11.0  # the reference sampler clips y at +-11, as in the paper's code

# Rotation by 45 degrees as the paper's code applies it: Sigma = R^T diag(0.01, 1) R
# = [[0.505, -0.495], [-0.495, 0.505]], the long axis along (1, -1) / sqrt(2).
_ROT45 = np.array([[np.cos(np.pi / 4), np.sin(np.pi / 4)], [-np.sin(np.pi / 4), np.cos(np.pi / 4)]])


@dataclass(frozen=True)
class PaperTarget:
    name: str
    description: str
    dim: int
    energy: Callable  # JAX: (d,) -> scalar
    init: Callable  # (rng: np.random.Generator, n) -> (n, d)
    sample_true: Callable  # (rng, n) -> (n, d) exact draws
    whiten: Callable  # (..., d) -> (..., d); identity where the paper does not whiten
    true_mean: np.ndarray  # (d,)
    true_var: np.ndarray  # (d,) E[x^2] - E[x]^2 with E[x] = 0: the paper's "true_var"
    true_scale: np.ndarray  # (2, d): scales of the ESS features x and x^2 (§9.4)


def _gaussian(name, description, cov, init_mean):
    import jax.numpy as jnp

    d = cov.shape[0]
    eig, vecs = np.linalg.eigh(cov)
    prec = np.linalg.inv(cov)
    prec_j = jnp.asarray(prec)
    chol = np.linalg.cholesky(cov)
    to_white = vecs.T / np.sqrt(eig)[:, None]  # x -> diag(eig)^-1/2 V^T x is N(0, I)
    var = np.diag(cov).copy()

    def energy(x):
        return 0.5 * x @ (prec_j @ x)

    def init(rng, n):
        return init_mean + rng.standard_normal((n, d))

    def sample_true(rng, n):
        return rng.standard_normal((n, d)) @ chol.T

    def whiten(x):
        return np.asarray(x) @ to_white.T

    return PaperTarget(
        name, description, d, energy, init, sample_true, whiten, np.zeros(d), var,
        np.stack([np.sqrt(var), np.sqrt(2.0) * var]),
    )


def _mog(name, description, init_fn):
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    means_j = jnp.asarray(MOG_MEANS)
    s2 = MOG_SIGMA**2
    log_norm = np.log(8 * 2 * np.pi * s2)

    def energy(x):
        return -logsumexp(-jnp.sum((x - means_j) ** 2, axis=-1) / (2 * s2)) + log_norm

    def sample_true(rng, n):
        k = rng.integers(0, 8, size=n)
        return MOG_MEANS[k] + MOG_SIGMA * rng.standard_normal((n, 2))

    var = np.full(2, s2 + np.mean(MOG_MEANS[:, 0] ** 2))  # 0.130625 in both coordinates
    return PaperTarget(
        name, description, 2, energy, init_fn, sample_true, lambda x: np.asarray(x),
        np.zeros(2), var, MOG_TRUE_SCALE,
    )


def _funnel():
    import jax.numpy as jnp

    d = FUNNEL_D

    def energy(x):
        y, rest = x[0], x[1:]
        return (
            y**2 / (2 * FUNNEL_Y_SD**2)
            + 0.5 * jnp.exp(jnp.clip(y, -FUNNEL_CLAMP, FUNNEL_CLAMP)) * jnp.sum(rest**2)
            - 0.5 * (d - 1) * y
        )

    def init(rng, n):
        return rng.standard_normal((n, d))

    def sample_true(rng, n):
        y = np.clip(FUNNEL_Y_SD * rng.standard_normal(n), -FUNNEL_Y_CLIP, FUNNEL_Y_CLIP)
        rest = rng.standard_normal((n, d - 1)) * np.exp(-y / 2)[:, None]
        return np.concatenate([y[:, None], rest], axis=1)

    def whiten(x):
        x = np.asarray(x, dtype=np.float64)
        y = x[..., :1]
        return np.concatenate([y / FUNNEL_Y_SD, x[..., 1:] * np.exp(y / 2)], axis=-1)

    # The paper's code uses (e^{2.25} - 1) e^{2.25} for Var(x_i) (the lognormal variance
    # formula with the wrong argument; the exact value is E[e^{-y}] = e^{4.5}). Kept: it
    # only scales the ESS features, and the paper's numbers used it (esh_math.md §9.1).
    var = np.concatenate([[FUNNEL_Y_SD**2], np.full(d - 1, (np.exp(2.25) - 1) * np.exp(2.25))])
    scale = np.stack([
        np.concatenate([[3.0], np.full(d - 1, np.sqrt(var[1]))]),
        np.concatenate([[12.7], np.full(d - 1, 1730.0)]),  # the code's empirical values
    ])
    return PaperTarget(
        "funnel", "20-D Neal's funnel, y ~ N(0, 9), x_i | y ~ N(0, exp(-y)); init N(0, I)",
        d, energy, init, sample_true, whiten, np.zeros(d), var, scale,
    )


def make_paper_targets():
    """``{name: PaperTarget}`` in :data:`TARGET_NAMES` order."""
    scg_cov = _ROT45.T @ np.diag([0.01, 1.0]) @ _ROT45
    icg_cov = np.diag(np.linspace(0.01, 1.0, 50))
    targets = {
        "mog": _mog(
            "mog", "2-D mixture of 8 Gaussians (radius 0.5, sd 0.075); init N(0, I)",
            lambda rng, n: rng.standard_normal((n, 2)),
        ),
        "mog_prior": _mog(
            "mog_prior", "2-D mixture of 8 Gaussians; every chain starts at the mode (0, 0.5)",
            lambda rng, n: np.tile(np.array([0.0, 0.5]), (n, 1)),
        ),
        "scg": _gaussian(
            "scg", "2-D Gaussian, variances (0.01, 1) rotated 45 degrees (rho = -0.98); init N(0, I)",
            scg_cov, np.zeros(2),
        ),
        "scg_bias": _gaussian(
            "scg_bias", "2-D correlated Gaussian as scg; init N((-2, 2), I) (far along the long axis)",
            scg_cov, np.array([-2.0, 2.0]),
        ),
        "icg": _gaussian(
            "icg", "50-D Gaussian, variances linspace(0.01, 1, 50); init N(0, I)",
            icg_cov, np.zeros(50),
        ),
        "funnel": _funnel(),
    }
    return {k: targets[k] for k in TARGET_NAMES}


def numpyro_model(target):
    """A NumPyro model whose potential is ``target.energy`` on one site ``x`` of shape
    ``(d,)`` (improper flat base measure), for the NumPyro kernels and NUTS."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    d, energy = target.dim, target.energy

    def model():
        x = numpyro.sample("x", dist.ImproperUniform(constraints.real_vector, (), event_shape=(d,)))
        numpyro.factor("log_density", -energy(x))

    return model
