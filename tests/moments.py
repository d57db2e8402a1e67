"""Monte Carlo checks shared by the tests: z-scores of sample moments against known truth,
with standard errors from the effective sample size."""

import numpy as np


def gaussian_moment_z(flat, sd, ess_x, ess_x2):
    """z-scores of the means and second moments of ``flat`` ``(n, d)``, draws of
    ``N(0, diag(sd^2))``, given per-coordinate ESS of ``x`` and of ``x^2``: the mean's
    standard error is ``sd / sqrt(ess_x)``; ``E[x^2] = sd^2`` with ``Var[x^2] = 2 sd^4``, so
    its standard error is ``sqrt(2) sd^2 / sqrt(ess_x2)``. Returns ``(mean_z, second_z)``."""
    mean_z = flat.mean(0) / (sd / np.sqrt(ess_x))
    second_z = (np.mean(flat**2, 0) - sd**2) / (np.sqrt(2.0) * sd**2 / np.sqrt(ess_x2))
    return mean_z, second_z
