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


def raw_moment_z(draws, m1, m2, m4):
    """z-scores of the mean and of the mean of ``x^2`` of scalar draws ``(chains, n)``
    against the target's raw moments ``E[x] = m1``, ``E[x^2] = m2``, ``E[x^4] = m4``, with
    standard errors from the bulk ESS of ``x`` and of ``x^2`` (ArviZ). Returns
    ``(mean_z, second_z)``."""
    import arviz as az

    draws = np.asarray(draws, dtype=np.float64)
    ess_x, ess_x2 = float(az.ess(draws)), float(az.ess(draws**2))
    mean_z = (draws.mean() - m1) / np.sqrt((m2 - m1**2) / ess_x)
    second_z = (np.mean(draws**2) - m2) / np.sqrt((m4 - m2**2) / ess_x2)
    return mean_z, second_z


#: raw moments E[x], E[x^2], E[x^4] of Gamma(3, rate 2) (E[x^n] = Gamma(3 + n) / (Gamma(3) 2^n)):
#: a skewed, constrained 1-D target
GAMMA_3_2_MOMENTS = (1.5, 3.0, 22.5)
