"""Count the host synchronisations of ``esh_kernels.pyro.run_ensemble`` per warm step, per
tuning transition and per sampling draw (``docs/many_chains.md``, "Ensemble mode"), and
check that a float32 run has no NaN.

On CUDA, torch's own sync debugger counts them (``torch.cuda.set_sync_debug_mode``: one
warning per synchronising call); on a CPU, where nothing synchronises, the script counts
the calls that would (``Tensor.item``, ``tolist``, ``cpu``, ``numpy``, ``bool``, ``int``,
``float``). Run: ``python benchmarks/pyro_ensemble_host_syncs.py [--device cuda]
[--chains 1024]``.
"""

import argparse
import time
import warnings
from contextlib import contextmanager

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide.initialization import init_to_uniform

from esh_kernels.pyro import ensemble as pyro_ensemble

SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__")


@contextmanager
def count_syncs(device):
    """Yields a one-element list holding the number of host synchronisations so far."""
    count = [0]
    if device.type == "cuda":
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield count
            finally:
                torch.cuda.set_sync_debug_mode(0)
        count[0] = sum("synchroniz" in str(w.message) for w in caught)
        return
    saved = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def counting(fn):
        def wrapped(self, *args, **kwargs):
            count[0] += 1
            return fn(self, *args, **kwargs)
        return wrapped

    for name, fn in saved.items():
        setattr(torch.Tensor, name, counting(fn))
    try:
        yield count
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chains", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=100)
    args = parser.parse_args()
    device = torch.device(args.device)
    sd = torch.tensor(np.logspace(-2, 0, args.dim), dtype=torch.float32, device=device)

    def model():
        pyro.sample("x", dist.Normal(torch.zeros_like(sd), sd).to_event(1))

    print(f"torch {torch.__version__}, pyro {pyro.__version__}, device {device}, "
          f"{args.chains} chains, {args.dim}-D Gaussian, float32")
    # the phases one by one, as run_ensemble calls them
    pyro.set_rng_seed(0)
    tuner = pyro_ensemble.AdjustedESH(model, dense_mass=False, init_strategy=init_to_uniform(radius=10.0))
    with pyro.poutine.block(), pyro.validation_enabled(False):
        tuner.setup_batched(0, args.chains)
        for steps in (5, 10):
            with count_syncs(device) as n:
                warm, n_warm, _ = pyro_ensemble._warm_start(tuner._state.integrator, tuner._value_and_grad,
                                                            tuner._rng, steps, 1e-12)
            print(f"warm start, {n_warm} steps: {n[0]} host synchronisations")
        with count_syncs(device) as n:
            tuned = pyro_ensemble._tune(tuner, warm.integ, 3)
        print(f"tuning, {tuned['steps']} transitions: {n[0]} host synchronisations")
    tuner.cleanup()

    for draws, chunk in ((10, 10), (20, 10)):
        pyro.set_rng_seed(0)
        with count_syncs(device) as n:
            start = time.perf_counter()
            mcmc = pyro_ensemble.run_ensemble(model, num_chains=args.chains, num_samples=draws, chunk=chunk,
                                              ess_target=1e12, max_warm_steps=10, max_tune_steps=3,
                                              init_strategy=init_to_uniform(radius=10.0))
            wall = time.perf_counter() - start
        print(f"whole run, {draws} draws in chunks of {chunk}: {n[0]} host synchronisations, {wall:.1f} s")

    pyro.set_rng_seed(0)
    start = time.perf_counter()
    mcmc = pyro_ensemble.run_ensemble(model, num_chains=args.chains, num_samples=1000, chunk=100,
                                      init_strategy=init_to_uniform(radius=10.0))
    wall = time.perf_counter() - start
    info = mcmc.ensemble_info
    x = mcmc.get_samples()["x"]
    print(f"full run: {wall:.1f} s; warm steps {info['warm_steps']}, tuning {info['tune_steps']} "
          f"transitions, step size {info['step_size']:.3g}, length {info['trajectory_length']:.3g}, "
          f"{info['num_draws']} draws, gradients per chain {info['gradients']}, timings {mcmc.timings}")
    print(f"float32 draws {x.dtype} on {x.device}: finite {bool(torch.isfinite(x).all())}, "
          f"NaN in bias trace {bool(np.isnan(info['bias_trace']).any())}; last check {info['checks'][-1]}")
    ratio = (x.double().var(0) / sd.double() ** 2).cpu().numpy()
    print(f"variance / truth: min {ratio.min():.3f}, max {ratio.max():.3f}")


if __name__ == "__main__":
    main()
