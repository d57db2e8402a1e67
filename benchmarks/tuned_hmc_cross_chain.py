#!/usr/bin/env python
"""TunedHMC's cross-chain (ChEES) tuning against its per-chain (U-turn) rule on the 504-D
hierarchical regression ``hier_500``, for several chain counts and seeds.

    python benchmarks/tuned_hmc_cross_chain.py                      # cross_chain=True, 4/8/16 chains
    python benchmarks/tuned_hmc_cross_chain.py --per-chain --chains 4
    python benchmarks/tuned_hmc_cross_chain.py --pyro --per-chain --chains 4 16 --num-samples 1000

Prints, per (chains, seed): the tuned trajectory length T and step size, the yardstick's
min bulk ESS of ``x`` and ``x^2`` (``yardstick.ess_x_and_x2``), the max R-hat of ``x`` and
``x^2``, and that ESS per 1000 gradient evaluations after warmup (1000 warmup + 500 draws,
or ``--num-samples``; vectorized, float64). The table in ``docs/kernels/tuned_hmc.md`` came from these
two commands (about 10 minutes together on 2 CPU cores). Seeds use the same key
derivation as ``run_numpyro.py`` (seed 0 is the benchmark's own run).

``--pyro`` runs the same model and budget with ``esh_kernels.pyro.BatchedMCMC`` (the
chains as one torch batch, ``torch.set_num_threads(1)``, float64; seeds go to
``pyro.set_rng_seed``).
"""

import argparse
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from jax import random  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from numpyro.infer import MCMC  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run_numpyro import SAMPLER_ORDER  # noqa: E402
from targets import TARGET_NAMES, make_targets  # noqa: E402
from yardstick import ess_x_and_x2  # noqa: E402

from esh_kernels.numpyro import TunedHMC  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chains", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-chain", action="store_true", help="cross_chain=False")
    p.add_argument("--num-samples", type=int, default=500,
                   help="draws per chain after 1000 warmup iterations (the benchmark's headline: 1000)")
    p.add_argument("--pyro", action="store_true", help="esh_kernels.pyro.BatchedMCMC instead of NumPyro")
    args = p.parse_args(argv)
    if args.pyro:
        return run_pyro(args)
    model = make_targets()["hier_500"].model
    ti, si = TARGET_NAMES.index("hier_500"), SAMPLER_ORDER.index("tuned_hmc")
    for C in args.chains:
        for seed in args.seeds:
            key = random.split(random.fold_in(random.fold_in(random.PRNGKey(seed), ti), si))[0]
            mcmc = MCMC(TunedHMC(model, cross_chain=not args.per_chain), num_warmup=1000,
                        num_samples=args.num_samples, num_chains=C, chain_method="vectorized",
                        progress_bar=False, postprocess_fn=lambda z: z)
            mcmc.run(key, extra_fields=("n_steps",))
            adapt = mcmc.last_state.adapt_state
            flat = np.asarray(jax.vmap(jax.vmap(lambda z: ravel_pytree(z)[0]))(
                mcmc.get_samples(group_by_chain=True)))
            grads = float(np.asarray(mcmc.get_extra_fields()["n_steps"]).sum())
            report(C, seed, args, np.mean(adapt.trajectory_length), np.mean(adapt.step_size), flat, grads)


def report(C, seed, args, length, step, flat, grads):
    """One line per run: tuned length and step, min bulk ESS and max R-hat of ``x`` and
    ``x^2`` over the unconstrained draws ``flat`` ``(C, N, d)``, ESS per 1000 gradients."""
    y = ess_x_and_x2(flat)
    ess = float(y["ess"])
    rhat = float(max(np.max(y["rhat_x"]), np.max(y["rhat_x2"])))
    print(f"chains={C} seed={seed} cross_chain={not args.per_chain} T={float(length):.2f} "
          f"step={float(step):.3f} minESS={ess:.0f} rhat={rhat:.3f} "
          f"ESS/1k grad={1000 * ess / grads:.1f}", flush=True)


def run_pyro(args):
    """The study with ``BatchedMCMC(TunedHMC(model))`` on a Pyro model of ``hier_500`` (the
    data of ``targets.hier_500_data``; latent sites take a leading chain axis)."""
    import pyro
    import pyro.distributions as pdist
    import torch

    import esh_kernels.pyro as ekp
    from run_pyro import _unconstrained  # sets torch's threads (1) and dtype (float64)
    from targets import HIER_500_GROUPS, hier_500_data

    g, xh, yh = (torch.as_tensor(a) for a in hier_500_data())

    def model():
        mu = pyro.sample("mu", pdist.Normal(0.0, 5.0))
        beta = pyro.sample("beta", pdist.Normal(0.0, 2.0))
        tau = pyro.sample("tau", pdist.HalfNormal(2.0))
        sigma = pyro.sample("sigma", pdist.HalfNormal(2.0))
        z = pyro.sample("z", pdist.Normal(torch.zeros(HIER_500_GROUPS), 1.0).to_event(1))
        loc = mu[..., None] + tau[..., None] * z[..., g] + beta[..., None] * xh
        pyro.sample("y", pdist.Normal(loc, sigma[..., None]).to_event(1), obs=yh)

    for C in args.chains:
        for seed in args.seeds:
            pyro.set_rng_seed(seed)
            kernel = ekp.TunedHMC(model, cross_chain=not args.per_chain)
            mcmc = ekp.BatchedMCMC(kernel, num_samples=args.num_samples, warmup_steps=1000,
                                   num_chains=C, disable_progbar=True)
            mcmc.run()
            # unconstrained, sites sorted: ravel_pytree's order
            flat, _ = _unconstrained(mcmc.get_samples(group_by_chain=True), mcmc.transforms)
            diag = mcmc.diagnostics()
            chains = [f"chain {c}" for c in range(C)]
            grads = sum(float(diag["gradient evaluations (sampling)"][c]) for c in chains)
            report(C, seed, args, np.mean([diag["trajectory length"][c] for c in chains]),
                   np.mean([diag["step size"][c] for c in chains]), flat, grads)


if __name__ == "__main__":
    main()
