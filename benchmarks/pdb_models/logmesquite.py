"""``logmesquite.stan``: log weight of mesquite bushes regressed on the logs of the
bushes' measurements, flat priors.

Stan's transformed data are computed here from the data: the logs of ``weight``,
``diam1``, ``diam2``, ``canopy_height``, ``total_height`` and ``density``. Then
``log_weight ~ normal(beta[1] + beta[2] log_diam1 + beta[3] log_diam2
+ beta[4] log_canopy_height + beta[5] log_total_height + beta[6] log_density
+ beta[7] group, sigma)`` (``group`` untransformed), written as a design matrix
``X @ beta`` with a column of ones first. ``beta`` (7) and ``sigma > 0`` with Stan's
implicit improper uniform priors (``ImproperUniform``).
"""

import numpy as np


def _design(data):
    """``(X, log_weight)``: the ``(N, 7)`` design matrix in the Stan program's order."""
    col = {k: np.asarray(data[k], dtype=np.float64)
           for k in ("weight", "diam1", "diam2", "canopy_height", "total_height", "density", "group")}
    X = np.stack([np.ones_like(col["weight"]), np.log(col["diam1"]), np.log(col["diam2"]),
                  np.log(col["canopy_height"]), np.log(col["total_height"]),
                  np.log(col["density"]), col["group"]], axis=1)
    return X, np.log(col["weight"])


def numpyro_model(data, design=_design):
    """The model on ``design(data) -> (X, log_weight)`` (``logmesquite_logvas`` passes its
    own design)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    X, log_weight = (jnp.asarray(a, dtype=jnp.float64) for a in design(data))

    def model():
        beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), (7,)))
        sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        numpyro.sample("log_weight", dist.Normal(X @ beta, sigma).to_event(1), obs=log_weight)

    return model


def pyro_model(data, design=_design):
    """As :func:`numpyro_model`, in Pyro."""
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.distributions import constraints

    X, log_weight = (torch.as_tensor(a) for a in design(data))

    def model():
        beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (7,)))
        sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        pyro.sample("log_weight", dist.Normal(X @ beta, sigma).to_event(1), obs=log_weight)

    return model
