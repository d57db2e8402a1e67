#!/usr/bin/env python
"""Runs at hand-fixed settings, the studies behind two notes of ``docs/benchmarks.md``
(2026-12-04 evening), float64, 4 vectorized chains (or sequential ones), 1000 warmup draws.

``tuned_hmc``: TunedHMC on a benchmark target with ``step_size`` and/or
``trajectory_length`` fixed (the rest tuned), per seed: realised step size and acceptance,
gradients per draw, min bulk ESS of ``x`` and of ``x^2`` and the headline per 1000
gradients (``yardstick.ess_x_and_x2``)::

    python benchmarks/fixed_settings.py tuned_hmc --target std_gauss --step-sizes none 0.45 0.55
    python benchmarks/fixed_settings.py tuned_hmc --target std_gauss --trajectory-length 2.2 --step-sizes none 0.5 0.4

``posterior``: one posteriordb_dev posterior with NumPyro's NUTS or AdjustedESH (optionally
a fixed ``trajectory_length``), printing mean, sd, 95% quantile and largest draw of chosen
parameters, and each chain's sd::

    python benchmarks/fixed_settings.py posterior --sampler nuts --chain-method vectorized
    python benchmarks/fixed_settings.py posterior --sampler adjusted_esh --trajectory-length 8
"""

import argparse
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def _float_or_none(text):
    return None if text.lower() == "none" else float(text)


def tuned_hmc(args):
    from numpyro.infer import MCMC

    from esh_kernels.numpyro import TunedHMC
    from targets import make_targets, unconstrained_chains
    from yardstick import ess_x_and_x2, per_1k_grad

    target = make_targets()[args.target]
    for step_size in args.step_sizes:
        for seed in args.seeds:
            mcmc = MCMC(TunedHMC(target.model, step_size=step_size, adapt_step_size=step_size is None,
                                 trajectory_length=args.trajectory_length),
                        num_warmup=1000, num_samples=1000, num_chains=4, chain_method="vectorized",
                        progress_bar=False)
            mcmc.run(jax.random.PRNGKey(seed), extra_fields=("n_steps", "accept_prob", "adapt_state.step_size"))
            ess = ess_x_and_x2(unconstrained_chains(target.model, mcmc))
            extra = mcmc.get_extra_fields(group_by_chain=True)
            grads = float(np.sum(extra["n_steps"]))
            print(f"{args.target} step_size={step_size} trajectory_length={args.trajectory_length} seed={seed}: "
                  f"realised step {float(np.mean(extra['adapt_state.step_size'][:, -1])):.3f}, "
                  f"acceptance {float(np.mean(extra['accept_prob'])):.3f}, grads/draw {grads / 4000:.2f}, "
                  f"min ESS x {np.min(ess['ess_x']):.0f}, x^2 {np.min(ess['ess_x2']):.0f}, "
                  f"per 1k grads {per_1k_grad(float(ess['ess']), grads):.1f}", flush=True)


def posterior(args):
    from numpyro.infer import MCMC, NUTS

    import posteriordb as pdb
    from esh_kernels.numpyro import AdjustedESH

    model = pdb.model_module(args.posterior).numpyro_model(pdb.load_data(args.posterior))
    kernel = NUTS(model) if args.sampler == "nuts" else AdjustedESH(model, trajectory_length=args.trajectory_length)
    mcmc = MCMC(kernel, num_warmup=1000, num_samples=args.num_samples, num_chains=4,
                chain_method=args.chain_method, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(args.seed))
    samples = mcmc.get_samples(group_by_chain=True)
    for name in args.params:
        x = np.asarray(samples[name])
        print(f"{args.posterior} {args.sampler} ({args.chain_method}, trajectory_length="
              f"{args.trajectory_length}, seed {args.seed}) {name}: mean {x.mean():.3f}, sd {x.std():.3f}, "
              f"q95 {np.quantile(x, 0.95):.2f}, largest {x.max():.1f}, per-chain sd {np.round(x.std(axis=1), 2)}",
              flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="study", required=True)
    t = sub.add_parser("tuned_hmc")
    t.add_argument("--target", default="std_gauss")
    t.add_argument("--step-sizes", nargs="+", type=_float_or_none, default=[None], help="'none': tuned")
    t.add_argument("--trajectory-length", type=float, default=None)
    t.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    q = sub.add_parser("posterior")
    q.add_argument("--posterior", default="one_comp_mm_elim_abs-one_comp_mm_elim_abs")
    q.add_argument("--sampler", choices=("nuts", "adjusted_esh"), default="nuts")
    q.add_argument("--chain-method", choices=("vectorized", "sequential"), default="vectorized")
    q.add_argument("--trajectory-length", type=float, default=None)
    q.add_argument("--num-samples", type=int, default=1000)
    q.add_argument("--params", nargs="+", default=["K_m", "V_m"])
    q.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    tuned_hmc(args) if args.study == "tuned_hmc" else posterior(args)


if __name__ == "__main__":
    main()
