"""A warning before XLA runs out of memory maps for compiled code (Linux).

XLA's CPU compiler gives every compiled program's kernels memory maps of their own (code,
read-only data, data: about three per kernel), and JAX's caches keep the programs of every
earlier ``MCMC`` run in the process alive. Measured 2026-12-05 (jax 0.10.2, CPU, a 2-D model,
20 + 20 iterations, the same kernel object run again): each run adds about 745 maps with
``ESH``, 517 with ``AdjustedESH``, 480 with ``TunedHMC`` and 330 with NumPyro's ``NUTS``;
``jax.clear_caches()`` released all of them. Linux refuses new maps beyond
``vm.max_map_count`` (65530 by default), and XLA then aborts the process in its compiler
("Fatal Python error: Aborted", or a segmentation fault) with nothing that names the cause:
with ``ESH`` after about 85 runs in one process (NumPyro's own MCMC test file, run with ESH
in place of NUTS, met it). The kernels' ``init`` reads both numbers and warns by name while
there is still room.
"""

import warnings

#: warn when the process holds more than this fraction of ``vm.max_map_count``
WARN_FRACTION = 0.8


def map_count_and_limit():
    """``(maps the process holds, vm.max_map_count)``, or None where ``/proc`` does not
    tell (not Linux)."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read().strip())
        with open("/proc/self/maps") as f:
            count = sum(1 for _ in f)
    except (OSError, ValueError):
        return None
    return count, limit


def warn_if_near_map_limit(kernel_name):
    """A ``RuntimeWarning`` naming the cause and the remedies when the process holds more
    than :data:`WARN_FRACTION` of the memory maps Linux allows it."""
    numbers = map_count_and_limit()
    if numbers is None:
        return
    count, limit = numbers
    if count <= WARN_FRACTION * limit:
        return
    warnings.warn(
        f"{kernel_name}: this process holds {count} memory maps, {count / limit:.0%} of the "
        f"system's limit vm.max_map_count = {limit}. Compiled JAX programs keep theirs, and "
        "JAX's caches keep the programs of earlier MCMC runs (each run of these kernels adds "
        "several hundred); when the limit is reached XLA aborts the process without saying "
        "why. Call jax.clear_caches() between runs (it releases them), or raise the limit "
        "(sysctl -w vm.max_map_count=262144).",
        RuntimeWarning,
        stacklevel=3,
    )
