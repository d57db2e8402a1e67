"""What both backends' ``run_ensemble`` promise about a warm start from far too wide a start
on a diagonal Gaussian (``ensemble_info``, ``docs/many_chains.md``), checked alike for NumPyro
and Pyro."""

import numpy as np

from esh_kernels.core.ensemble import WARM_PATIENCE


def check_warm_start_and_tuning(info, max_warm, variances):
    """The bias estimate fell from above 1e4 to below the tolerance 0.01, where it stayed
    for ``WARM_PATIENCE`` steps, and the warm start stopped at the first such run of steps,
    one gradient per step; the metric read off the ensemble is the target's ``variances``;
    the bisection ended near ``AdjustedESH``'s acceptance target within its 30 transitions."""
    trace = info["bias_trace"]
    assert 0 < info["warm_steps"] < max_warm and len(trace) == info["warm_steps"]
    assert trace[0] > 1e4, trace[:5]
    assert np.all(trace[-WARM_PATIENCE:] < 0.01) and np.all(np.isfinite(trace))
    assert len(trace) == WARM_PATIENCE or trace[-WARM_PATIENCE - 1] >= 0.01
    assert info["gradients"]["warm"] == info["warm_steps"]
    np.testing.assert_allclose(info["inverse_mass_matrix"], variances, rtol=0.3)
    assert 0.6 < info["tune_accept_prob"] < 0.8
    assert 0 < info["tune_steps"] <= 30 and info["gradients"]["tune"] > 0


def check_stopped_early(info, num_samples, chunk):
    """The run checked its targets after every ``chunk`` draws and stopped, before
    ``num_samples``, at the first check that met them all (R-hat below 1.01, ESS at least
    400, bias estimate below 0.01); every earlier check missed one."""
    checks = info["checks"]
    assert info["stopped_early"] and info["num_draws"] < num_samples
    assert [c["draws"] for c in checks] == [chunk * (i + 1) for i in range(len(checks))]
    last = checks[-1]
    assert last["rhat_max"] < 1.01 and last["ess_min"] >= 400 and last["bias"] < 0.01
    for c in checks[:-1]:
        assert c["rhat_max"] >= 1.01 or c["ess_min"] < 400 or c["bias"] >= 0.01
