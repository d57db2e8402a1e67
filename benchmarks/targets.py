"""Benchmark targets as NumPyro models (used by ``benchmarks/run_numpyro.py``).

Every model takes no arguments: the data are closed over. That keeps NumPyro's
``MCMC`` cache keys hashable and lets every sampler (NumPyro kernels and BlackJAX)
see exactly the same potential, built once by ``numpyro.infer.util.initialize_model``.

Targets
-------
``ill_gauss``    100-D diagonal Gaussian, standard deviations ``logspace(-2, 0, 100)``.
``std_gauss``    100-D standard Gaussian.
``eight_schools`` eight schools, non-centred: ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``,
                 ``theta_tilde ~ N(0, 1)``, ``theta = mu + tau * theta_tilde``,
                 ``y ~ N(theta, sigma)``.  10 unconstrained parameters (``tau`` on the
                 log scale).
``logreg``       Bayesian logistic regression on scikit-learn's breast-cancer data
                 (569 rows, 30 features standardised to mean 0 / sd 1, plus an intercept
                 column of ones): ``w ~ N(0, 1)`` for all 31 coefficients,
                 ``y ~ Bernoulli(logits = X w)``.
"""

import json
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

EIGHT_SCHOOLS_DATA = "/work/shared/data/posteriordb/eight_schools-eight_schools_noncentered/data.json"
EIGHT_SCHOOLS_Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
EIGHT_SCHOOLS_SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


@dataclass
class Target:
    name: str
    description: str
    model: Callable
    dim: int  # unconstrained dimension
    true_sd: Optional[np.ndarray] = None  # per-coordinate sd for the Gaussians (mean 0)
    notes: dict = field(default_factory=dict)


def _eight_schools_data():
    """The posteriordb data file when it exists (checked against the numbers above)."""
    y, sigma = EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SIGMA
    if os.path.exists(EIGHT_SCHOOLS_DATA):
        with open(EIGHT_SCHOOLS_DATA) as f:
            data = json.load(f)
        if [float(v) for v in data["y"]] != y or [float(v) for v in data["sigma"]] != sigma:
            raise ValueError(f"{EIGHT_SCHOOLS_DATA} disagrees with the built-in eight-schools data")
    return np.asarray(y), np.asarray(sigma)


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    X = np.concatenate([np.ones((X.shape[0], 1)), X], axis=1)
    return X.astype(np.float64), y.astype(np.float64)


def make_targets():
    """``{name: Target}`` in the benchmark's order. Import after enabling float64."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    d = 100
    sd_ill = np.logspace(-2, 0, d)
    sd_ill_j = jnp.asarray(sd_ill)

    def ill_gauss():
        numpyro.sample("x", dist.Normal(0.0, sd_ill_j))

    ones = jnp.ones(d)

    def std_gauss():
        numpyro.sample("x", dist.Normal(0.0, ones))

    y8, s8 = _eight_schools_data()
    y8_j, s8_j = jnp.asarray(y8), jnp.asarray(s8)

    def eight_schools():
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("school", 8):
            theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
            numpyro.sample("y", dist.Normal(theta, s8_j), obs=y8_j)

    X, yb = _breast_cancer()
    X_j, yb_j = jnp.asarray(X), jnp.asarray(yb)
    p = X.shape[1]

    def logreg():
        w = numpyro.sample("w", dist.Normal(jnp.zeros(p), 1.0).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=X_j @ w).to_event(1), obs=yb_j)

    return {
        "ill_gauss": Target(
            "ill_gauss", "100-D Gaussian, sd = logspace(-2, 0, 100)", ill_gauss, d, sd_ill
        ),
        "std_gauss": Target("std_gauss", "100-D standard Gaussian", std_gauss, d, np.ones(d)),
        "eight_schools": Target(
            "eight_schools", "eight schools, non-centred (10-D)", eight_schools, 10
        ),
        "logreg": Target(
            "logreg",
            f"logistic regression, breast cancer ({X.shape[0]} x {p}, w ~ N(0, 1))",
            logreg,
            p,
            notes={"n_obs": int(X.shape[0]), "n_coef": int(p)},
        ),
    }


TARGET_NAMES = ("ill_gauss", "std_gauss", "eight_schools", "logreg")
