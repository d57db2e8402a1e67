"""The ESH paper's sample-quality metrics (esh_math.md §9.3, §9.4), in numpy float64.

* :func:`median_bandwidth`, :func:`gaussian_kernel`, :class:`MMD`: the unbiased squared
  Maximum Mean Discrepancy between ``n`` chain states (one per chain) and ``m`` exact draws
  from the target, with the paper's median-heuristic Gaussian kernel and a bootstrap 95%
  interval over the per-chain terms.
* :func:`paper_ess`: the paper's ESS of one chain (Hoffman & Gelman 2014 style, on the
  standardised features ``x`` and ``x^2`` with the true moments, no re-centring).
* :func:`states_at_budgets`: the state each chain holds after a given number of gradient
  evaluations, for the MMD-vs-gradients curves.
"""

import numpy as np

_CHUNK = 2048


def squared_distances(a, b):
    """``|a_i - b_j|^2`` for ``a (n, d)``, ``b (m, d)``; clipped at 0 against rounding."""
    d2 = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def median_bandwidth(y):
    """The paper's ``bw``: the median of the squared pairwise distances over all ``m^2``
    ordered pairs of the reference draws ``y (m, d)``, the zero diagonal included."""
    y = np.asarray(y, dtype=np.float64)
    d2 = np.concatenate([squared_distances(y[i:i + _CHUNK], y).ravel() for i in range(0, len(y), _CHUNK)])
    return float(np.median(d2))


def gaussian_kernel(d2, bw):
    """``k(a, b) = exp(-|a - b|^2 / (2 bw)) / sqrt(2 pi bw)`` from squared distances."""
    return np.exp(-d2 / (2.0 * bw)) / np.sqrt(2.0 * np.pi * bw)


class MMD:
    """Unbiased MMD^2 against fixed reference draws ``y (m, d)`` (already whitened where
    the paper whitens). The bandwidth and the ``y``-``y`` term are computed once.

    For chain states ``x (n, d)``::

        c_i   = mean_{j<l} k(y_j, y_l) + sum_{j != i} k(x_i, x_j) / (n - 1)
                - 2 mean_m k(x_i, y_m)
        MMD^2 = mean_i c_i

    which is the unbiased U-statistic (its expectation is the population MMD^2, 0 when the
    states are exact independent draws; it can be negative). The 95% interval bootstraps
    the mean of the ``c_i``.
    """

    def __init__(self, y, bandwidth=None):
        self.y = np.asarray(y, dtype=np.float64)
        self.bw = median_bandwidth(self.y) if bandwidth is None else float(bandwidth)
        m = len(self.y)
        total = 0.0
        for i in range(0, m, _CHUNK):
            total += gaussian_kernel(squared_distances(self.y[i:i + _CHUNK], self.y), self.bw).sum()
        diag = m * gaussian_kernel(0.0, self.bw)
        self.kyy = (total - diag) / (m * (m - 1))  # mean over pairs j != l (= over j < l)

    def terms(self, x):
        """The per-chain terms ``c_i`` for states ``x (n, d)``, ``n >= 2``."""
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        kxx = gaussian_kernel(squared_distances(x, x), self.bw)
        np.fill_diagonal(kxx, 0.0)
        kxy = gaussian_kernel(squared_distances(x, self.y), self.bw).mean(1)
        return self.kyy + kxx.sum(1) / (n - 1) - 2.0 * kxy

    def __call__(self, x, rng=None, n_boot=1000):
        """``(mmd2, lo, hi)``: the estimate and a bootstrap 95% interval (``lo = hi =
        nan`` without ``rng``)."""
        c = self.terms(x)
        est = float(c.mean())
        if rng is None:
            return est, float("nan"), float("nan")
        boots = c[rng.integers(0, len(c), size=(n_boot, len(c)))].mean(1)
        lo, hi = np.percentile(boots, [2.5, 97.5])
        return est, float(lo), float(hi)


def paper_ess(chain, true_mean, true_var, true_scale, threshold=0.05):
    """The paper's ESS of one chain ``(T, d)`` (esh_math.md §9.4), min over features.

    Features ``f_t = [(x_t - mu) / s_1, (x_t^2 - true_var) / s_2]`` (``2d`` of them);
    autocovariance without re-centring ``A_s = mean_t f_t f_{t+s}`` for ``s = 0..T-2``;
    the sum runs over lags ``1..`` up to (excluding) the first lag with ``A_s <= 0.05``,
    each tapered by ``1 - s/(T-1)``; ``ESS = T / (1 + 2 sum)``. Returns the minimum over
    the features (divide by the chain's gradient evaluations for ESS per gradient).
    """
    x = np.asarray(chain, dtype=np.float64)
    T = x.shape[0]
    if T < 3:
        return float("nan")
    f = np.concatenate([(x - true_mean) / true_scale[0], (x**2 - true_var) / true_scale[1]], axis=1)
    n_fft = 1 << (2 * T - 1).bit_length()
    spec = np.fft.rfft(f, n=n_fft, axis=0)
    acov = np.fft.irfft(spec * np.conj(spec), n=n_fft, axis=0)[: T - 1]  # (T-1, 2d)
    acov /= (T - np.arange(T - 1))[:, None]  # mean over the T - s available products
    lags = acov[1:]
    keep = np.cumprod(lags > threshold, axis=0)
    taper = (1.0 - np.arange(1, T - 1) / (T - 1))[:, None]
    s = np.sum(lags * keep * taper, axis=0)
    return float(np.min(T / (1.0 + 2.0 * s)))


def states_at_budgets(states, grads, budgets):
    """The state each chain holds after each gradient budget.

    ``states (C, T, d)``: recorded states; ``grads (C, T)``: non-decreasing cumulative
    gradient evaluations at which each state became the chain's state (``grads[:, 0]``
    is usually 0, the initial state). For each budget ``g``, chain ``c`` holds the last
    state with ``grads[c, t] <= g``. Returns ``(B, C, d)`` states and a ``(B,)`` bool that
    is False where some chain had no state yet within the budget (that budget's row then
    holds the chain's first recorded state and should not be reported).
    """
    states = np.asarray(states)
    grads = np.asarray(grads)
    C = states.shape[0]
    out, ok = [], []
    for g in budgets:
        idx = np.array([np.searchsorted(grads[c], g, side="right") - 1 for c in range(C)])
        ok.append(bool(np.all(idx >= 0)))
        out.append(states[np.arange(C), np.maximum(idx, 0)])
    return np.stack(out), np.array(ok)
