#!/usr/bin/env python
"""Ensemble mode (``esh_kernels.numpyro.run_ensemble``) against BlackJAX's LAPS: gradients
per chain until the ensemble's second-moment bias ``b2_max`` falls below 0.01 (issue 17).

    python benchmarks/ensemble_vs_laps.py [--chains 2048] [--seed 0] [--targets std_gauss ill_gauss]

Both samplers get the same number of chains, the same potential (NumPyro's
``initialize_model`` of ``benchmarks/targets.py``'s model), the same initial distribution
(``init_to_uniform``: uniform(-2, 2) on the unconstrained vector) and float64.

The measure is the ensemble's own bias at each iteration, as in the LAPS paper: with
``m_i(t)`` the mean of ``x_i^2`` over the chains at iteration ``t``,
``b2_max(t) = max_i (m_i(t) - E[x_i^2])^2 / Var[x_i^2]``; reported is the number of
gradients per chain spent up to the first iteration with ``b2_max < 0.01``, and up to the
first one after which it stays below (warm start and tuning included). The noise floor of
``b2_max`` from ``C`` independent chains is about ``max of d chi^2_1 / C`` (about 10/C for
d = 100), so ``C`` must be well above 1000 for the threshold to be reachable at all.

* LAPS: ``blackjax.adaptation.laps.laps`` with its defaults (``early_stop=True``,
  ``r_end=0.01``, ``steps_per_sample=15``, diagonal preconditioning) and its own bias hooks
  (``observables_for_bias = x^2`` and ``contract`` = ``[b2_max, b2_avg]``, the form of
  ``laps.bias(model)``), which also drive its switching criterion; ``num_steps1`` is a cap
  (``--laps-steps1``). Phase 1 costs 1 gradient per step, phase 2 ``15 x 2`` (McLachlan)
  per draw.
* Ensemble mode: ``run_ensemble`` with its defaults except that sampling runs a fixed
  ``--draws`` draws (no early stop), so the whole curve is seen; ``b2_max`` is read off the
  draws of every chain at each sampling draw. Warm start and tuning are counted in full.
"""

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import random  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from targets import make_targets, second_moment_bias, second_moment_truth  # noqa: E402

THRESHOLD = 0.01


def crossings(b2_max, grads):
    """Gradients at the first entry of ``b2_max`` below the threshold, and at the first
    entry after which it stays below (None where it never gets there)."""
    below = np.asarray(b2_max) < THRESHOLD
    first = grads[int(np.argmax(below))] if below.any() else None
    above = np.flatnonzero(~below)
    stays = None if (above.size and above[-1] == below.size - 1) else grads[0 if not above.size else above[-1] + 1]
    return first, stays


def run_laps(target, num_chains, key, steps1, draws2):
    """LAPS as ``benchmarks/run_numpyro.py::run_bj_laps`` sets it up, with its bias hooks on
    and its early switch (its default). Returns ``(b2_max per iteration, gradients per
    chain at each, info)``."""
    from blackjax.adaptation.laps import laps
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model

    ex2, var_x2, _, _ = second_moment_truth(target)
    info = initialize_model(random.PRNGKey(0), target.model)
    _, unravel = ravel_pytree(info.param_info.z)
    pe = info.potential_fn
    d = target.dim

    def contract(e_x2):
        b2 = jnp.square(e_x2 - ex2) / var_x2
        return jnp.array([jnp.max(b2), jnp.mean(b2)])

    mesh = jax.sharding.Mesh(jax.devices()[:1], "chains")
    t = time.time()
    out, grads_per_step, _, _ = laps(
        logdensity_fn=lambda x: -pe(unravel(x)),
        sample_init=lambda k: random.uniform(k, (d,), minval=-2.0, maxval=2.0),
        ndims=d, num_steps1=steps1, num_steps2=draws2 * 15 * 2, num_chains=num_chains,
        mesh=mesh, rng_key=key, observables_for_bias=lambda x: jnp.square(x), contract=contract,
        superchain_size=1,
    )
    b1 = np.asarray(out["phase_1"]["bias"])[:, 0]
    b2 = np.asarray(out["phase_2"]["bias"])[:, 0]
    n1 = b1.shape[0]
    grads = np.concatenate([np.arange(1, n1 + 1), n1 + 15 * grads_per_step * np.arange(1, b2.shape[0] + 1)])
    return np.concatenate([b1, b2]), grads.astype(float), {
        "phase1_steps": n1, "phase2_draws": int(b2.shape[0]), "seconds": time.time() - t,
        "b2_max_end_phase1": float(b1[-1]), "b2_max_end": float(b2[-1])}


def unconstrained_draws(target, mcmc):
    """The draws as flat unconstrained vectors ``(C, draws, d)``, in the order of
    ``ravel_pytree`` of the latent sites (the order of the reference moments)."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import unconstrain_fn

    samples = mcmc.get_samples(group_by_chain=True)
    latent = {name: samples[name] for name in mcmc.last_state.z}

    def flat(z):
        return ravel_pytree(unconstrain_fn(target.model, (), {}, z))[0]

    return np.asarray(jax.vmap(jax.vmap(flat))(latent))


def run_ours(target, num_chains, key, draws):
    """``run_ensemble`` with a fixed number of sampling draws. Returns ``(b2_max per
    sampling draw, gradients per chain at each, info)``."""
    from numpyro.infer.initialization import init_to_uniform

    from esh_kernels.numpyro import run_ensemble

    ex2, var_x2, _, _ = second_moment_truth(target)
    t = time.time()
    mcmc = run_ensemble(target.model, key, num_chains=num_chains, num_samples=draws, chunk=draws,
                        ess_target=1e12, init_strategy=init_to_uniform)
    x = unconstrained_draws(target, mcmc)  # (C, draws, d)
    b2 = np.array([np.max(second_moment_bias(x[:, t], ex2, var_x2)[0]) for t in range(x.shape[1])])
    info = mcmc.ensemble_info
    steps = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["n_steps"], dtype=np.float64)
    before = info["gradients"]["warm"] + info["gradients"]["tune"]
    grads = before + np.cumsum(np.mean(steps, axis=0))
    return b2, grads, {"warm_steps": info["warm_steps"], "tune_grads": info["gradients"]["tune"],
                       "step_size": info["step_size"], "trajectory_length": info["trajectory_length"],
                       "grads_per_draw": float(np.mean(steps)), "seconds": time.time() - t,
                       "b2_max_end": float(b2[-1])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="+", default=["std_gauss", "ill_gauss"])
    parser.add_argument("--draws", type=int, default=40, help="ensemble mode: sampling draws")
    parser.add_argument("--laps-steps1", type=int, default=2000, help="LAPS: cap on phase-1 steps")
    parser.add_argument("--laps-draws", type=int, default=40, help="LAPS: phase-2 draws")
    args = parser.parse_args()
    targets = make_targets()
    k_laps, k_ours = random.split(random.PRNGKey(args.seed))
    for name in args.targets:
        target = targets[name]
        for label, result in (
            ("LAPS", run_laps(target, args.chains, k_laps, args.laps_steps1, args.laps_draws)),
            ("ensemble mode", run_ours(target, args.chains, k_ours, args.draws)),
        ):
            b2, grads, info = result
            first, stays = crossings(b2, grads)
            print(f"{name:9s} {label:13s} C={args.chains}: gradients/chain to b2_max<{THRESHOLD}: "
                  f"first {first}, stays {stays}; min b2_max {np.min(b2):.4f}; {info}", flush=True)


if __name__ == "__main__":
    main()
