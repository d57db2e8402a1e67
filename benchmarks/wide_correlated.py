#!/usr/bin/env python
"""Correlated posteriors of 51-150 dimensions, where ``dense_mass="auto"`` learns a dense
metric since 2026-12-06 (diagonal there before; ``esh_kernels.core.mass_matrix.AUTO_DENSE_MAX_DIM``,
``docs/esh_math.md`` §7.6). Regressions whose predictors are AR(1)-correlated across columns
(neighbouring columns at ``rho``), so the posterior is as correlated as the design::

    python benchmarks/wide_correlated.py                          # every target and sampler, seed 0
    python benchmarks/wide_correlated.py --dense-limit 50 --samplers adjusted_esh esh tuned_hmc

``--dense-limit`` sets ``AUTO_DENSE_MAX_DIM`` for the run (50 reproduces the kernels before
2026-12-06). 4 chains x (1000 + 1000) draws, float64, ``init_to_uniform``; our kernels'
chains ``vectorized``, NUTS's ``sequential`` (as in ``run_numpyro.py``). The headline is the
yardstick's (``yardstick.ess_x_and_x2``: min over coordinates of bulk ESS of ``x`` and ``x^2``),
per 1000 gradients after warmup and with the warmup's gradients counted. "vs NUTS": the largest
over coordinates of ``|mean - mean of NUTS (dense_mass=True)| / its posterior sd`` (a check that
the runs agree, not a bias against a truth: there is no exact one). ``--out`` writes every row
as JSON.
"""

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
from yardstick import ess_x_and_x2, per_1k_grad  # noqa: E402

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


def linear_regression(d, n=400, rho=0.95, seed=0):
    """``y ~ N(X beta, sigma)``, ``beta ~ N(0, 10)``, ``sigma ~ HalfNormal(5)``: ``d + 1``
    dimensions."""
    rng = np.random.default_rng(seed)
    x = _ar1_design(n, d, rho, rng)
    y = x @ (0.5 * rng.normal(size=d)) + rng.normal(size=n)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def model():
        beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([d]))
        sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
        numpyro.sample("y", dist.Normal(x @ beta, sigma), obs=y)

    return model


def logistic_regression(d=80, n=600, rho=0.9, seed=1):
    """``y ~ Bernoulli(logit = X beta)``, ``beta ~ N(0, 1)``: ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    x = _ar1_design(n, d, rho, rng)
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-x @ (0.3 * rng.normal(size=d))))).astype(float)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def model():
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([d]))
        numpyro.sample("y", dist.Bernoulli(logits=x @ beta), obs=y)

    return model


TARGETS = {
    "linreg_91": lambda: linear_regression(90),
    "linreg_141": lambda: linear_regression(140),
    "logreg_80": logistic_regression,
}


def _flat(samples):
    """``(chains, draws, dim)`` of the constrained draws, sites in name order."""
    return np.concatenate([np.asarray(v).reshape(v.shape[0], v.shape[1], -1)
                           for _, v in sorted(samples.items())], axis=-1)


def run(target, sampler, seed):
    model = TARGETS[target]()
    vectorized = sampler not in ("nuts", "nuts_dense")
    mcmc = MCMC(SAMPLERS[sampler](model), num_warmup=1000, num_samples=1000, num_chains=4,
                chain_method="vectorized" if vectorized else "sequential", progress_bar=False)
    key = jax.random.PRNGKey(seed)
    start = time.time()
    mcmc.warmup(key, extra_fields=("num_steps",), collect_warmup=True)
    warm_grads = float(np.sum(np.asarray(mcmc.get_extra_fields()["num_steps"], dtype=np.float64)))
    mcmc.run(mcmc.last_state.rng_key, extra_fields=("num_steps",))
    wall = time.time() - start
    grads = float(np.sum(np.asarray(mcmc.get_extra_fields()["num_steps"], dtype=np.float64)))
    draws = _flat(mcmc.get_samples(group_by_chain=True))
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
    if vectorized:
        scale = np.asarray(mcmc.last_state.adapt_state.scale)
        row["dense_chains"] = int(sum(bool(np.any(np.tril(s, -1) != 0)) for s in scale)) if scale.ndim == 3 else 0
    return row


def render(rows):
    ref = {r["target"]: r for r in rows if r["sampler"] == "nuts_dense"}
    lines = ["| target | sampler | dense limit | ESS of x, x^2 per 1000 grads (with warmup) | max R-hat "
             "| grads/draw | chains dense | vs NUTS dense | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        against = ""
        if r["target"] in ref and r is not ref[r["target"]]:
            nuts = ref[r["target"]]
            z = np.abs(np.subtract(r["mean"], nuts["mean"])) / np.asarray(nuts["sd"])
            against = f"{z.max():.2f}"
        lines.append(
            f"| {r['target']} | {r['sampler']} | {r['dense_limit'] or ''} | {r['ess_per_1k']:.3g} "
            f"({r['ess_per_1k_with_warmup']:.3g}) | {r['rhat_max']:.3f} | {r['grads_per_draw']:.1f} "
            f"| {r.get('dense_chains', '')} | {against} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = runner.grid_parser(__doc__, "--targets", TARGETS, SAMPLERS)
    ap.add_argument("--dense-limit", type=int, default=None,
                    help="AUTO_DENSE_MAX_DIM for this run (50: the kernels before 2026-12-06)")
    args = ap.parse_args(argv)
    if args.dense_limit is not None:
        mass_matrix.AUTO_DENSE_MAX_DIM = args.dense_limit
    cases = [(t, s, seed) for t in args.targets for s in args.samplers for seed in args.seeds]
    runner.run_grid("wide_correlated", argv, cases, run, render, args.out)


if __name__ == "__main__":
    main()
