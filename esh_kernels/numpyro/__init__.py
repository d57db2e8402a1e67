"""NumPyro kernels: ``ESH``, ``AdjustedESH`` and ``TunedHMC`` (drop-in ``MCMCKernel``s).

Importing this module imports JAX and NumPyro but never torch.
"""

from esh_kernels.numpyro.adjusted_esh import AdjustedESH, AdjustedESHState
from esh_kernels.numpyro.ensemble import run_ensemble
from esh_kernels.numpyro.esh import ESH, ESHState
from esh_kernels.numpyro.sharding import chain_keys
from esh_kernels.numpyro.tuned_hmc import TunedHMC, TunedHMCState

__all__ = ["ESH", "ESHState", "AdjustedESH", "AdjustedESHState", "TunedHMC", "TunedHMCState",
           "chain_keys", "run_ensemble"]
