#!/usr/bin/env python
"""Which coordinates carry ``ESH``'s discretisation bias, and can the draws predict it?

``ESH`` is unadjusted: its step size is tuned for an energy error per dimension
(``desired_energy_var``, ``docs/esh_math.md`` §7.1), which bounds the second-moment bias
``b2`` of a Gaussian (Robnik & Seljak 2024, arXiv:2412.08876). Where a scale parameter is
coupled to many coordinates (``hier_500``'s ``tau``, a regression's ``log sigma`` under a
dense metric) the bias gathers in that one coordinate, far above what the energy error per
dimension says: ``b2`` 0.10 on ``hier_500``, 0.016 and 0.04 on ``wide_correlated.py``'s
regressions, with every other coordinate within budget.

This script measures, per coordinate ``i``, the standardized bias of ``E[x_i^2]``,
``obs_i = (mean(x_i^2) - E[x_i^2]) / sd(x_i^2)`` (``b2_i = obs_i^2``, exact truth), beside the
predictor::

    pred_i = Cov(x_i^2, G - 2 T) / sd(x_i^2),   G = |L^T grad U|^2,   T = tr(L^T Hess U L)

over the draws, in the whitened frame of the adapted metric ``M^{-1} = L L^T``: the guard's own
statistic ``S = G - 2T`` (``esh_kernels.core.bias_guard.shadow_statistic``: the gradient at each
draw, and a forward difference of it along a Rademacher probe, which is exact for a diagonal
Hessian; the results file was made at 6b33288 with an exact Hessian-vector product instead). The form is the leading term of a leapfrog integrator's shadow
density, ``exp(-U) (1 + c eps^2 (|grad U|^2 - 2 tr Hess U))``, which tilts every expectation by
``c eps^2 Cov(f, G - 2T)``: on a Gaussian each coordinate tilts only itself, while a scale
parameter that sets the curvature of ``d`` other coordinates moves ``G`` and ``T`` by terms of
order ``d``. The script prints ``c_hat = obs_i / (eps^2 / d * pred_i)`` at the coordinate of
largest ``|obs|``: if one constant fits every target, the draws predict ``ESH``'s worst
coordinate and a step-size rule can bound it. 4 chains x (1000 + 2000), float64, ``PRNGKey(seed)``::

    python benchmarks/esh_bias_predictor.py --out benchmarks/results/esh_bias_predictor.json

Gaussians run at ``desired_energy_var=5e-3`` (10x the default) so that their bias stands above
the Monte Carlo noise; the others at the default ``5e-4``. Since the bias guard (``docs/esh_math.md``
§7.8) ``ESH`` shortens its step by this prediction, so a run now measures the guarded kernel;
``benchmarks/results/esh_bias_predictor.json`` measured the kernel before it (6b33288).
"""

import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from numpyro.infer import MCMC  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import esh_kernels.numpyro as ek  # noqa: E402
from esh_kernels.core.bias_guard import shadow_statistic  # noqa: E402
import runner  # noqa: E402
import wide_correlated  # noqa: E402
from targets import make_targets, second_moment_truth, unconstrained_chains  # noqa: E402
from yardstick import ess_x_and_x2  # noqa: E402

def _targets():
    """name: (model builder, truth builder ``() -> (E[x^2], Var[x^2])``, desired_energy_var)."""
    zoo = make_targets()

    def from_zoo(name):
        return lambda: zoo[name].model, lambda: second_moment_truth(zoo[name])[:2]

    def regression(d):
        return lambda: wide_correlated.linear_regression(d), lambda: wide_correlated.linear_regression_truth(d)

    return {
        "std_gauss": (*from_zoo("std_gauss"), 5e-3),
        "ill_gauss": (*from_zoo("ill_gauss"), 5e-3),
        "hier_500": (*from_zoo("hier_500"), 5e-4),
        "linreg_46": (*regression(45), 5e-4),
        "linreg_91": (*regression(90), 5e-4),
        "linreg_141": (*regression(140), 5e-4),
    }


TARGETS = _targets()


def shadow_at_draws(potential, x, scale, seed=0):
    """The guard's statistic ``S`` (``esh_kernels.core.bias_guard.shadow_statistic``) at each
    draw of ``x`` (``(n, d)``) under the metric ``L = scale`` (chain 0's: every chain's metric
    reads alike here), each with its own Rademacher probe."""
    value_and_grad = jax.value_and_grad(potential)
    normals = jax.random.normal(jax.random.PRNGKey(seed), x.shape, dtype=jnp.float64)
    one = jax.vmap(lambda xi, ni: shadow_statistic(xi, value_and_grad(xi)[1], jnp.asarray(scale), value_and_grad, ni))
    return np.asarray(jax.jit(one)(jnp.asarray(x), normals))


def run(name, seed):
    build, truth, vare = TARGETS[name]
    model = build()
    mcmc = MCMC(ek.ESH(model, desired_energy_var=vare), num_warmup=1000, num_samples=2000, num_chains=4,
                chain_method="vectorized", progress_bar=False)
    start = time.time()
    mcmc.run(jax.random.PRNGKey(seed))
    wall = time.time() - start
    draws = unconstrained_chains(model, mcmc)
    x = draws.reshape(-1, draws.shape[-1])
    d = x.shape[1]
    init = initialize_model(jax.random.PRNGKey(0), model)
    _, unravel = ravel_pytree(init.param_info.z)
    s = shadow_at_draws(lambda v: init.potential_fn(unravel(v)), x,
                        np.asarray(mcmc.last_state.adapt_state.scale)[0])
    ex2, var_x2 = (np.asarray(a, dtype=np.float64) for a in truth())
    f = x**2
    pred = ((f - f.mean(0)) * (s - s.mean())[:, None]).mean(0) / np.sqrt(var_x2)
    obs = (f.mean(0) - ex2) / np.sqrt(var_x2)
    noise = 1.0 / np.sqrt(ess_x_and_x2(draws)["ess_x2"])
    eps = float(np.mean(np.asarray(mcmc.last_state.adapt_state.step_size)))
    worst, loudest = int(np.argmax(np.abs(obs))), int(np.argmax(np.abs(pred)))
    scale = eps**2 / d
    return {
        "target": name, "seed": seed, "d": d, "desired_energy_var": vare, "step_size": eps,
        "worst": worst, "obs_worst": float(obs[worst]), "noise_worst": float(noise[worst]),
        "pred_worst": float(pred[worst]), "c_hat_worst": float(obs[worst] / (scale * pred[worst])),
        "loudest": loudest, "obs_loudest": float(obs[loudest]), "pred_loudest": float(pred[loudest]),
        "pred_median": float(np.median(np.abs(pred))), "obs_median": float(np.median(np.abs(obs))),
        "b2_max": float(np.max(obs**2)), "wall_s": wall,
    }


COLUMNS = ("target", "seed", "d", "desired_energy_var", "step", "worst coord: obs (noise)", "its pred", "c_hat",
           "largest pred (coord, its obs)", "median abs pred", "b2 max")


def _cells(r):
    return (r["target"], str(r["seed"]), str(r["d"]), f"{r['desired_energy_var']:g}", f"{r['step_size']:.2f}",
            f"{r['worst']}: {r['obs_worst']:+.3f} ({r['noise_worst']:.3f})", f"{r['pred_worst']:+.2f}",
            f"{r['c_hat_worst']:.3f}", f"{r['pred_loudest']:+.2f} ({r['loudest']}, {r['obs_loudest']:+.3f})",
            f"{r['pred_median']:.2f}", f"{r['b2_max']:.4f}")


def render(rows):
    table = [COLUMNS, ("---",) * len(COLUMNS)] + [_cells(r) for r in rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in table)


def main(argv=None):
    args = runner.grid_parser(__doc__, "--targets", TARGETS, {"esh": ek.ESH}).parse_args(argv)
    cases = [(name, seed) for name in args.targets for seed in args.seeds]
    runner.run_grid("esh_bias_predictor", argv, cases, run, render, args.out)


if __name__ == "__main__":
    main()
