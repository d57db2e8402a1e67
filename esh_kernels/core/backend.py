"""Find the array module an array belongs to, without importing the others.

The core functions are written once against the operations that ``jax.numpy``, ``torch``
and ``numpy`` share with the same names and keywords (``sum(x, axis=, keepdims=)``,
``where``, ``exp``, ``expm1``, ``logaddexp``, ``sqrt``, ``log``, ``maximum``, ``minimum``,
``isfinite``, ``abs``, ``amax(x, axis=, keepdims=)``, ``@``). Constants are Python floats so no backend is favoured.
"""

import sys


def namespace(*arrays):
    """Return ``torch``, ``jax.numpy`` or ``numpy``: the module of the first array argument.

    JAX tracers count as JAX arrays. Python scalars are skipped; if nothing but scalars is
    given, ``numpy`` is returned.
    """
    for a in arrays:
        top = type(a).__module__.split(".", 1)[0]
        if top == "torch":
            return sys.modules["torch"]
        if top in ("jax", "jaxlib"):
            import jax.numpy as jnp

            return jnp
    import numpy

    return numpy


def norm(xp, x):
    """Euclidean norm over the last axis, keeping it (shape ``(..., 1)``)."""
    return xp.sqrt(xp.sum(x * x, axis=-1, keepdims=True))
