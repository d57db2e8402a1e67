"""Chains laid out over several devices (``esh_kernels.numpyro.chain_keys``, issue 17), on
4 CPU devices.

The check runs in a fresh interpreter with XLA's default code generation: the suite's
workers compile with faster settings (``conftest.py``), under which the program of 2 of 8
sharded chains and that of a batch of 2 on one device round differently (1e-11 in float64,
seen 2026-12-05), while a user's XLA gives them bitwise equal draws, which is what this
test checks."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import default_xla_flags

pytest.importorskip("numpyro")

import jax  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC  # noqa: E402

from esh_kernels.numpyro import AdjustedESH, chain_keys, run_ensemble  # noqa: E402


def _model():
    import jax.numpy as jnp

    numpyro.sample("x", dist.Normal(jnp.zeros(3), jnp.array([1.0, 2.0, 3.0])))


def _run(key, num_chains, num_warmup=30, num_samples=10):
    mcmc = MCMC(AdjustedESH(_model), num_warmup=num_warmup, num_samples=num_samples,
                num_chains=num_chains, chain_method="vectorized", progress_bar=False)
    mcmc.run(key, extra_fields=("n_steps",))
    return mcmc


def _draws(mcmc):
    return np.asarray(mcmc.get_samples(group_by_chain=True)["x"])


def test_chains_sharded_over_four_devices():
    """:func:`_check_sharded_chains` in a fresh interpreter (module docstring), in float64."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{default_xla_flags()} --xla_force_host_platform_device_count=4".strip(),
               PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    code = "import test_numpyro_sharding as t; t._check_sharded_chains(); print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=here, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-4000:]


def _check_sharded_chains():
    """8 vectorized chains of ``AdjustedESH`` with keys from ``chain_keys`` on 4 CPU
    devices (float64): the run is partitioned over the devices (its final state lives on all
    4), and a device's 2 chains give exactly the draws and step counts of those 2 chains run
    as one batch on one device (checked for the first and the last device). Against all 8
    chains as one batch on one device the draws agree to rounding only (the program for a
    batch of 8 rounds differently from that for 2, ~1e-9 in float64; measured by hand, and
    ``test_vectorized_chain_equals_the_chain_run_alone`` covers batch sizes). The ensemble
    mode (``run_ensemble``) with such keys runs sharded over the 4 devices too, with the
    right spread."""
    assert jax.device_count() == 4, jax.devices()
    keys = chain_keys(jax.random.PRNGKey(3), 8)
    assert len(keys.sharding.device_set) == 4
    data = jax.random.key_data(keys) if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys
    np.testing.assert_array_equal(np.asarray(data), np.asarray(jax.random.split(jax.random.PRNGKey(3), 8)))
    sharded = _run(keys, 8)
    # the run followed the keys' layout: its final state is spread over the 4 devices
    assert len(sharded.last_state.z["x"].sharding.device_set) == 4, sharded.last_state.z["x"].sharding
    x = _draws(sharded)
    steps = np.asarray(sharded.get_extra_fields(group_by_chain=True)["n_steps"])
    assert x.shape == (8, 10, 3) and np.unique(x[:, :, 0]).size > 20, np.unique(x[:, :, 0]).size
    # each device ran its 2 chains as the single-device program for a batch of 2 runs them
    plain = jax.random.split(jax.random.PRNGKey(3), 8)
    for k in (0, 3):
        alone = _run(plain[2 * k: 2 * k + 2], 2)
        assert len(alone.last_state.z["x"].sharding.device_set) == 1
        np.testing.assert_array_equal(x[2 * k: 2 * k + 2], _draws(alone))
        np.testing.assert_array_equal(steps[2 * k: 2 * k + 2],
                                      np.asarray(alone.get_extra_fields(group_by_chain=True)["n_steps"]))
    # the ensemble mode follows the keys' layout too (its cross-chain averages become
    # cross-device reductions, so it matches a one-device run to rounding only, not bitwise)
    ens = run_ensemble(_model, chain_keys(jax.random.PRNGKey(5), 64), num_samples=20, chunk=20)
    assert len(ens.last_state.z["x"].sharding.device_set) == 4, ens.last_state.z["x"].sharding
    xe = np.asarray(ens.get_samples(group_by_chain=True)["x"])
    assert xe.shape == (64, 20, 3) and np.all(np.isfinite(xe))
    np.testing.assert_allclose(xe.std(axis=(0, 1)), [1.0, 2.0, 3.0], rtol=0.15)
    with pytest.raises(ValueError, match="multiple of the 4 devices"):
        chain_keys(jax.random.PRNGKey(0), 6)
