"""Ensemble mode for Pyro: many chains warmed up together by unadjusted isokinetic dynamics,
then ``AdjustedESH`` tuned across them, sampled by :class:`esh_kernels.pyro.BatchedMCMC`
(issue 17; ``docs/many_chains.md``, "Ensemble mode"; formulas in ``esh_math.md`` §7.7).

The algorithm is that of :func:`esh_kernels.numpyro.run_ensemble`, from the same functions
of :mod:`esh_kernels.core.ensemble`; only the loops and the random numbers are torch's.
The ``C`` chains are one ``(C, d)`` batch whose potential runs the model once for all of
them (:class:`esh_kernels.pyro._model.BatchedPotential`):

1. **Warm start.** :func:`~esh_kernels.core.ensemble.warm_step` of every chain until the
   bias estimate has stayed below ``bias_tol`` for ``WARM_PATIENCE`` steps, or
   ``max_warm_steps``. Host synchronisation: one per step, the count of steps below the
   tolerance (everything else, the bias trace included, stays on the device).
2. **Adjusted tuning.** With the preconditioner (dense up to 50 dimensions with enough
   chains, :func:`~esh_kernels.core.ensemble.tune_metric`) and trajectory length read off
   the warm ensemble, ``AdjustedESH`` transitions of every chain (the kernel's own
   transition, its leapfrog step compiled with ``jit_compile``) while
   :func:`~esh_kernels.core.ensemble.tune_update` bisects the shared step size.
   Host synchronisations: two per transition, the largest number of steps over the chains
   (as every ``AdjustedESH`` transition) and whether the bisection is done.
3. **Sampling.** ``BatchedMCMC(AdjustedESH(model, step_size=, trajectory_length=,
   inverse_mass_matrix=, dense_mass=, adapt_mass_matrix=False), warmup_steps=0)`` from the tuned
   ensemble, checked every ``chunk`` draws against Pyro's split R-hat and ESS
   (``pyro.ops.stats``, the estimators of ``BatchedMCMC.diagnostics``) and the bias
   estimate. Host synchronisations: one per draw (``AdjustedESH``'s), and one per chunk
   for the check.

The result is that ``BatchedMCMC``, holding every kept draw, so ``get_samples``,
``diagnostics``, ``summary`` and ``esh_kernels.to_arviz`` work as after any run; what the
ensemble mode itself did is in its ``ensemble_info`` dict.
"""

import math

import pyro
import torch
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

from esh_kernels.core import ensemble, mass_matrix
from esh_kernels.core.checks import check_bool, check_int
from esh_kernels.pyro._isokinetic import draw_isokinetic
from esh_kernels.pyro.adjusted_esh import AdjustedESH
from esh_kernels.pyro.batched import BatchedMCMC


def run_ensemble(model=None, *model_args, num_chains=1024, num_samples=1000, chunk=100,
                 max_warm_steps=2000, bias_tol=0.01, rhat_target=1.01, ess_target=400.0,
                 max_tune_steps=30, rng_seed=None, init_strategy=init_to_uniform,
                 potential_fn=None, initial_params=None, transforms=None, max_plate_nesting=None,
                 jit_compile=True, progress_bar=False, **model_kwargs):
    """Sample ``model`` with an ensemble of chains: warm start, adjusted tuning across the
    ensemble, then ``AdjustedESH`` in a :class:`~esh_kernels.pyro.BatchedMCMC` that stops
    early once its targets are met (module docstring; ``docs/many_chains.md``). The
    arguments mean what they mean for :func:`esh_kernels.numpyro.run_ensemble`.

    :param model: a Pyro model with continuous latent sites (at least 2 unconstrained
        dimensions), or None with ``potential_fn``.
    :param model_args, model_kwargs: the model's arguments.
    :param num_chains: number of chains, at least 2.
    :param num_samples: most draws per chain kept from the sampling phase.
    :param chunk: draws per chain between two checks of the stopping targets.
    :param max_warm_steps: most unadjusted steps (gradients per chain) of the warm start.
    :param bias_tol: the warm start ends once the ensemble's bias estimate (about ``b2``,
        the second-moment bias, on Gaussians; ``esh_math.md`` §7.7) is below it; the
        sampling phase stops only when its final ensemble is below it too.
    :param rhat_target: sampling stops once the largest split R-hat over all latent
        coordinates (unconstrained) is below this ...
    :param ess_target: ... and the smallest ESS over them is at least this.
    :param max_tune_steps: most adjusted transitions spent tuning the step size.
    :param rng_seed: if given, ``pyro.set_rng_seed(rng_seed)`` first; every random number
        (``init_strategy`` included) comes from torch's global generator, as in
        ``pyro.infer.MCMC``.
    :param init_strategy: Pyro init strategy (default ``init_to_uniform``).
    :param potential_fn: instead of a model, ``E({site: (C, *shape)}) -> (C,)`` on
        unconstrained values (``BatchedMCMC``'s batched ``potential_fn``); needs
        ``initial_params``.
    :param initial_params: ``{site: (num_chains, *shape)}`` unconstrained starting values
        (default: ``init_strategy`` per chain).
    :param transforms: as for :class:`esh_kernels.pyro.AdjustedESH`.
    :param max_plate_nesting: as for :class:`esh_kernels.pyro.AdjustedESH`.
    :param jit_compile: as for :class:`esh_kernels.pyro.AdjustedESH`.
    :param progress_bar: ``BatchedMCMC``'s progress bar for the sampling phase.
    :return: the :class:`~esh_kernels.pyro.BatchedMCMC` that sampled, with all kept draws,
        and an ``ensemble_info`` dict with the keys of the NumPyro one: ``warm_steps``,
        ``bias_trace`` (bias estimate after each warm step), ``tune_steps``,
        ``tune_accept_prob``, ``step_size``, ``trajectory_length``,
        ``inverse_mass_matrix`` (a ``(d, d)`` matrix where the metric is dense,
        :func:`esh_kernels.core.ensemble.tune_metric`; else ``(d,)``), ``gradients`` (per chain: ``warm``, ``tune``,
        ``sampling``, ``total``), ``num_draws``, ``stopped_early``, ``checks`` (after each
        chunk: draws, max R-hat, min ESS, bias estimate).
    """
    num_chains = check_int("num_chains", num_chains, 2)
    num_samples, chunk, max_warm_steps, max_tune_steps, bias_tol, ess_target, rhat_target = (
        ensemble.check_run_arguments(num_samples, chunk, max_warm_steps, max_tune_steps, bias_tol,
                                     ess_target, rhat_target))
    progress_bar = check_bool("progress_bar", progress_bar)
    if rng_seed is not None:
        pyro.set_rng_seed(check_int("rng_seed", rng_seed, 0))

    kernel_args = dict(potential_fn=potential_fn, init_strategy=init_strategy, transforms=transforms,
                       max_plate_nesting=max_plate_nesting, jit_compile=jit_compile)
    # the chains, their batched potential and the compiled AdjustedESH transition; "auto" gives
    # it the metric layout core.ensemble.tune_metric picks (a matrix up to DENSE_MAX_DIM, which
    # may hold the diagonal only: between 51 and 150 dimensions the tuning transitions carry a
    # d x d diagonal per chain, C d^2 numbers, for at most max_tune_steps transitions; the
    # sampling phase gets core.ensemble.sampling_metric, a vector there)
    tuner = AdjustedESH(model, dense_mass="auto", **kernel_args)
    with pyro.poutine.block(), pyro.validation_enabled(False):  # as BatchedMCMC runs the model
        tuner.setup_batched(0, num_chains, *model_args, initial_params=initial_params, **model_kwargs)
        ensemble.check_dimension(tuner._layout.data_dim)
        warm, n_warm, trace = _warm_start(tuner._state.integrator, tuner._value_and_grad, tuner._rng,
                                          max_warm_steps, bias_tol)
        tuned = _tune(tuner, warm.integ, max_tune_steps)
    layout = tuner._layout
    tuner.cleanup()

    step_size, length = float(tuned["step_size"]), float(tuned["length"])
    scale, dense = ensemble.sampling_metric(tuned["scale"], num_chains)
    inverse_mass_matrix = mass_matrix.inverse_mass_matrix(scale, dense).double().cpu().numpy()
    kernel = AdjustedESH(model, step_size=step_size, adapt_step_size=False, trajectory_length=length,
                         inverse_mass_matrix=inverse_mass_matrix, adapt_mass_matrix=False,
                         dense_mass=dense, **kernel_args)
    mcmc = BatchedMCMC(kernel, num_samples=num_samples, warmup_steps=0, num_chains=num_chains,
                       initial_params=layout.unravel(tuned["x"]), disable_progbar=not progress_bar)
    checks = []

    def stop(draws):
        checks.append(_check(draws, kernel._state.integrator))
        return ensemble.targets_met(checks[-1], rhat_target, ess_target, bias_tol)

    mcmc._run(model_args, model_kwargs, stop=stop, every=chunk)

    sampling = [d["gradient evaluations (sampling)"] for d in mcmc._diagnostics]
    grads = {"warm": float(n_warm), "tune": tuned["grads"], "sampling": sum(sampling) / num_chains}
    grads["total"] = sum(grads.values())
    mcmc.ensemble_info = {
        "warm_steps": n_warm,
        "bias_trace": trace.double().cpu().numpy(),
        "tune_steps": tuned["steps"],
        "tune_accept_prob": tuned["accept_prob"],
        "step_size": step_size,
        "trajectory_length": length,
        "inverse_mass_matrix": inverse_mass_matrix,
        "gradients": grads,
        "num_draws": checks[-1]["draws"],
        "stopped_early": checks[-1]["draws"] < num_samples,
        "checks": checks,
    }
    return mcmc


def _warm_start(integ, value_and_grad, rng, max_steps, bias_tol):
    """Phase 1 (module docstring) from the chains' initial ``integ``: returns the final
    :class:`esh_kernels.core.ensemble.WarmState`, the number of steps and the bias estimate
    after each step (a tensor on the chains' device)."""
    state = ensemble.warm_init(integ.x, integ.energy, integ.grad, rng.normal(integ.x, integ.x.shape))
    trace = []
    for _ in range(max_steps):
        state = _warm_step(state, value_and_grad, bias_tol, _warm_normals(rng, state.integ.x))
        trace.append(state.bias)
        if int(state.below) >= ensemble.WARM_PATIENCE:  # the step's one host synchronisation
            break
    return state, len(trace), torch.stack(trace)


def _warm_normals(rng, x):
    """The standard normals one warm step uses: a fresh direction for chains whose step
    was not finite, and the partial refresh (both ``(C, d)``)."""
    return rng.normal(x, x.shape), rng.normal(x, x.shape)


def _warm_step(state, value_and_grad, bias_tol, normals):
    """One warm step of every chain (:func:`esh_kernels.core.ensemble.warm_step`) with the
    random numbers ``normals = (direction, refresh)``, each ``(C, d)``."""
    with torch.no_grad():
        return ensemble.warm_step(state, value_and_grad, *normals, bias_tol)


def _tune(kernel, integ, max_steps):
    """Phase 2 (module docstring): the preconditioner and trajectory length of
    :func:`esh_kernels.core.ensemble.tune_init`, then ``AdjustedESH`` transitions of every
    chain (``kernel``'s compiled transition; each chain a step size, the shared one) while
    :func:`esh_kernels.core.ensemble.tune_update` moves the shared step size to
    ``TARGET_ACCEPT``. Returns the tuned hyperparameters, the positions, the number of
    transitions, their mean gradients per chain and the last mean acceptance."""
    scale, length, log_step = ensemble.tune_init(integ.x, integ.grad)
    bracket = ensemble.step_bracket_init(log_step)
    ones = torch.ones_like(integ.energy)
    chain_scale = scale.expand(integ.x.shape[:1] + scale.shape).contiguous()
    grads = torch.zeros_like(integ.energy)
    accept = math.nan
    steps = 0
    while steps < max_steps:
        draws = draw_isokinetic(kernel._rng, integ.x)
        prop, _ = kernel._isokinetic(integ, draws, ones * log_step.exp(), ones * length, chain_scale,
                                     ensemble.MAX_STEPS)
        integ = prop.state
        grads = grads + prop.num_steps
        bracket, log_step, accept = ensemble.tune_update(bracket, log_step, prop.adapt_accept_prob)
        steps += 1
        accept, done = torch.stack([accept, bracket.done.to(accept.dtype)]).tolist()
        if done:
            break
    return {"x": integ.x, "step_size": log_step.exp(), "length": length, "scale": scale,
            "steps": steps, "grads": float(grads.mean()), "accept_prob": accept}


def _check(draws, integ):
    """The stopping statistics over the draws so far (a list of ``(C, d)`` unconstrained
    tensors): the largest split R-hat and smallest ESS over the coordinates (Pyro's
    estimators, ``pyro.ops.stats``), and the bias estimate of the current ensemble
    ``integ``. One host synchronisation."""
    x = torch.stack(draws, dim=1).double()  # (C, n, d)
    ess = effective_sample_size(x, chain_dim=0, sample_dim=1)
    if x.shape[1] >= 4:
        rhat = split_gelman_rubin(x, chain_dim=0, sample_dim=1)
    else:
        rhat = torch.full_like(ess, math.inf)
    rhat_max, ess_min, bias = torch.stack([
        rhat.max(), ess.min(), ensemble.bias_estimate(integ.x, integ.grad).double()]).tolist()
    return {"draws": len(draws), "rhat_max": rhat_max, "ess_min": ess_min, "bias": bias}
