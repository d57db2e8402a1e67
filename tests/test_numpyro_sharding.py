"""Chains laid out over several devices (``esh_kernels.numpyro.chain_keys``, issue 17).

JAX only takes ``--xla_force_host_platform_device_count`` before it starts, so the check
runs in a subprocess with 4 CPU devices.
"""

import os
import subprocess
import sys

import pytest

pytest.importorskip("numpyro")

_SCRIPT = """
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as dist
from numpyro.infer import MCMC
from esh_kernels.numpyro import AdjustedESH, chain_keys
assert jax.device_count() == 4, jax.devices()

def model():
    numpyro.sample("x", dist.Normal(jnp.zeros(3), jnp.array([1.0, 2.0, 3.0])))

def run(key, num_chains, num_warmup=30, num_samples=10):
    mcmc = MCMC(AdjustedESH(model), num_warmup=num_warmup, num_samples=num_samples,
                num_chains=num_chains, chain_method="vectorized", progress_bar=False)
    mcmc.run(key, extra_fields=("n_steps",))
    return mcmc

def draws(mcmc):
    return np.asarray(mcmc.get_samples(group_by_chain=True)["x"])

keys = chain_keys(jax.random.PRNGKey(3), 8)
assert len(keys.sharding.device_set) == 4
np.testing.assert_array_equal(np.asarray(jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys),
                              np.asarray(jax.random.split(jax.random.PRNGKey(3), 8)))
sharded = run(keys, 8)
# the run followed the keys' layout: its final state is spread over the 4 devices
assert len(sharded.last_state.z["x"].sharding.device_set) == 4, sharded.last_state.z["x"].sharding
x, steps = draws(sharded), np.asarray(sharded.get_extra_fields(group_by_chain=True)["n_steps"])
assert x.shape == (8, 10, 3) and np.unique(x[:, :, 0]).size > 20, np.unique(x[:, :, 0]).size
# each device ran its 2 chains as the single-device program for a batch of 2 runs them
plain = jax.random.split(jax.random.PRNGKey(3), 8)
for k in (0, 3):
    alone = run(plain[2 * k: 2 * k + 2], 2)
    assert len(alone.last_state.z["x"].sharding.device_set) == 1
    np.testing.assert_array_equal(x[2 * k: 2 * k + 2], draws(alone))
    np.testing.assert_array_equal(steps[2 * k: 2 * k + 2],
                                  np.asarray(alone.get_extra_fields(group_by_chain=True)["n_steps"]))
# the ensemble mode follows the keys' layout too (its cross-chain averages become
# cross-device reductions, so it matches a one-device run to rounding only, not bitwise)
from esh_kernels.numpyro import run_ensemble
ens = run_ensemble(model, chain_keys(jax.random.PRNGKey(5), 64), num_samples=20, chunk=20)
assert len(ens.last_state.z["x"].sharding.device_set) == 4, ens.last_state.z["x"].sharding
xe = np.asarray(ens.get_samples(group_by_chain=True)["x"])
assert xe.shape == (64, 20, 3) and np.all(np.isfinite(xe))
np.testing.assert_allclose(xe.std(axis=(0, 1)), [1.0, 2.0, 3.0], rtol=0.15)
try:
    chain_keys(jax.random.PRNGKey(0), 6)
except ValueError as err:
    assert "multiple of the 4 devices" in str(err), err
else:
    raise AssertionError("6 chains on 4 devices accepted")
print("ok")
"""


def test_chains_sharded_over_four_devices(tmp_path):
    """8 vectorized chains of ``AdjustedESH`` with keys from ``chain_keys`` on 4 CPU
    devices (float64): the run is partitioned over the devices (its final state lives on all
    4), and a device's 2 chains give exactly the draws and step counts of those 2 chains run
    as one batch on one device (checked for the first and the last device). Against all 8
    chains as one batch on one device the draws agree to rounding only (the program for a
    batch of 8 rounds differently from that for 2, ~1e-9 in float64; measured by hand, and
    ``test_vectorized_chain_equals_the_chain_run_alone`` covers batch sizes). The ensemble
    mode (``run_ensemble``) with such keys runs sharded over the 4 devices too, with the
    right spread."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok"], proc.stdout
