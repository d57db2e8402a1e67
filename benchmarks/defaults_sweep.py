"""Sweep a kernel's trajectory-length factor and ``target_accept_prob`` on the
headline yardstick (min over coordinates of bulk ESS of ``x`` and ``x^2`` per 1000
gradients after warmup; ``yardstick.py``), 4 vectorized chains, 1000 + 1000, x64.

The table on ``docs/kernels/adjusted_esh.md`` ("How the defaults were chosen") was made
with it, for example::

    python benchmarks/defaults_sweep.py --factors 1.0 1.25 --accepts 0.7 \\
        --targets ill_gauss std_gauss eight_schools logreg hier_500 --seeds 0 1 2 \\
        --out defaults_sweep.json

``--kernel tuned_hmc`` sweeps ``TunedHMC``'s ``uturn_factor`` (``T = factor x`` the mean
U-turn time; a class attribute, set on a subclass here) instead of ``AdjustedESH``'s
``trajectory_factor`` (the table on ``docs/kernels/tuned_hmc.md``)::

    python benchmarks/defaults_sweep.py --kernel tuned_hmc --factors 0.5 0.75 \
        --accepts 0.7 0.8 --targets ill_gauss std_gauss eight_schools logreg --seeds 0 1

Each run prints one JSON line; ``--out`` collects them.
"""

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from numpyro.infer import MCMC  # noqa: E402

from esh_kernels.numpyro import AdjustedESH, TunedHMC  # noqa: E402
from targets import make_targets  # noqa: E402
from yardstick import ess_x_and_x2, per_1k_grad  # noqa: E402


def make_kernel(kind, model, factor, accept):
    """The kernel ``kind`` with its trajectory-length factor and target acceptance."""
    if kind == "adjusted_esh":
        return AdjustedESH(model, trajectory_factor=factor, target_accept_prob=accept)
    swept = type("SweptTunedHMC", (TunedHMC,), {"uturn_factor": factor})
    return swept(model, target_accept_prob=accept)


def run(target, factor, accept, seed, kind="adjusted_esh", num_warmup=1000, num_samples=1000,
        num_chains=4):
    kernel = make_kernel(kind, target.model, factor, accept)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=False, postprocess_fn=lambda z: z)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(jax.random.PRNGKey(seed), extra_fields=("n_steps",))
    samples = mcmc.get_samples(group_by_chain=True)
    draws = np.asarray(jax.vmap(jax.vmap(lambda z: ravel_pytree(z)[0]))(samples))
    grads = float(np.sum(mcmc.get_extra_fields()["n_steps"]))
    y = ess_x_and_x2(draws)
    return dict(
        kernel=kind, target=target.name, factor=factor, accept=accept, seed=seed, ess=y["ess"],
        ess_x=float(np.min(y["ess_x"])), ess_x2=float(np.min(y["ess_x2"])),
        per1k=per_1k_grad(y["ess"], grads),
        rhat=float(max(np.max(y["rhat_x"]), np.max(y["rhat_x2"]))),
        grads_per_draw=grads / (draws.shape[0] * draws.shape[1]),
        seconds=time.perf_counter() - t0,
        mean_accept=float(np.mean(np.asarray(mcmc.last_state.mean_accept_prob))),
        step_size=float(np.mean(np.asarray(mcmc.last_state.adapt_state.step_size))),
        self_check=[message for _, _, message in kernel.self_check_findings],
    )


def main(argv=None):
    targets = make_targets()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernel", choices=["adjusted_esh", "tuned_hmc"], default="adjusted_esh")
    p.add_argument("--factors", type=float, nargs="+", default=[1.0])
    p.add_argument("--accepts", type=float, nargs="+", default=[0.7])
    p.add_argument("--targets", nargs="+", choices=sorted(targets), default=["ill_gauss"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", help="JSON file for all rows")
    args = p.parse_args(argv)
    rows = []
    for name in args.targets:
        for factor in args.factors:
            for accept in args.accepts:
                for seed in args.seeds:
                    rows.append(run(targets[name], factor, accept, seed, args.kernel))
                    print(json.dumps(rows[-1]), flush=True)
                    if args.out:
                        with open(args.out, "w") as f:
                            json.dump(rows, f, indent=1)
                    jax.clear_caches()
    return 0


if __name__ == "__main__":
    sys.exit(main())
