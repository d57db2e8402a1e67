"""Many chains in one process, sampled as one tensor: :class:`BatchedMCMC` and
:func:`run_batched`.

``pyro.infer.MCMC`` runs chains one after another or in separate processes, so each
transition of each chain pays Python's per-operation overhead on small tensors. Here the
``C`` chains are one ``(C, d)`` batch: the model runs once per gradient for all chains
inside a chain plate (pyro issue #2902; :class:`esh_kernels.pyro._model.BatchedPotential`),
so a transition of all chains costs about as much as one chain's on small models, and a
GPU is used in earnest. The per-chain algorithm is exactly the kernel's under
``pyro.infer.MCMC`` (the NumPyro kernels' under ``chain_method="vectorized"``); what is
shared across chains is only the work, not the tuning, unless ``TunedHMC`` is built
with ``cross_chain=True`` (an opt-in that tunes across the chains, coupling them).

The interface follows ``pyro.infer.MCMC``: ``run(*args, **kwargs)``,
``get_samples(num_samples=None, group_by_chain=False)`` (constrained, shape
``(num_chains, num_samples, ...)`` when grouped), ``diagnostics()`` (per-site ``n_eff`` /
``r_hat`` and, per kernel statistic, ``{"chain i": value}``, ``divergences`` included),
``summary(prob=0.9)``; ``arviz.from_pyro`` works on it.
"""

import time

import pyro
import torch
from pyro.infer.mcmc.util import diagnostics as site_diagnostics
from pyro.infer.mcmc.util import print_summary, select_samples

from esh_kernels.core.checks import check_int
from esh_kernels.pyro._base import FlatKernel


class BatchedMCMC:
    """Run ``num_chains`` chains of an ``esh_kernels.pyro`` kernel as one batch.

    :param kernel: an ``ESH``, ``AdjustedESH`` or ``TunedHMC`` instance.
    :param int num_samples: draws kept per chain.
    :param int warmup_steps: warmup iterations per chain (default ``num_samples``).
    :param int num_chains: number of chains (default 4).
    :param dict initial_params: ``{site: (num_chains, *shape)}`` unconstrained values
        (required with ``potential_fn``; default: the kernel's ``init_strategy`` per chain).
    :param bool disable_progbar: no progress bar.
    :param bool disable_validation: run with Pyro's validation off (as ``MCMC``).
    :param callable hook: ``hook(kernel, draws, stage, i)`` after each iteration.
    """

    def __init__(self, kernel, num_samples, warmup_steps=None, num_chains=4,
                 initial_params=None, disable_progbar=False, disable_validation=True,
                 hook=None):
        if not isinstance(kernel, FlatKernel):
            raise ValueError(
                "BatchedMCMC needs a kernel from esh_kernels.pyro (ESH, AdjustedESH, TunedHMC), "
                f"got {type(kernel).__name__}"
            )
        self.kernel = kernel
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.warmup_steps = check_int(
            "warmup_steps", num_samples if warmup_steps is None else warmup_steps, 0
        )
        self.num_chains = check_int("num_chains", num_chains, 1)
        self.initial_params = initial_params
        self.disable_progbar = bool(disable_progbar)
        self.disable_validation = disable_validation
        self.hook = hook
        self.transforms = None
        self._samples = None
        self._diagnostics = None
        self._args, self._kwargs = (), {}
        self.timings = {}

    def run(self, *args, **kwargs):
        return self._run(args, kwargs)

    def _run(self, args, kwargs, stop=None, every=None):
        """``run``; with ``stop``, also ``stop(draws)`` (the sampling draws so far, a list of
        ``(C, d)`` tensors) after every ``every`` draws and after the last: sampling ends
        early, keeping the draws so far, when it returns True (the ensemble mode's chunks,
        ``esh_kernels.pyro.ensemble``)."""
        self._args, self._kwargs = args, kwargs
        args = [a.detach() if torch.is_tensor(a) else a for a in args]
        kernel = self.kernel
        C, W, N = self.num_chains, self.warmup_steps, self.num_samples
        validation = pyro.validation_enabled(not self.disable_validation)
        with pyro.poutine.block(), validation:
            t0 = time.perf_counter()
            kernel.setup_batched(W, C, *args, initial_params=self.initial_params, **kwargs)
            t1 = time.perf_counter()
            bar = None
            if not self.disable_progbar:
                from tqdm.auto import tqdm

                bar = tqdm(total=W + N, desc="Warmup")
            draws = []
            try:
                for i in range(W + N):
                    x = kernel.sample_batched()
                    if i >= W:
                        draws.append(x)
                    if i == W - 1:
                        t2 = time.perf_counter()
                    if bar is not None:
                        if i == W:
                            bar.set_description("Sample")
                        bar.set_postfix(kernel.logging(), refresh=False)
                        bar.update()
                    if self.hook is not None:
                        self.hook(kernel, x, "Warmup" if i < W else "Sample", i)
                    n = len(draws)
                    if stop is not None and n and (n % every == 0 or n == N) and stop(draws):
                        break
            finally:
                if bar is not None:
                    bar.close()
            t3 = time.perf_counter()
            if W == 0:
                t2 = t1
            self.num_samples = len(draws)
            flat = torch.stack(draws, dim=1)  # (C, N, d)
            self._diagnostics = kernel._chain_diagnostics()
        self.timings = {"setup": t1 - t0, "warmup": t2 - t1, "sampling": t3 - t2}
        layout = kernel._layout
        unconstrained = layout.unravel(flat)
        self.transforms = kernel.transforms or {}
        samples = {}
        for name, z in unconstrained.items():
            samples[name] = self.transforms[name].inv(z) if name in self.transforms else z
        self._samples = samples
        kernel.cleanup()
        return self

    def get_samples(self, num_samples=None, group_by_chain=False):
        """Constrained draws ``{site: (num_chains * num_samples, ...)}``, or
        ``(num_chains, num_samples, ...)`` with ``group_by_chain``; ``num_samples``
        resamples with replacement (as ``pyro.infer.MCMC``)."""
        if self._samples is None:
            raise RuntimeError("call run() first")
        return select_samples(self._samples, num_samples, group_by_chain)

    def diagnostics(self):
        diag = site_diagnostics(self._samples)
        for name in self._diagnostics[0]:
            diag[name] = {f"chain {i}": d[name] for i, d in enumerate(self._diagnostics)}
        return diag

    def summary(self, prob=0.9):
        print_summary(self._samples, prob=prob)
        print("Number of divergences: {}".format(
            sum(len(d["divergences"]) for d in self._diagnostics)
        ))


def run_batched(kernel, model=None, num_chains=4, warmup_steps=1000, num_samples=1000,
                model_args=(), model_kwargs=None, initial_params=None, disable_progbar=True,
                **kernel_kwargs):
    """``BatchedMCMC(...).run(*model_args, **model_kwargs)`` in one call.

    ``kernel`` is a kernel instance, or a kernel class built as
    ``kernel(model, **kernel_kwargs)``. Returns the :class:`BatchedMCMC`.
    """
    if isinstance(kernel, type):
        kernel = kernel(model, **kernel_kwargs)
    elif model is not None or kernel_kwargs:
        raise ValueError("Pass `model` and kernel arguments only with a kernel class.")
    mcmc = BatchedMCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps,
                       num_chains=num_chains, initial_params=initial_params,
                       disable_progbar=disable_progbar)
    return mcmc.run(*model_args, **(model_kwargs or {}))
