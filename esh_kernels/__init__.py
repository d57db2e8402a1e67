"""esh_kernels: Energy Sampling Hamiltonian (ESH) dynamics and self-tuning HMC kernels
for NumPyro and Pyro.

Importing this package imports neither JAX, torch nor ArviZ. Pick a backend explicitly::

    from esh_kernels.numpyro import ESH, AdjustedESH, TunedHMC

``esh_kernels.to_arviz`` and ``esh_kernels.sample_stats_fields`` (from
:mod:`esh_kernels.arviz`) are loaded on first use.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "to_arviz", "sample_stats_fields"]

_LAZY = {"to_arviz": "esh_kernels.arviz", "sample_stats_fields": "esh_kernels.arviz"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'esh_kernels' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
