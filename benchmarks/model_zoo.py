#!/usr/bin/env python
"""Shapes of posterior that the benchmark targets do not have, at every kernel's defaults,
next to NumPyro's NUTS: heavy tails, a density that is infinite at its bounds, a scale with
a Cauchy prior, a horseshoe regression, Neal's funnel, an LKJ correlation matrix and a
simplex. Each model has a statistic whose truth is known exactly or is NUTS's; the table says
what each kernel's run gives for it, how well the chains mixed and what the self-check said
(``docs/troubleshooting.md``). It is a check for silent failures, not an efficiency table::

    python benchmarks/model_zoo.py                      # all models, all samplers, seed 0
    python benchmarks/model_zoo.py --models funnel --samplers esh nuts --seeds 0 1

4 chains x (1000 + 1000) draws, float64, ``init_to_uniform``; our kernels' chains
``vectorized``, NUTS's ``sequential`` (as in ``run_numpyro.py``). R-hat and ESS are the
yardstick's (``yardstick.ess_x_and_x2``: split R-hat and bulk ESS of ``x`` and ``x^2`` of the
unconstrained draws, the largest and the smallest over coordinates); no ``b2`` column, since
the Student-t's ``x^2`` has no variance and the other models have no exact second moments of
their unconstrained coordinates here. A kernel's warnings are
recorded, not shown. ``--out`` writes every row as JSON.
"""

import os
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402
from scipy import stats  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import esh_kernels.numpyro as ek  # noqa: E402
import runner  # noqa: E402
from targets import unconstrained_chains  # noqa: E402
from yardstick import ess_x_and_x2  # noqa: E402

SAMPLERS = {"nuts": NUTS, "adjusted_esh": ek.AdjustedESH, "esh": ek.ESH, "tuned_hmc": ek.TunedHMC}


def student_t():
    numpyro.sample("x", dist.StudentT(3.0, jnp.zeros(10), 1.0))


def beta_half():
    numpyro.sample("p", dist.Beta(0.5, 0.5))


_Y3 = np.array([0.5, -1.2, 2.0])


def cauchy_scale():
    s = numpyro.sample("s", dist.HalfCauchy(1.0))
    numpyro.sample("y", dist.Normal(0.0, s), obs=_Y3)


def _horseshoe_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 20))
    beta = np.zeros(20)
    beta[:3] = [3.0, -2.0, 1.5]
    return x, x @ beta + rng.normal(size=50)


_HS_X, _HS_Y = _horseshoe_data()


def horseshoe():
    tau = numpyro.sample("tau", dist.HalfCauchy(1.0))
    lam = numpyro.sample("lam", dist.HalfCauchy(jnp.ones(20)))
    b = numpyro.sample("b", dist.Normal(jnp.zeros(20), tau * lam))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    numpyro.sample("y", dist.Normal(_HS_X @ b, sigma), obs=_HS_Y)


def funnel():
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    numpyro.sample("z", dist.Normal(jnp.zeros(9), jnp.exp(v / 2.0)))


def _lkj_data():
    rng = np.random.default_rng(2)
    corr = np.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.0]])
    return rng.multivariate_normal(np.zeros(3), corr * np.outer([1.0, 2.0, 0.5], [1.0, 2.0, 0.5]), size=30)


_LKJ_Y = _lkj_data()


def lkj():
    chol = numpyro.sample("L", dist.LKJCholesky(3, 2.0))
    scale = numpyro.sample("scale", dist.HalfNormal(jnp.full(3, 2.0)))
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(3), scale_tril=scale[:, None] * chol), obs=_LKJ_Y)
    numpyro.deterministic("r01", (chol @ chol.T)[0, 1])


_COUNTS = np.array([3.0, 0.0, 12.0, 5.0, 1.0])


def dirichlet():
    p = numpyro.sample("p", dist.Dirichlet(jnp.full(5, 0.5)))
    numpyro.sample("y", dist.Multinomial(int(_COUNTS.sum()), p), obs=_COUNTS)


#: model, the scalar statistic read from the draws (name, function of the pooled samples),
#: and its exact quantiles (5%, 50%, 95%) where known (None: compare with NUTS's row)
MODELS = {
    "student_t": (student_t, "x[0]", lambda s: s["x"][:, 0], stats.t(3.0).ppf([0.05, 0.5, 0.95])),
    "beta_half": (beta_half, "p", lambda s: s["p"], stats.beta(0.5, 0.5).ppf([0.05, 0.5, 0.95])),
    "cauchy_scale": (cauchy_scale, "s", lambda s: s["s"], None),
    "horseshoe": (horseshoe, "tau", lambda s: s["tau"], None),
    "funnel": (funnel, "v", lambda s: s["v"], stats.norm(0.0, 3.0).ppf([0.05, 0.5, 0.95])),
    "lkj": (lkj, "r01", lambda s: s["r01"], None),
    "dirichlet": (dirichlet, "p[1]", lambda s: s["p"][:, 1],
                  stats.beta(0.5 + _COUNTS[1], (0.5 + _COUNTS).sum() - 0.5 - _COUNTS[1]).ppf([0.05, 0.5, 0.95])),
}


def run(model_name, sampler, seed):
    model, stat_name, stat, truth = MODELS[model_name]
    chain_method = "sequential" if sampler == "nuts" else "vectorized"
    mcmc = MCMC(SAMPLERS[sampler](model), num_warmup=1000, num_samples=1000, num_chains=4,
                chain_method=chain_method, progress_bar=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.time()
        mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging",))
        seconds = time.time() - start
    grouped = mcmc.get_samples(group_by_chain=True)
    ess = ess_x_and_x2(unconstrained_chains(model, mcmc))
    samples = {k: np.asarray(v) for k, v in grouped.items()}
    pooled = {k: v.reshape((-1,) + v.shape[2:]) for k, v in samples.items()}
    kernel = mcmc.sampler
    findings = getattr(kernel, "self_check_findings", [])
    return {
        "model": model_name, "sampler": sampler, "seed": seed, "seconds": round(seconds, 1),
        "rhat_max": float(max(np.nanmax(ess["rhat_x"]), np.nanmax(ess["rhat_x2"]))),
        "ess_min": ess["ess"],
        "divergences": int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum()),
        "statistic": stat_name,
        "quantiles": [float(q) for q in np.quantile(stat(pooled), [0.05, 0.5, 0.95])],
        "truth": None if truth is None else [float(q) for q in truth],
        "self_check": [symptom + (f" (chain {chain})" if chain >= 0 else "") for chain, symptom, _ in findings],
        "warnings": sorted({str(w.message) for w in caught}),
    }


def render(rows):
    lines = ["| model | sampler | seed | s | max R-hat of x, x^2 | min ESS of x, x^2 | divergences | statistic: 5% / 50% / 95% | truth | self-check |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        q = " / ".join(f"{v:.3g}" for v in r["quantiles"])
        t = " / ".join(f"{v:.3g}" for v in r["truth"]) if r["truth"] else "(NUTS's row)"
        lines.append(f"| {r['model']} | {r['sampler']} | {r['seed']} | {r['seconds']} | {r['rhat_max']:.3f} | "
                     f"{r['ess_min']:.0f} | {r['divergences']} | {r['statistic']}: {q} | {t} | "
                     f"{', '.join(r['self_check']) or 'silent'} |")
    return "\n".join(lines)


def main(argv=None):
    ap = runner.grid_parser(__doc__, "--models", MODELS, SAMPLERS)
    args = ap.parse_args(argv)
    cases = [(m, s, seed) for m in args.models for s in args.samplers for seed in args.seeds]
    runner.run_grid("model_zoo", argv, cases, run, render, args.out)


if __name__ == "__main__":
    main()
