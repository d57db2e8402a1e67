"""Many chains across devices: the chain axis of a vectorized run laid out on a JAX ``Mesh``.

``MCMC(kernel, num_chains=C, chain_method="vectorized")`` runs all chains as one batched
program. Given PRNG keys placed on a ``jax.sharding.Mesh`` along the chain axis, JAX's own
sharding propagation (``jit`` follows its inputs' layout) splits that program: each device
runs its share of the chains, and the few cross-chain operations (a ``while_loop`` over the
batch runs until every chain is done) become collectives that XLA inserts. Nothing here
schedules work; it only places the keys::

    keys = esh_kernels.numpyro.chain_keys(jax.random.PRNGKey(0), num_chains=1024)
    mcmc = MCMC(AdjustedESH(model), num_warmup=500, num_samples=500, num_chains=1024,
                chain_method="vectorized")
    mcmc.run(keys, *model_args)

The keys are those NumPyro splits from the same key itself, so each device runs the chains
that a single-device run with ``mcmc.run(jax.random.PRNGKey(0), ...)`` runs, and each device's
chains give exactly the draws of the same chains run as one batch on one device (tested on 4
CPU devices in float64). Against all chains as one batch on one device they agree to rounding
only: XLA's CPU code for a batch rounds in the last bit differently with the batch's size.
Multi-host: after ``jax.distributed.initialize()`` on every host, ``jax.devices()``
lists the devices of all hosts and the same call lays the chains over all of them (not run
here: this project has one host; ``docs/many_chains.md``).
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: name of the mesh axis that carries the chains
CHAIN_AXIS = "chains"


def chain_keys(rng_key, num_chains, devices=None):
    """``num_chains`` PRNG keys for ``MCMC(..., num_chains=num_chains,
    chain_method="vectorized").run(keys, ...)``, sharded along the chain axis over
    ``devices`` (default: ``jax.devices()``, every device of every host).

    ``num_chains`` must be a multiple of the number of devices, so that each device holds
    the same number of chains.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not isinstance(num_chains, int) or num_chains < 1:
        raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
    if num_chains % len(devices):
        raise ValueError(
            f"num_chains={num_chains} is not a multiple of the {len(devices)} devices; "
            f"use a multiple (e.g. {len(devices) * -(-num_chains // len(devices))}) so that "
            "every device holds the same number of chains"
        )
    keys = jax.random.split(rng_key, num_chains)
    mesh = Mesh(np.array(devices), (CHAIN_AXIS,))
    return jax.device_put(keys, NamedSharding(mesh, PartitionSpec(CHAIN_AXIS)))


def _chain_sharding(keys):
    """The ``NamedSharding`` of ``keys`` if it splits their leading (chain) axis over
    several devices, else None."""
    sharding = getattr(keys, "sharding", None)
    if not isinstance(sharding, NamedSharding) or len(sharding.device_set) < 2:
        return None
    if not sharding.spec or sharding.spec[0] is None:
        return None
    return sharding


def replicated(keys):
    """A sharding that replicates over the devices of sharded ``keys`` (None if they are
    not): the self-check gathers its per-chain statistics with it before its host callback,
    an all-gather at checkpoints, instead of leaving XLA to move them to one device."""
    sharding = _chain_sharding(keys)
    return None if sharding is None else NamedSharding(sharding.mesh, PartitionSpec())


def follow_keys(state, keys):
    """``state`` (leaves with a leading chain axis) placed as ``keys`` are: if the keys of a
    vectorized run are sharded along their chain axis over several devices (e.g. by
    :func:`chain_keys`), every leaf with that leading axis is sharded the same way and the
    rest is replicated; otherwise ``state`` is returned as it is. The kernels' ``init``
    calls it, so that the run's jitted programs, which follow their inputs' layout, are
    partitioned over the devices."""
    sharding = _chain_sharding(keys)
    if sharding is None:
        return state
    num_chains = keys.shape[0]
    along = NamedSharding(sharding.mesh, PartitionSpec(sharding.spec[0]))
    everywhere = replicated(keys)

    def place(leaf):
        if getattr(leaf, "ndim", 0) >= 1 and leaf.shape[0] == num_chains:
            return jax.device_put(leaf, along)
        return jax.device_put(leaf, everywhere)

    return jax.tree.map(place, state)
