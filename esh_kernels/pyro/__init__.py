"""Pyro kernels: ``ESH``, ``AdjustedESH`` and ``TunedHMC`` (drop-in ``MCMCKernel``s for
``pyro.infer.MCMC``), and :class:`BatchedMCMC` / :func:`run_batched` to sample many chains
as one batch, and
:func:`run_ensemble`, the ensemble mode on it.

Importing this module imports torch and Pyro but never JAX.
"""

from esh_kernels.pyro.adjusted_esh import AdjustedESH, AdjustedESHState

__all__ = ["AdjustedESH", "AdjustedESHState"]
from esh_kernels.pyro.esh import ESH, ESHState

__all__ += ["ESH", "ESHState"]
from esh_kernels.pyro.batched import BatchedMCMC, run_batched

__all__ += ["BatchedMCMC", "run_batched"]
from esh_kernels.pyro.tuned_hmc import TunedHMC, TunedHMCState

__all__ += ["TunedHMC", "TunedHMCState"]
from esh_kernels.pyro.ensemble import run_ensemble

__all__ += ["run_ensemble"]
