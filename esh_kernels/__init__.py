"""esh_kernels: Energy Sampling Hamiltonian (ESH) dynamics and self-tuning HMC kernels
for NumPyro and Pyro.

Importing this package imports neither JAX nor torch. Pick a backend explicitly::

    from esh_kernels.numpyro import ESH, AdjustedESH, TunedHMC
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
