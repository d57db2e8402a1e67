#!/usr/bin/env python
"""GPU checks of issue 17 ("GPU readiness"), run once on a lent accelerator by
``benchmarks/gpu_check.sh``; each part also runs on a CPU (smaller sizes with ``--small``).

* ``ensemble``: NumPyro's ensemble mode (``esh_kernels.numpyro.run_ensemble``) in float32 on
  the 100-D ill-conditioned Gaussian and ``hier_500``: no NaN, the ensemble's second-moment
  bias ``b2_max`` at the end, gradients per chain, and wall-clock of a first (compiling) and
  a second (compiled) call.
* ``pyro``: Pyro's ``BatchedMCMC`` with each kernel on eight schools and the breast-cancer
  logistic regression, all tensors on the default device (``cuda`` when there is one), in
  float32 and float64: no NaN, min bulk ESS of ``x`` and ``x^2`` (``yardstick.ess_x_and_x2``),
  split R-hat, gradients and wall-clock (``run_pyro.run_batched_sampler``, jit on).

Prints one line per run; the numbers go to ``docs/many_chains.md`` / ``docs/pyro.md``.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def check_ensemble(small):
    import jax
    import numpy as np
    from numpyro.infer.initialization import init_to_uniform

    from ensemble_vs_laps import unconstrained_draws

    jax.config.update("jax_enable_x64", False)  # ensemble_vs_laps turns it on at import
    from esh_kernels.numpyro import run_ensemble
    from targets import make_targets, second_moment_bias, second_moment_truth

    print(f"[ensemble] jax {jax.__version__} devices {jax.devices()} x64={jax.config.jax_enable_x64}", flush=True)
    targets = make_targets()
    for name, chains in (("ill_gauss", 512 if small else 4096), ("hier_500", 256 if small else 1024)):
        target = targets[name]
        ex2, var_x2, _, _ = second_moment_truth(target)
        walls = []
        for _ in range(2):  # the second call finds JAX's caches warm (NumPyro's MCMC still re-traces)
            t = time.perf_counter()
            mcmc = run_ensemble(target.model, jax.random.PRNGKey(0), num_chains=chains, num_samples=40,
                                chunk=40, ess_target=1e12, init_strategy=init_to_uniform)
            x = unconstrained_draws(target, mcmc)
            walls.append(time.perf_counter() - t)
        info = mcmc.ensemble_info
        b2 = float(np.max(second_moment_bias(x[:, -1], ex2, var_x2)[0]))
        dtype = mcmc.get_samples()[next(iter(mcmc.get_samples()))].dtype
        print(f"[ensemble] {name} C={chains} {dtype}: nan={bool(np.isnan(x).any())} "
              f"b2_max(last draw)={b2:.4f} warm_steps={info['warm_steps']} "
              f"grads/chain={info['gradients']['total']:.0f} step={info['step_size']:.3g} "
              f"wall first call {walls[0]:.1f} s, second {walls[1]:.1f} s", flush=True)


def check_pyro(small, dtypes):
    import numpy as np
    import torch

    import run_pyro
    from yardstick import ess_x_and_x2

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_device(device)
    print(f"[pyro] torch {torch.__version__} device {device}", flush=True)
    chains = 32 if small else 1024
    for dtype in (getattr(torch, name) for name in dtypes):
        torch.set_default_dtype(dtype)
        targets = run_pyro.make_targets()
        cfg = run_pyro.Config(num_warmup=100 if small else 300, num_samples=100 if small else 500,
                              batched_chains=chains, seed=0)
        for tname in ("eight_schools", "logreg"):
            for sname in ("adjusted_esh_batched", "esh_batched", "tuned_hmc_batched"):
                t = time.perf_counter()
                try:
                    rec = run_pyro.run_batched_sampler(sname, targets[tname], cfg, 0)
                except Exception as e:  # noqa: BLE001 - a failure is the finding; go on to the next
                    print(f"[pyro] {tname} {sname} {dtype}: FAILED {type(e).__name__}: {e}", flush=True)
                    continue
                wall = time.perf_counter() - t
                draws = rec["draws"]
                m = ess_x_and_x2(draws)
                ess = float(m["ess"])
                rhat = float(np.nanmax(np.concatenate([m["rhat_x"], m["rhat_x2"]])))
                print(f"[pyro] {tname} {sname} C={chains} {dtype}: nan={bool(np.isnan(draws).any())} "
                      f"min ESS(x,x^2)={ess:.0f} max R-hat={rhat:.3f} "
                      f"grads warmup+sampling={rec['grads_warmup'] + rec['grads_sample']:.3g} "
                      f"wall={wall:.1f} s (warmup {rec['time_warmup']:.1f}, sampling {rec['time_sample']:.1f}) "
                      f"ESS/s={ess / wall:.0f} divergences={rec['info']['divergences']}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("ensemble", "pyro"))
    p.add_argument("--small", action="store_true", help="CPU-sized runs (to try the script)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], help="pyro: torch dtypes")
    args = p.parse_args()
    if args.part == "ensemble":
        check_ensemble(args.small)
    else:
        check_pyro(args.small, args.dtypes)


if __name__ == "__main__":
    main()
