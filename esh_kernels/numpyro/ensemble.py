"""Ensemble mode for NumPyro: many chains warmed up together by unadjusted isokinetic
dynamics, then ``AdjustedESH`` tuned across them (issue 17; ``docs/many_chains.md``,
"Ensemble mode"; formulas in ``esh_math.md`` §7.7 and :mod:`esh_kernels.core.ensemble`).

The scheme is that of LAPS (Robnik & Seljak, arXiv 2601.16696; BlackJAX 1.7.1
``adaptation/laps.py``), written on this package's primitives:

1. **Warm start.** All chains from NumPyro's ``init_strategy``; unadjusted isokinetic
   leapfrog steps (``D = d - 1``, one gradient each, partial velocity refresh) with one
   step size, one diagonal preconditioner and one refresh length shared by the ensemble
   and re-read from it after every step, until the ensemble's bias estimate
   (:func:`esh_kernels.core.ensemble.bias_estimate`) has stayed below ``bias_tol`` for
   ``core.ensemble.WARM_PATIENCE`` steps, or ``max_warm_steps``. One jitted ``lax.while_loop``; the
   chain axis is vectorised and the ensemble averages are reductions over it.
2. **Adjusted tuning.** Metropolis-adjusted ``AdjustedESH`` transitions of all chains
   with the preconditioner (dense up to 50 dimensions with enough chains,
   :func:`esh_kernels.core.ensemble.tune_metric`) and trajectory length read off the warm
   ensemble, while a
   bisection on the ensemble's mean acceptance sets the shared step size (at most
   ``max_tune_steps`` transitions).
3. **Sampling.** ``numpyro.infer.MCMC(AdjustedESH(model, step_size=, trajectory_length=,
   inverse_mass_matrix=, dense_mass=), num_warmup=0, num_chains=C, chain_method="vectorized")`` from the
   tuned ensemble, in chunks of ``chunk`` draws continued from ``mcmc.last_state``, until
   NumPyro's split R-hat and ESS (those ``print_summary`` shows) and the bias estimate meet
   their targets, or ``num_samples`` draws.

The result is that ``MCMC`` object, holding every chunk's draws, so ``get_samples``,
``print_summary`` and ``esh_kernels.to_arviz`` work as after any run; what the ensemble
mode itself did is in its ``ensemble_info`` dict.
"""

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random, vmap
from jax.flatten_util import ravel_pytree
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import initialize_model
from numpyro.util import is_prng_key

from esh_kernels.core import ensemble
from esh_kernels.core.checks import check_int
from esh_kernels.core.mass_matrix import inverse_mass_matrix
from esh_kernels.numpyro._isokinetic import isokinetic_transition
from esh_kernels.numpyro.adjusted_esh import AdjustedESH
from esh_kernels.numpyro.sharding import follow_keys


class WarmState(NamedTuple):
    """The ensemble during the warm start."""

    core: Any  # core.ensemble.WarmState (leading chain axis C on per-chain leaves)
    keys: Any  # one PRNG key per chain
    n: Any  # steps taken
    trace: Any  # bias estimate after each step (NaN past ``n``)


class TuneState(NamedTuple):
    """The ensemble during the adjusted tuning."""

    integ: Any
    keys: Any
    log_step: Any
    bracket: Any  # core.ensemble.StepBracket
    n: Any  # transitions made
    grads: Any  # gradient evaluations per chain so far
    accept: Any  # the ensemble's mean acceptance of the last transition


def run_ensemble(model, rng_key, *model_args, num_chains=None, num_samples=1000, chunk=100,
                 max_warm_steps=2000, bias_tol=0.01, rhat_target=1.01, ess_target=400.0,
                 max_tune_steps=30, init_strategy=init_to_uniform, progress_bar=False,
                 **model_kwargs):
    """Sample ``model`` with an ensemble of chains: warm start, adjusted tuning across the
    ensemble, then ``AdjustedESH`` in a NumPyro ``MCMC`` that stops early once its targets
    are met (module docstring; ``docs/many_chains.md``).

    :param model: a NumPyro model with continuous latent sites (at least 2 unconstrained
        dimensions).
    :param rng_key: a PRNG key, or one key per chain (e.g. from
        :func:`esh_kernels.numpyro.chain_keys`, whose layout over a device ``Mesh`` every
        phase then follows).
    :param model_args, model_kwargs: the model's arguments.
    :param num_chains: number of chains, at least 2 (default 1024, or the number of keys).
    :param num_samples: most draws per chain kept from the sampling phase.
    :param chunk: draws per chain between two checks of the stopping targets.
    :param max_warm_steps: most unadjusted steps (gradients per chain) of the warm start.
    :param bias_tol: the warm start ends once the ensemble's bias estimate (about
        ``b2``, the second-moment bias, on Gaussians; ``esh_math.md`` §7.7) is below it; the
        sampling phase stops only when its final ensemble is below it too.
    :param rhat_target: sampling stops once the largest split R-hat over all latent
        coordinates is below this (NumPyro's estimate, as ``print_summary`` shows it) ...
    :param ess_target: ... and the smallest ESS over them is at least this.
    :param max_tune_steps: most adjusted transitions spent tuning the step size.
    :param init_strategy: NumPyro init strategy (default ``init_to_uniform``).
    :param progress_bar: NumPyro's progress bar for the sampling chunks.
    :return: the ``numpyro.infer.MCMC`` that sampled, with all kept draws, and an
        ``ensemble_info`` dict: ``warm_steps``, ``bias_trace`` (bias estimate after each
        warm step), ``tune_steps``, ``tune_accept_prob``, ``step_size``,
        ``trajectory_length``, ``inverse_mass_matrix`` (a ``(d, d)`` matrix where the metric is
        dense, :func:`esh_kernels.core.ensemble.tune_metric`; else ``(d,)``), ``gradients`` (per chain: ``warm``,
        ``tune``, ``sampling``, ``total``), ``num_draws``, ``stopped_early``, ``checks``
        (after each chunk: draws, max R-hat, min ESS, bias estimate).
    """
    keys, num_chains = _chain_keys(rng_key, num_chains)
    num_samples, chunk, max_warm_steps, max_tune_steps, bias_tol, ess_target, rhat_target = (
        ensemble.check_run_arguments(num_samples, chunk, max_warm_steps, max_tune_steps, bias_tol,
                                     ess_target, rhat_target))

    k_init, k_warm, k_tune, k_sample = follow_keys(
        tuple(jnp.swapaxes(vmap(lambda k: random.split(k, 4))(keys), 0, 1)), keys)
    x0, unravel, value_and_grad = _flat_model(model, k_init, init_strategy, model_args, model_kwargs)
    d = x0.shape[-1]
    ensemble.check_dimension(d)

    warm = _warm_start(x0, k_warm, value_and_grad, max_warm_steps, bias_tol, keys)
    tune = _tune(warm.core.integ, k_tune, value_and_grad, max_tune_steps)
    step_size, length = float(jnp.exp(tune.log_step)), float(tune.length)
    scale, dense = ensemble.sampling_metric(np.asarray(tune.scale, dtype=np.float64), num_chains)
    imm = inverse_mass_matrix(scale, dense)

    kernel = AdjustedESH(model, step_size=step_size, adapt_step_size=False, trajectory_length=length,
                         inverse_mass_matrix=imm, adapt_mass_matrix=False, dense_mass=dense,
                         init_strategy=init_strategy)
    mcmc = MCMC(kernel, num_warmup=0, num_samples=min(chunk, num_samples), num_chains=num_chains,
                chain_method="vectorized", progress_bar=progress_bar)
    init_params = vmap(unravel)(tune.state.integ.x)
    mcmc.run(k_sample, *model_args, init_params=init_params, **model_kwargs)
    checks, stopped = _sample_until_targets(mcmc, model_args, model_kwargs, num_samples, chunk,
                                            rhat_target, ess_target, bias_tol)

    n_warm = int(warm.n)
    sampling_grads = float(np.mean(np.sum(np.asarray(
        mcmc.get_extra_fields(group_by_chain=True)["n_steps"], dtype=np.float64), axis=1)))
    grads = {"warm": float(n_warm), "tune": float(np.mean(np.asarray(tune.state.grads))),
             "sampling": sampling_grads}
    grads["total"] = sum(grads.values())
    mcmc.ensemble_info = {
        "warm_steps": n_warm,
        "bias_trace": np.asarray(warm.trace[:n_warm]),
        "tune_steps": int(tune.state.n),
        "tune_accept_prob": float(tune.state.accept),
        "step_size": step_size,
        "trajectory_length": length,
        "inverse_mass_matrix": imm,
        "gradients": grads,
        "num_draws": checks[-1]["draws"],
        "stopped_early": stopped,
        "checks": checks,
    }
    return mcmc


def _chain_keys(rng_key, num_chains):
    """One key per chain and their number: split from one key (1024 chains by default), or
    the batch of keys given (whose number must match ``num_chains`` if that is given)."""
    if num_chains is not None:
        num_chains = check_int("num_chains", num_chains, 2)
    if is_prng_key(rng_key):
        num_chains = 1024 if num_chains is None else num_chains
        return random.split(rng_key, num_chains), num_chains
    given = int(rng_key.shape[0])
    if num_chains is not None and num_chains != given:
        raise ValueError(f"num_chains={num_chains} but {given} chain keys were given")
    return rng_key, check_int("num_chains (the number of keys)", given, 2)


def _flat_model(model, keys, init_strategy, model_args, model_kwargs):
    """Initial flat positions ``(C, d)`` from ``init_strategy`` (one NumPyro
    ``initialize_model`` per chain key), the map from a flat vector back to the
    unconstrained pytree, and ``value_and_grad(x) -> (E, dE/dx)`` on one flat vector."""
    info = initialize_model(keys, model, init_strategy=init_strategy, model_args=model_args,
                            model_kwargs=model_kwargs)
    z0 = info.param_info.z
    _, unravel = ravel_pytree(jax.tree.map(lambda a: a[0], z0))
    x0 = vmap(lambda z: ravel_pytree(z)[0])(z0)
    potential = info.potential_fn
    return follow_keys(x0, keys), unravel, jax.value_and_grad(lambda x: potential(unravel(x)))


def _warm_start(x0, keys, value_and_grad, max_steps, bias_tol, chain_keys):
    """Phase 1 (module docstring): :func:`esh_kernels.core.ensemble.warm_step` of the whole
    ensemble until the bias estimate has been below ``bias_tol`` for ``WARM_PATIENCE``
    steps or ``max_steps`` steps."""
    batch_vg = vmap(value_and_grad)
    energy, grad = batch_vg(x0)
    keys, k_dir = _split(keys)
    state = WarmState(ensemble.warm_init(x0, energy, grad, _normal(k_dir, x0)), keys,
                      jnp.array(0, jnp.int32), jnp.full((max_steps,), jnp.nan, x0.dtype))
    state = follow_keys(state, chain_keys)

    def running(s):
        return (s.n < max_steps) & (s.core.below < ensemble.WARM_PATIENCE)

    return jax.jit(lambda s: lax.while_loop(running, partial(_warm_step, batch_vg=batch_vg,
                                                             bias_tol=bias_tol), s))(state)


def _warm_step(s, batch_vg, bias_tol):
    """One step of every chain (:func:`esh_kernels.core.ensemble.warm_step`) with its
    random numbers from the chains' keys."""
    keys, k_dir = _split(s.keys)
    keys, k_noise = _split(keys)
    x = s.core.integ.x
    core = ensemble.warm_step(s.core, batch_vg, _normal(k_dir, x), _normal(k_noise, x), bias_tol)
    return WarmState(core, keys, s.n + 1, s.trace.at[s.n].set(core.bias))


class Tuned(NamedTuple):
    """The adjusted phase's hyperparameters and the ensemble after its tuning."""

    state: Any  # TuneState
    log_step: Any
    length: Any
    scale: Any


def _tune(integ, keys, value_and_grad, max_steps):
    """Phase 2 (module docstring): the preconditioner and trajectory length of
    :func:`esh_kernels.core.ensemble.tune_init`, then ``AdjustedESH`` transitions of every
    chain while :func:`esh_kernels.core.ensemble.tune_update` moves the shared step size to
    ``TARGET_ACCEPT``."""
    scale, length, log_step = ensemble.tune_init(integ.x, integ.grad)
    dtype = integ.x.dtype
    zero = jnp.zeros((), dtype)
    state = TuneState(integ, keys, log_step, ensemble.step_bracket_init(log_step),
                      jnp.array(0, jnp.int32), jnp.zeros(integ.x.shape[:1], dtype), zero)
    transition = vmap(partial(isokinetic_transition, value_and_grad=value_and_grad,
                              max_steps=ensemble.MAX_STEPS), in_axes=(0, 0, None, None, None))

    def step(s):
        keys, k_t = _split(s.keys)
        prop = transition(s.integ, k_t, jnp.exp(s.log_step), length, scale)
        bracket, log_step, accept = ensemble.tune_update(s.bracket, s.log_step, prop.adapt_accept_prob)
        return TuneState(prop.state, keys, log_step, bracket, s.n + 1,
                         s.grads + prop.num_steps.astype(dtype), accept)

    def running(s):
        return (s.n < max_steps) & ~s.bracket.done

    state = jax.jit(lambda s: lax.while_loop(running, step, s))(state)
    return Tuned(state, state.log_step, length, scale)


def _sample_until_targets(mcmc, model_args, model_kwargs, num_samples, chunk, rhat_target,
                          ess_target, bias_tol):
    """Continue ``mcmc`` in chunks (NumPyro's ``post_warmup_state = last_state`` pattern)
    until the targets are met or it holds ``num_samples`` draws per chain; keep every
    chunk's draws in it. Returns the checks made after each chunk and whether it stopped
    before ``num_samples``."""
    kept = [mcmc._states]
    checks = [_check(mcmc, kept)]
    while (not ensemble.targets_met(checks[-1], rhat_target, ess_target, bias_tol)
           and checks[-1]["draws"] < num_samples):
        mcmc.num_samples = min(chunk, num_samples - checks[-1]["draws"])
        mcmc.post_warmup_state = mcmc.last_state
        mcmc.run(mcmc.post_warmup_state.rng_key, *model_args, **model_kwargs)
        kept.append(mcmc._states)
        checks.append(_check(mcmc, kept))
    _keep_all(mcmc, kept)
    return checks, checks[-1]["draws"] < num_samples


def _keep_all(mcmc, kept):
    """Make ``mcmc`` hold the draws of all its chunks. NumPyro keeps only the latest run's
    draws, in ``MCMC._states`` (what ``get_samples``, ``get_extra_fields`` and
    ``print_summary`` read, grouped by chain): the chunks are joined along the draw axis
    there, and the flat cache is reset."""
    if len(kept) > 1:
        mcmc._states = jax.tree.map(lambda *a: jnp.concatenate(a, axis=1), *kept)
        mcmc._states_flat = None


def _check(mcmc, kept):
    """The stopping statistics over all draws so far: the largest split R-hat and smallest
    ESS over the latent sites' coordinates (NumPyro's estimators, as ``print_summary``),
    and the bias estimate of the last draw's ensemble."""
    latent = mcmc.last_state.z.keys() if isinstance(mcmc.last_state.z, dict) else None
    rhat, ess = [], []
    for name in kept[0]["z"]:
        if latent is not None and name not in latent:
            continue
        draws = np.concatenate([np.asarray(k["z"][name], dtype=np.float64) for k in kept], axis=1)
        draws = draws.reshape(draws.shape[:2] + (-1,))
        rhat.append(split_gelman_rubin(draws) if draws.shape[1] >= 4 else np.full(draws.shape[2], np.inf))
        ess.append(effective_sample_size(draws))
    integ = mcmc.last_state.integrator
    return {
        "draws": int(sum(np.shape(jax.tree.leaves(k["z"])[0])[1] for k in kept)),
        "rhat_max": float(np.max(np.concatenate(rhat))),
        "ess_min": float(np.min(np.concatenate(ess))),
        "bias": float(ensemble.bias_estimate(integ.x, integ.grad)),
    }




def _split(keys):
    """Per-chain key split: ``(new_keys, subkeys)``."""
    both = vmap(random.split)(keys)
    return both[:, 0], both[:, 1]


def _normal(keys, like):
    """One standard normal vector per chain, shaped and typed like ``like`` (``(C, d)``)."""
    return vmap(lambda k: random.normal(k, like.shape[1:], like.dtype))(keys)
