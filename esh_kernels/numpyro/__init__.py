"""NumPyro kernels: ``ESH``, ``AdjustedESH`` and ``TunedHMC`` (drop-in ``MCMCKernel``s).

Importing this module imports JAX and NumPyro but never torch.
"""

from esh_kernels.numpyro.adjusted_esh import AdjustedESH, AdjustedESHState

__all__ = ["AdjustedESH", "AdjustedESHState"]
