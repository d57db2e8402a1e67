"""The verdict on a run against posteriordb reference draws, with stated thresholds.

For every reference parameter (constrained scale) the run's draws and the reference's are
compared statistic by statistic; each difference is divided by its Monte Carlo standard
error, the run's and the reference's combined (``sqrt(mcse_run^2 + mcse_ref^2)``, ArviZ's
``mcse`` of each set of draws: method ``mean``, ``sd`` or ``quantile``):

* mean, and the 5%, 50% and 95% quantiles: ``|z| <= Z_MAX``;
* standard deviation: ``|z| <= Z_MAX`` as well; the sd ratio (run / reference) is
  reported next to it (a ratio alone would fail honest short runs of wide posteriors);
* over all parameters: max rank-normalised split R-hat ``< RHAT_MAX`` and min bulk ESS
  ``>= ESS_MIN`` (ArviZ), so that a stuck chain, whose huge MCSE would let every ``z``
  pass, fails here.

``Z_MAX = 4``: with about 40 comparisons per posterior, an unbiased run with honest MCSE
fails one by chance with probability ~0.3%. The verdict is ``pass`` when every check holds,
else ``fail`` with the failed checks named.
"""

import numpy as np

Z_MAX = 4.0
RHAT_MAX = 1.01
ESS_MIN = 100.0
QUANTILES = (0.05, 0.5, 0.95)


def _az():
    import arviz as az

    return az


def _mcse(x, method, prob=None):
    az = _az()
    kw = {} if prob is None else {"prob": prob}
    return float(np.asarray(az.mcse(np.asarray(x, dtype=np.float64), method=method, **kw)))


def _stats(x):
    """Point estimates and MCSEs of one parameter's ``(chains, draws)`` array."""
    flat = np.asarray(x, dtype=np.float64).ravel()
    out = {"mean": (float(np.mean(flat)), _mcse(x, "mean")),
           "sd": (float(np.std(flat, ddof=1)), _mcse(x, "sd"))}
    for p in QUANTILES:
        out[f"q{int(round(100 * p)):02d}"] = (float(np.quantile(flat, p)), _mcse(x, "quantile", p))
    return out


def judge(draws, reference):
    """Compare ``draws`` and ``reference`` (both ``{flat name: (chains, draws) array}``,
    the run's keys a superset of the reference's). Returns a dict: ``verdict``
    (``"pass"``/``"fail"``), ``failed`` (list of ``"<param> <stat>: ..."`` strings),
    ``rhat_max``, ``ess_bulk_min`` (and the parameter where each is worst), ``z_max``
    (largest ``|z|`` and where), ``sd_ratio_min``/``sd_ratio_max`` and per-parameter
    ``params``."""
    az = _az()
    failed, params = [], {}
    rhat, ess = {}, {}
    z_worst = (0.0, None)
    for name, ref in reference.items():
        x = np.asarray(draws[name], dtype=np.float64)
        rhat[name] = float(np.asarray(az.rhat(x)))
        ess[name] = float(np.asarray(az.ess(x, method="bulk")))
        run_s, ref_s = _stats(x), _stats(ref)
        rec = {"rhat": rhat[name], "ess_bulk": ess[name]}
        for stat, (v, m) in run_s.items():
            rv, rm = ref_s[stat]
            se = float(np.hypot(m, rm))
            z = (v - rv) / se if se > 0 else (0.0 if v == rv else np.inf)
            rec[stat] = {"run": v, "ref": rv, "z": z}
            if abs(z) > abs(z_worst[0]):
                z_worst = (z, f"{name} {stat}")
            if not abs(z) <= Z_MAX:
                failed.append(f"{name} {stat}: {v:.4g} vs reference {rv:.4g} (z = {z:+.1f})")
        rec["sd_ratio"] = run_s["sd"][0] / ref_s["sd"][0]
        params[name] = rec
    worst_rhat = max(rhat, key=rhat.get)
    worst_ess = min(ess, key=ess.get)
    if not rhat[worst_rhat] < RHAT_MAX:
        failed.append(f"R-hat {rhat[worst_rhat]:.3f} >= {RHAT_MAX} ({worst_rhat})")
    if not ess[worst_ess] >= ESS_MIN:
        failed.append(f"bulk ESS {ess[worst_ess]:.0f} < {ESS_MIN:.0f} ({worst_ess})")
    ratios = [p["sd_ratio"] for p in params.values()]
    return {
        "verdict": "fail" if failed else "pass",
        "failed": failed,
        "rhat_max": rhat[worst_rhat],
        "rhat_max_param": worst_rhat,
        "ess_bulk_min": ess[worst_ess],
        "ess_bulk_min_param": worst_ess,
        "z_max": float(abs(z_worst[0])),
        "z_max_at": z_worst[1],
        "sd_ratio_min": float(min(ratios)),
        "sd_ratio_max": float(max(ratios)),
        "thresholds": {"z_max": Z_MAX, "rhat_max": RHAT_MAX, "ess_bulk_min": ESS_MIN},
        "params": params,
    }
