#!/usr/bin/env python
"""Correlated posteriors of 51-150 dimensions, where ``dense_mass="auto"`` learns a dense
metric since 2026-12-06 (diagonal there before; ``esh_kernels.core.mass_matrix.AUTO_DENSE_MAX_DIM``,
``docs/esh_math.md`` §7.6). Regressions whose predictors are AR(1)-correlated across columns
(neighbouring columns at ``rho``), so the posterior is as correlated as the design::

    python benchmarks/wide_correlated.py                          # every target and sampler, seed 0
    python benchmarks/wide_correlated.py --dense-limit 50 --samplers adjusted_esh esh tuned_hmc

``--dense-limit`` sets ``AUTO_DENSE_MAX_DIM`` for the run (50 reproduces the kernels before
2026-12-06). 4 chains x (1000 + 1000) draws, float64, ``init_to_uniform``; our kernels'
chains ``vectorized``, NUTS's ``sequential`` (as in ``run_numpyro.py``). Everything is read on
the unconstrained draws (``targets.unconstrained_chains``). The headline is the yardstick's
(``yardstick.ess_x_and_x2``: min over coordinates of bulk ESS of ``x`` and ``x^2``), per 1000
gradients after warmup and with the warmup's gradients counted; beside it the gradients per
chain, warmup included, until ``b2_max < 0.01`` and stays below (``yardstick.gradients_to_b2``)
against the linear regressions' exact second moments (:func:`linear_regression_truth`; the
logistic regression has none: n.a.). "vs NUTS dense": the largest over coordinates of ``|mean -
mean of NUTS (dense_mass=True)| / its posterior sd``, same seed. ``--out`` writes every row as
JSON; ``--medians-of`` prints the table of medians over seeds of such files.
"""

import json
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import esh_kernels.core.mass_matrix as mass_matrix  # noqa: E402
import esh_kernels.numpyro as ek  # noqa: E402
import runner  # noqa: E402
from targets import unconstrained_chains  # noqa: E402
from yardstick import ess_x_and_x2, gradients_to_b2, median_not_reached, per_1k_grad  # noqa: E402

SAMPLERS = {
    "nuts": lambda m: NUTS(m),
    "nuts_dense": lambda m: NUTS(m, dense_mass=True),
    "adjusted_esh": ek.AdjustedESH,
    "esh": ek.ESH,
    "tuned_hmc": ek.TunedHMC,
}


def _ar1_design(n, d, rho, rng):
    """``n x d`` predictors, each column ``rho`` times the one before plus noise."""
    x = np.empty((n, d))
    x[:, 0] = rng.normal(size=n)
    for j in range(1, d):
        x[:, j] = rho * x[:, j - 1] + np.sqrt(1.0 - rho**2) * rng.normal(size=n)
    return x


def _linear_regression_data(d, n=400, rho=0.95, seed=0):
    rng = np.random.default_rng(seed)
    x = _ar1_design(n, d, rho, rng)
    return x, x @ (0.5 * rng.normal(size=d)) + rng.normal(size=n)


BETA_SCALE, SIGMA_SCALE = 10.0, 5.0


def linear_regression(d):
    """``y ~ N(X beta, sigma)``, ``beta ~ N(0, 10)``, ``sigma ~ HalfNormal(5)``: ``d + 1``
    dimensions, 400 rows."""
    x, y = (jnp.asarray(a) for a in _linear_regression_data(d))

    def model():
        beta = numpyro.sample("beta", dist.Normal(0.0, BETA_SCALE).expand([d]))
        sigma = numpyro.sample("sigma", dist.HalfNormal(SIGMA_SCALE))
        numpyro.sample("y", dist.Normal(x @ beta, sigma), obs=y)

    return model


def linear_regression_truth(d, grid=4001):
    """Exact ``(E[x^2], Var[x^2])`` of the unconstrained coordinates ``(beta, log sigma)`` of
    :func:`linear_regression`, by quadrature over ``s = log sigma``: given ``sigma`` the
    coefficients are Gaussian (mean ``m``, variances ``v`` from the design's SVD), so
    ``E[beta_i^2 | s] = m_i^2 + v_i`` and ``E[beta_i^4 | s] = m_i^4 + 6 m_i^2 v_i + 3 v_i^2``; the
    marginal ``p(s | y)`` is ``HalfNormal(sigma) sigma N(y; 0, sigma^2 I + 10^2 X X^T)``. The grid
    is refined around the mode (+-30 of the marginal's standard deviations)."""
    x, y = _linear_regression_data(d)
    u, sv, vt = np.linalg.svd(x, full_matrices=False)
    uy = u.T @ y
    rest = y @ y - uy @ uy  # the part of |y|^2 outside the design's column space
    n = x.shape[0]

    def log_post(s):
        var = np.exp(2 * s)[:, None]
        lam = var + BETA_SCALE**2 * sv**2
        quad = np.sum(uy**2 / lam, axis=1) + rest / var[:, 0]
        logdet = np.sum(np.log(lam), axis=1) + (n - sv.size) * 2 * s
        return -0.5 * (quad + logdet) - 0.5 * np.exp(2 * s) / SIGMA_SCALE**2 + s

    s = np.linspace(-8.0, 8.0, grid)
    lp = log_post(s)
    w = np.exp(lp - lp.max()); w /= w.sum()
    mean = w @ s; sd = np.sqrt(w @ (s - mean) ** 2)
    s = np.linspace(mean - 30 * sd, mean + 30 * sd, grid)
    lp = log_post(s)
    w = np.exp(lp - lp.max()); w /= w.sum()
    var = np.exp(2 * s)[:, None]
    c = 1.0 / (sv**2 / var + 1.0 / BETA_SCALE**2)  # (grid, d) posterior variances along V
    m = (c * sv * uy / var) @ vt  # (grid, d) conditional means
    v = c @ (vt**2)  # (grid, d) conditional variances of each beta_i
    ex2 = np.append(w @ (m**2 + v), w @ s**2)
    ex4 = np.append(w @ (m**4 + 6 * m**2 * v + 3 * v**2), w @ s**4)
    return ex2, ex4 - ex2**2


def logistic_regression(d=80, n=600, rho=0.9, seed=1):
    """``y ~ Bernoulli(logit = X beta)``, ``beta ~ N(0, 1)``: ``d`` dimensions (no exact truth:
    no ``b2``)."""
    rng = np.random.default_rng(seed)
    x = _ar1_design(n, d, rho, rng)
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-x @ (0.3 * rng.normal(size=d))))).astype(float)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def model():
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([d]))
        numpyro.sample("y", dist.Bernoulli(logits=x @ beta), obs=y)

    return model


#: name: (model builder, second-moment truth builder or None)
TARGETS = {
    "linreg_91": (lambda: linear_regression(90), lambda: linear_regression_truth(90)),
    "linreg_141": (lambda: linear_regression(140), lambda: linear_regression_truth(140)),
    "logreg_80": (logistic_regression, None),
}


def run(target, sampler, seed):
    build, truth = TARGETS[target]
    model = build()
    vectorized = sampler not in ("nuts", "nuts_dense")
    mcmc = MCMC(SAMPLERS[sampler](model), num_warmup=1000, num_samples=1000, num_chains=4,
                chain_method="vectorized" if vectorized else "sequential", progress_bar=False)
    key = jax.random.PRNGKey(seed)
    start = time.time()
    mcmc.warmup(key, extra_fields=("num_steps",), collect_warmup=True)
    warm_grads = float(np.sum(np.asarray(mcmc.get_extra_fields()["num_steps"], dtype=np.float64)))
    mcmc.run(mcmc.last_state.rng_key, extra_fields=("num_steps",))
    wall = time.time() - start
    steps = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"], dtype=np.float64)
    grads = float(np.sum(steps))
    draws = unconstrained_chains(model, mcmc)
    stats = ess_x_and_x2(draws)
    row = {
        "target": target, "sampler": sampler, "seed": seed,
        "dense_limit": mass_matrix.AUTO_DENSE_MAX_DIM if vectorized else None,
        "ess_per_1k": per_1k_grad(stats["ess"], grads),
        "ess_per_1k_with_warmup": per_1k_grad(stats["ess"], grads + warm_grads),
        "rhat_max": float(max(np.nanmax(stats["rhat_x"]), np.nanmax(stats["rhat_x2"]))),
        "grads_per_draw": grads / (4 * 1000),
        "wall_s": wall,
        "mean": draws.reshape(-1, draws.shape[-1]).mean(0).tolist(),
        "sd": draws.reshape(-1, draws.shape[-1]).std(0).tolist(),
    }
    if truth is not None:
        ex2, var_x2 = truth()
        to_b2, _, b2_end = gradients_to_b2(draws, steps, warm_grads / 4, ex2, var_x2)
        row.update(grads_to_b2=to_b2, b2_max=b2_end)
    if vectorized:
        scale = np.asarray(mcmc.last_state.adapt_state.scale)
        row["dense_chains"] = int(sum(bool(np.any(np.tril(s, -1) != 0)) for s in scale)) if scale.ndim == 3 else 0
    return row


def _b2_cells(row):
    """``grads to b2 < 0.01 | b2 max`` (``yardstick.gradients_to_b2``; n.r.: not reached in the
    run; n.a.: no truth)."""
    if "b2_max" not in row:
        return "n.a. | n.a."
    grads = row["grads_to_b2"]
    return f"{'n.r.' if grads is None else f'{grads:.0f}'} | {row['b2_max']:.2g}"


def _against_nuts_dense(row, rows):
    """The largest ``|mean - NUTS dense's mean| / its sd`` over coordinates, against the NUTS
    dense run of the same target and seed (None without one)."""
    for ref in rows:
        if ref["sampler"] == "nuts_dense" and (ref["target"], ref["seed"]) == (row["target"], row["seed"]):
            if ref is row:
                return None
            return float(np.max(np.abs(np.subtract(row["mean"], ref["mean"])) / np.asarray(ref["sd"])))
    return None


def render(rows):
    """One line per run."""
    lines = ["| target | sampler | dense limit | ESS of x, x^2 per 1000 grads (with warmup) | grads to b2 < 0.01 "
             "| b2 max | max R-hat | grads/draw | chains dense | vs NUTS dense | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        against = _against_nuts_dense(r, rows)
        lines.append(
            f"| {r['target']} | {r['sampler']} | {r['dense_limit'] or ''} | {r['ess_per_1k']:.3g} "
            f"({r['ess_per_1k_with_warmup']:.3g}) | {_b2_cells(r)} | {r['rhat_max']:.3f} | {r['grads_per_draw']:.1f} "
            f"| {r.get('dense_chains', '')} | {'' if against is None else f'{against:.2f}'} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def render_medians(rows):
    """One line per (target, sampler, dense limit) over its seeds: medians [min-max] of the
    headline after and with warmup and of the gradients to ``b2 < 0.01`` (n.r. counts as
    larger than any number, ``yardstick.median_not_reached``), the largest ``b2`` max, R-hat
    and "vs NUTS dense", the median gradients per draw and the dense chains of each seed."""
    order = {name: i for i, name in enumerate(TARGETS)}
    samplers = {name: i for i, name in enumerate(SAMPLERS)}
    groups = {}
    for r in rows:
        groups.setdefault((r["target"], r["sampler"], r["dense_limit"]), []).append(r)
    lines = ["| target | sampler | dense limit | ESS of x, x^2 per 1000 grads after warmup | with warmup "
             "| grads to b2 < 0.01 | b2 max | max R-hat | grads/draw | chains dense (per seed) | vs NUTS dense "
             "| seeds |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def spread(values):
        return f"{np.median(values):.3g} [{min(values):.3g}-{max(values):.3g}]"

    for key in sorted(groups, key=lambda k: (order[k[0]], samplers[k[1]], k[2] or 0)):
        g = sorted(groups[key], key=lambda r: r["seed"])
        against = [a for a in (_against_nuts_dense(r, rows) for r in g) if a is not None]
        if "b2_max" in g[0]:
            to_b2 = [r["grads_to_b2"] for r in g]
            reached = [v for v in to_b2 if v is not None]
            med = median_not_reached(to_b2)
            b2 = (f"{'n.r.' if med is None else f'{med:.0f}'} "
                  f"[{min(reached):.0f}-{'n.r.' if None in to_b2 else f'{max(reached):.0f}'}]"
                  if reached else "n.r.") + f" | {max(r['b2_max'] for r in g):.2g}"
        else:
            b2 = "n.a. | n.a."
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2] or ''} | {spread([r['ess_per_1k'] for r in g])} "
            f"| {spread([r['ess_per_1k_with_warmup'] for r in g])} | {b2} | {max(r['rhat_max'] for r in g):.3f} "
            f"| {np.median([r['grads_per_draw'] for r in g]):.1f} "
            f"| {'/'.join(str(r['dense_chains']) for r in g) if key[2] else ''} "
            f"| {f'{max(against):.2f}' if against else ''} | {','.join(str(r['seed']) for r in g)} |")
    return "\n".join(lines)


def main(argv=None):
    ap = runner.grid_parser(__doc__, "--targets", TARGETS, SAMPLERS)
    ap.add_argument("--dense-limit", type=int, default=None,
                    help="AUTO_DENSE_MAX_DIM for this run (50: the kernels before 2026-12-06)")
    ap.add_argument("--medians-of", nargs="+", default=None, metavar="JSON",
                    help="run nothing: print the table of medians over seeds of these --out files")
    args = ap.parse_args(argv)
    if args.medians_of:
        rows = [r for path in args.medians_of for r in json.load(open(path))["rows"]]
        print(render_medians(rows))
        return
    if args.dense_limit is not None:
        mass_matrix.AUTO_DENSE_MAX_DIM = args.dense_limit
    cases = [(t, s, seed) for t in args.targets for s in args.samplers for seed in args.seeds]
    runner.run_grid("wide_correlated", argv, cases, run, render, args.out)


if __name__ == "__main__":
    main()
