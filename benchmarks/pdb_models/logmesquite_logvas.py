"""``logmesquite_logvas.stan``: log weight of mesquite bushes regressed on log canopy
volume, area and shape and other log measurements, flat priors.

Stan's transformed data are computed here from the data: ``log_weight = log(weight)``,
``log_canopy_volume = log(diam1 * diam2 * canopy_height)``,
``log_canopy_area = log(diam1 * diam2)``, ``log_canopy_shape = log(diam1 / diam2)``,
``log_total_height = log(total_height)``, ``log_density = log(density)``. Then
``log_weight ~ normal(beta[1] + beta[2] log_canopy_volume + beta[3] log_canopy_area
+ beta[4] log_canopy_shape + beta[5] log_total_height + beta[6] log_density
+ beta[7] group, sigma)`` (``group`` untransformed), written as a design matrix
``X @ beta`` with a column of ones first. ``beta`` (7) and ``sigma > 0`` with Stan's
implicit improper uniform priors (``ImproperUniform``). Volume and area share
``diam1 * diam2``, so ``beta[2]`` and ``beta[3]`` are correlated at about -0.95.
"""

import numpy as np

from pdb_models import logmesquite


def _design(data):
    """``(X, log_weight)``: the ``(N, 7)`` design matrix in the Stan program's order."""
    col = {k: np.asarray(data[k], dtype=np.float64)
           for k in ("weight", "diam1", "diam2", "canopy_height", "total_height", "density", "group")}
    d1, d2 = col["diam1"], col["diam2"]
    X = np.stack([np.ones_like(d1), np.log(d1 * d2 * col["canopy_height"]), np.log(d1 * d2),
                  np.log(d1 / d2), np.log(col["total_height"]), np.log(col["density"]),
                  col["group"]], axis=1)
    return X, np.log(col["weight"])


def numpyro_model(data):
    return logmesquite.numpyro_model(data, design=_design)


def pyro_model(data):
    return logmesquite.pyro_model(data, design=_design)
