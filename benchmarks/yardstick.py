"""The field's yardstick, written once for every benchmark script.

* **Headline**: the minimum over coordinates of ArviZ's rank-normalised bulk ESS of ``x``
  *and* of ``x^2``, over all chains (:func:`ess_x_and_x2`). ``x`` alone rewards
  trajectories that make ``x`` antithetic (ESS per draw above 1) while ``x^2`` hardly moves,
  as a half-period trajectory does on a Gaussian; the minimum over both does not.
  A run with more chains than the others is read in groups of as many chains as they run
  (:func:`ess_by_groups`).
* **Gradients to b2 < 0.01** (:func:`gradients_to_b2`): the MCLMC and MAMS papers' measure
  of the second-moment bias, warmup gradients included; :func:`second_moments_by_chain` reads
  it, and ``b2`` at the end, chain by chain (the Pyro tables, whose rows are single chains).
"""

import numpy as np

from targets import second_moment_bias


def median_not_reached(values):
    """Median of ``values`` where ``None`` means "not reached" and counts as larger than any
    number: the median of ``[10, None, None]`` is ``None``, of ``[10, 12, None]`` 12.0.
    ``None`` when every value is ``None``."""
    key = np.array([np.inf if v is None else v for v in values], dtype=np.float64)
    med = float(np.median(key))
    return med if np.isfinite(med) else None


def per_1k_grad(ess, grads):
    """``1000 * ess / grads`` (NaN without gradients): every "ESS per 1000 gradients" cell."""
    return 1000.0 * ess / grads if grads > 0 else float("nan")


def ess_x_and_x2(draws):
    """Bulk ESS and split R-hat of ``x`` and ``x^2`` for ``draws`` of shape
    ``(chains, draws, dim)``. Returns a dict: ``ess_x``, ``ess_x2``, ``rhat_x``, ``rhat_x2``
    (arrays over coordinates; R-hat is NaN with one chain), ``ess`` (the headline: min over
    both), ``stat`` (``"x"`` or ``"x^2"``, which one is slower) and ``coord`` (where)."""
    import arviz as az

    draws = np.asarray(draws, dtype=np.float64)
    ds = az.convert_to_dataset({"x": draws, "x2": draws**2})
    bulk = az.ess(ds, method="bulk")
    ess_x, ess_x2 = np.asarray(bulk["x"].values), np.asarray(bulk["x2"].values)
    if draws.shape[0] > 1:
        rhat = az.rhat(ds)
        rhat_x, rhat_x2 = np.asarray(rhat["x"].values), np.asarray(rhat["x2"].values)
    else:
        rhat_x = rhat_x2 = np.full(draws.shape[-1], np.nan)
    x_slower = np.min(ess_x) <= np.min(ess_x2)
    return {
        "ess_x": ess_x,
        "ess_x2": ess_x2,
        "rhat_x": rhat_x,
        "rhat_x2": rhat_x2,
        "ess": float(min(np.min(ess_x), np.min(ess_x2))),
        "stat": "x" if x_slower else "x^2",
        "coord": int(np.argmin(ess_x) if x_slower else np.argmin(ess_x2)),
    }


def ess_by_groups(draws, grads_sample_per_chain, grads_warmup_per_chain, group):
    """The headline for a run with more chains than the others (ChEES's 64, LAPS's 128):
    the chains split into consecutive groups of ``group`` (the chain count every other
    sampler runs), :func:`ess_x_and_x2` of each group alone, per 1000 of that group's
    gradients.

    Why: the headline is a *minimum* over coordinates of ESS estimates, and the estimates'
    noise shrinks with the number of draws, so the same sampler looks better with more
    chains (TunedHMC at fixed settings on the 100-D standard Gaussian: 134 per 1000
    gradients from 4 chains, 165 from 64; measured 2026-12-05). :func:`gradients_to_b2`
    already reads 4 chains for every sampler for the same reason.

    Returns a dict of per-group arrays: ``ess``, ``ess_x``, ``ess_x2`` (each group's
    minimum over coordinates), ``per_1k`` and ``per_1k_with_warmup`` (post-warmup
    gradients of the group alone, then with its warmup gradients); the callers report the
    median over groups (``per_1k_x``: ``x`` alone). ``grads_*_per_chain`` are ``(chains,)``; a trailing remainder of
    fewer than ``group`` chains is left out.
    """
    x = np.asarray(draws, dtype=np.float64)
    gs = np.broadcast_to(np.asarray(grads_sample_per_chain, dtype=np.float64), x.shape[:1])
    gw = np.broadcast_to(np.asarray(grads_warmup_per_chain, dtype=np.float64), x.shape[:1])
    out = {k: [] for k in ("ess", "ess_x", "ess_x2", "per_1k", "per_1k_with_warmup", "per_1k_x")}
    for start in range(0, x.shape[0] - group + 1, group):
        chains = slice(start, start + group)
        y = ess_x_and_x2(x[chains])
        grads = float(np.sum(gs[chains]))
        out["ess"].append(y["ess"])
        out["ess_x"].append(float(np.min(y["ess_x"])))
        out["ess_x2"].append(float(np.min(y["ess_x2"])))
        out["per_1k"].append(per_1k_grad(y["ess"], grads))
        out["per_1k_with_warmup"].append(per_1k_grad(y["ess"], grads + float(np.sum(gw[chains]))))
        out["per_1k_x"].append(per_1k_grad(out["ess_x"][-1], grads))
    return {k: np.asarray(v) for k, v in out.items()}


B2_THRESHOLD = 0.01
"""The MCLMC / MAMS papers' yardstick: second-moment bias ``b2_max`` below 0.01."""


def gradients_to_b2(draws, grads_by_draw, grads_warmup_per_chain, ex2, var_x2,
                    threshold=B2_THRESHOLD, num_chains=4):
    """Gradient evaluations per chain, warmup included, until ``b2_max`` falls below
    ``threshold`` and stays there for the rest of the run.

    ``b2_max(n) = max_i (m_i(n) - E[x_i^2])^2 / Var[x_i^2]``, where ``m_i(n)`` is the mean of
    ``x_i^2`` over the first ``n`` post-warmup draws of the first ``num_chains`` chains
    pooled (the same number of chains for every sampler, so that a 64-chain ensemble is not
    credited with its extra chains). ``grads_by_draw`` is ``(chains, draws)`` (gradients each
    draw cost each chain); the count at draw ``n`` is ``grads_warmup_per_chain`` plus the
    mean over those chains of the gradients of draws ``1..n``.

    Returns ``(grads, draws_needed, b2_max_at_end)``; ``grads`` and ``draws_needed`` are
    ``None`` when ``b2_max`` is still at or above ``threshold`` at the end of the run.
    """
    x = np.asarray(draws, dtype=np.float64)[:num_chains]
    C, N, _ = x.shape
    m2 = np.cumsum(np.sum(x**2, axis=0), axis=0) / (C * np.arange(1, N + 1))[:, None]
    b2_max = np.max((m2 - np.asarray(ex2)) ** 2 / np.asarray(var_x2), axis=1)
    above = np.flatnonzero(b2_max >= threshold)
    if above.size and above[-1] == N - 1:
        return None, None, float(b2_max[-1])
    n = 0 if above.size == 0 else above[-1] + 1  # index of the first draw of the final run below
    g = np.broadcast_to(np.asarray(grads_by_draw, dtype=np.float64), (np.shape(draws)[0], N))[:num_chains]
    grads = float(grads_warmup_per_chain + np.mean(np.sum(g[:, : n + 1], axis=1)))
    return grads, int(n + 1), float(b2_max[-1])


def second_moments_by_chain(draws, grads_warmup_per_chain, grads_sample_per_chain, ex2, var_x2, ex2_mcse):
    """Second-moment bias with each chain of ``draws`` (``(C, N, D)``) read alone, against
    the truth ``E[x_i^2]`` (``ex2``), ``Var[x_i^2]`` and the truth's own Monte Carlo error.

    Per chain: ``b2_max`` at the end of the run; ``b2_excess``, the mean over coordinates of
    ``b2_i`` over what an unbiased chain's own Monte Carlo error gives on average
    (``1 / ESS(x_i^2)`` plus the truth's floor; about 1 without bias); and the gradients
    (warmup included) until ``b2_max < 0.01`` and stays there (:func:`gradients_to_b2`, the
    chain's sampling gradients spread evenly over its draws), None where not reached.
    Returns the medians over chains (:func:`median_not_reached`: ``grads_to_b2`` None where
    the median chain did not reach it), how many chains reached it, and the median of the chains' total gradients."""
    import arviz as az

    C, N, _ = draws.shape
    b2_max, excess, to_b2 = [], [], []
    for c in range(C):
        b2, floor = second_moment_bias(draws[c], ex2, var_x2, ex2_mcse)
        x2 = az.convert_to_dataset({"x2": draws[c : c + 1] ** 2})
        ess_x2 = np.asarray(az.ess(x2, method="mean")["x2"].values)
        b2_max.append(float(np.max(b2)))
        excess.append(float(np.mean(b2) / np.mean(1.0 / ess_x2 + floor)))
        g, _, _ = gradients_to_b2(draws[c : c + 1], grads_sample_per_chain[c] / N, grads_warmup_per_chain[c],
                                  ex2, var_x2, num_chains=1)
        to_b2.append(g)
    return {
        "b2_max": float(np.median(b2_max)),
        "b2_excess": float(np.median(excess)),
        "grads_to_b2": median_not_reached(to_b2),
        "b2_reached_chains": sum(g is not None for g in to_b2),
        "grads_per_chain_total": float(np.median(np.add(grads_warmup_per_chain, grads_sample_per_chain))),
    }
