"""``TunedHMC``: Metropolis-adjusted Euclidean HMC that tunes itself, for NumPyro.

Per transition: a fresh momentum ``p ~ N(0, I)`` in the whitened frame, ``n`` leapfrog
steps (:func:`esh_kernels.core.euclidean_leapfrog` with the preconditioner ``L``), and a
Metropolis test on ``dH = dE + |p'|^2/2 - |p|^2/2``. The number of steps is jittered,
``n = ceil(h T / eps)`` with ``h`` the base-2 Halton number of the iteration (ChEES-HMC,
``esh_math.md`` §8), and capped at ``max_steps``.

Warmup tunes, with nothing to set by hand:

* the step size ``eps``: dual averaging to ``target_accept_prob``, started from a
  reasonable-step-size search at the initial point and restarted after every metric
  window (Stan's schedule, shared with ``AdjustedESH`` through ``core/warmup.py``), and
  at 0.1 when it collapses below 1e-3 in the whitened frame after the first window
  (``esh_math.md`` §7.3);
* a diagonal (or dense) mass matrix from windowed Welford estimates;
* the trajectory length ``T``, by one of two rules:

  - **single-chain** (``cross_chain=False``, the default; also ``sequential``/``parallel``
    or one chain whatever ``cross_chain`` says): each chain sets
    ``T = uturn_factor * (mean time to a U-turn)``. On one warmup iteration in four
    (``esh_math.md`` §7.3) the trajectory is
    continued past the proposal until NUTS's no-U-turn criterion fails in the whitened
    frame; the running mean of these times (restarted with each new metric) sets
    ``T``. ChEES about the chain's running mean (the ensemble mean replaced by a Welford
    mean) was tried first and rejected by measurement: one chain's ChEES gradient is so
    noisy (signal/noise ~0.1 per iteration at d = 100) that Adam wanders past the first
    optimum onto the plateau of later local optima (T = 10-40 on a 100-D Gaussian whose
    optimum is ~2.3; 13-24 ESS per 1000 gradients instead of 160), while U-turn times are
    nearly deterministic in high dimension (T within 5% across chains).
  - **cross-chain** (opt-in: ``chain_method="vectorized"`` with ``C >= 2`` chains and
    ``cross_chain=True``; it couples the chains): ChEES (Hoffman, Radul & Sountsov 2021)
    as in BlackJAX/TFP. Adam ascent on ``log T`` of the acceptance-weighted ensemble ChEES
    gradient; one shared ``eps`` (dual averaging on the chains' mean acceptance), one
    shared ``T`` and one mass matrix pooled over all chains' draws. The shared values are
    stored broadcast to shape ``(C,)`` so that every collected field has a chain axis.

  The two rules are different algorithms, so a vectorized run with ``cross_chain=True``
  does NOT reproduce a sequential run draw for draw; with the default it does (chain ``k``
  of a vectorized run equals chain ``k`` run alone). Per-chain tuning is the default
  because shared tuning lets one stuck chain set everyone's parameters: on the 504-D
  hierarchical regression ``hier_500`` (``benchmarks/tuned_hmc_cross_chain.py``) the shared
  ``T`` collapsed to 0.37 with 4 chains and the shared ``eps`` to 0.02-0.04 with 16, while
  the per-chain rule converged on every seed (``docs/kernels/tuned_hmc.md``).
"""

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax, random, vmap
from numpyro.util import is_prng_key

from esh_kernels.core.hmc import TunedHMCState
from esh_kernels.core.options import TunedHMCOptions
from esh_kernels.core.adaptation import halton
from esh_kernels.core import hmc
from esh_kernels.core.metropolis import mean_accept_update
from esh_kernels.core.integrators import IntegratorState
from esh_kernels.core.tuned_warmup import (
    UTURN_FACTOR,
    tuned_chain_update,
    tuned_cross_chain_update,
    tuned_warmup_init,
    tracks_uturn,
    untuned_warning,
)
from esh_kernels.core.warmup import (
    step_size_search_init,
    step_size_search_result,
    step_size_search_update,
)
from esh_kernels.numpyro._base import FlatKernel


class _Proposal(NamedTuple):
    """What warmup's tuning needs from one transition."""

    x_start: Any
    x_proposal: Any
    velocity: Any  # whitened momentum at the proposal (= dx/dt in the whitened frame)
    duration: Any  # integration time of the proposal
    accept_prob: Any  # the acceptance the adaptation reads (``core.hmc.Outcome.adapt_accept_prob``)
    valid: Any
    uturn_time: Any  # integration time to the first U-turn (0 when not tracked)


class TunedHMC(FlatKernel):
    """HMC with nothing to set: step size, mass matrix and trajectory length are tuned in
    warmup. Exact (Metropolis-adjusted) whatever the tuning.

    Its own arguments (``step_size``, ``trajectory_length``, ``target_accept_prob``,
    ``adapt_mass_matrix``, ``cross_chain``, ``max_steps``, ``learning_rate``; keyword-only)
    are those of :class:`esh_kernels.core.options.TunedHMCOptions`, the same in NumPyro and
    Pyro (``docs/kernels/tuned_hmc.md``). The rest:

    :param model: a NumPyro model (give this or ``potential_fn``).
    :param potential_fn: a potential energy ``E(z) = -log p(z)`` on an unconstrained pytree;
        needs ``init_params``.
    :param dense_mass, inverse_mass_matrix, init_strategy, forward_mode_differentiation: as
        for :class:`esh_kernels.numpyro.AdjustedESH` (NumPyro's names and defaults).
    """

    options_type = TunedHMCOptions
    min_dim = 1
    #: single-chain rule: ``T = uturn_factor * mean U-turn time`` (``esh_math.md`` §7.3;
    #: a class attribute so that a subclass can sweep it)
    uturn_factor = UTURN_FACTOR
    #: cross-chain tuning over a vectorized batch of chains (set by ``init``)
    _batched_tuning = False
    #: where the initial step-size search starts (whitened frame; NumPyro's and Stan's 1)
    initial_step_size = 1.0

    def get_diagnostics_str(self, state):
        return "{} steps of size {:.2e}. acc. prob={:.2f}".format(
            int(jnp.ravel(state.n_steps)[0]),
            float(jnp.ravel(state.adapt_state.step_size)[0]),
            float(jnp.ravel(state.mean_accept_prob)[0]),
        )

    @property
    def _tune_length(self):
        return self._options.tune_length

    # -- cross-chain plumbing ------------------------------------------------------------

    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs={}):
        message = untuned_warning(num_warmup, self._options.step_size, self._options.trajectory_length,
                                 self._options.num_steps)
        if message is not None:
            warnings.warn(message, UserWarning, stacklevel=2)
        state = super().init(rng_key, num_warmup, init_params, model_args, model_kwargs)
        batched = not is_prng_key(rng_key)
        num_chains = rng_key.shape[0] if batched else 1
        self._batched_tuning = self._options.pools_chains(num_chains)
        if self._options.searches_step_size(num_warmup):
            value_and_grad = self._flat_value_and_grad(model_args, model_kwargs)
            search = lambda s: self._search_step_size(s, value_and_grad)  # noqa: E731
            state = vmap(search)(state) if batched else search(state)
            if self._batched_tuning:  # shared tuning starts from one step: the smallest
                step = jnp.broadcast_to(jnp.min(state.adapt_state.step_size), (num_chains,))
                state = vmap(self._with_initial_step)(state, step)
        if self._batched_tuning:
            self._sample_fn = self._sample_cross_chain
        return state

    def _search_step_size(self, state, value_and_grad):
        """Initial step size by the reasonable-step-size search (``core/warmup.py``,
        ``esh_math.md`` §7.3): one leapfrog step from the initial point per trial. Without
        it, dual averaging started at a fixed 0.1 and a far-tail start (e.g. NumPyro's
        ``test_binomial_stable``, gradient 1e6 at the initial point) made the first accepted
        trajectory overshoot by 40 logit units into a region it never left."""
        key, k_p = random.split(state.rng_key)
        start = state.integrator
        p0 = random.normal(k_p, start.x.shape, start.x.dtype)
        scale = state.adapt_state.scale

        def trial(search):
            energy_error = hmc.step_energy_error(start, p0, search.step, scale, value_and_grad)
            return step_size_search_update(search, energy_error)

        search = lax.while_loop(lambda s: jnp.logical_not(s.done), trial,
                                step_size_search_init(state.adapt_state.step_size))
        state = state._replace(rng_key=key)
        return self._with_initial_step(state, step_size_search_result(search))

    def _with_initial_step(self, state, step):
        adapt = self._initial_adapt(state.integrator.x, step)
        return state._replace(adapt_state=adapt)

    def _initial_adapt(self, x, step):
        length = self._options.initial_trajectory_length(step, self._warmup_config())
        return self._with_sites(tuned_warmup_init(x, step, length, self._dense_mass, self._scale0,
                                                 self._metric_mask))

    def _sample_cross_chain(self, state, value_and_grad):
        """All chains at once: per-chain transitions, then one shared adaptation step."""
        new, proposal = vmap(lambda s: self._transition(s, value_and_grad, False))(state)
        i = state.i[0]
        adapt = lax.cond(
            i < self._num_warmup,
            lambda a: self._adapt_cross_chain(a, i, new.integrator.x, proposal),
            lambda a: a,
            state.adapt_state,
        )
        return new._replace(adapt_state=adapt)

    # -- one chain -----------------------------------------------------------------------

    def _init_chain(self, x, energy, grad, rng_key, num_warmup):
        dtype = x.dtype
        step = self._options.step_size if self._options.step_size is not None else self.initial_step_size
        adapt = self._initial_adapt(x, jnp.asarray(step, dtype))
        zero = jnp.zeros((), dtype)
        integ = IntegratorState(x, jnp.zeros_like(x), zero, energy, grad)
        return TunedHMCState(
            jnp.array(0, jnp.int32), self._to_z(x), energy, integ, jnp.array(False),
            zero, zero, jnp.array(0, jnp.int32), energy, zero, zero, adapt, rng_key,
        )

    def _sample_chain(self, state, value_and_grad):
        new, proposal = self._transition(state, value_and_grad, self._tune_length)
        i = state.i
        adapt = lax.cond(
            i < self._num_warmup,
            lambda a: self._adapt_chain(a, i, new.integrator, proposal),
            lambda a: a,
            state.adapt_state,
        )
        return new._replace(adapt_state=adapt)

    def _transition(self, state, value_and_grad, track_uturn):
        """One HMC transition (:mod:`esh_kernels.core.hmc`) with the current tuning
        (``adapt_state`` left unchanged); ``track_uturn`` (single-chain tuning) follows the
        trajectory to its U-turn on the warmup iterations ``tracks_uturn`` picks."""
        key, k_p, k_acc = random.split(state.rng_key, 3)
        adapt = state.adapt_state
        start = state.integrator
        x0 = start.x
        dtype = x0.dtype
        p0 = random.normal(k_p, x0.shape, dtype)
        i = state.i
        track = jnp.asarray(track_uturn) & (i < self._num_warmup) & tracks_uturn(i)
        white = hmc.whitening(adapt.scale, self._dense_mass)
        carry, n = hmc.start(start, p0, halton(i).astype(dtype), adapt.step_size,
                             adapt.trajectory_length, self._options.max_steps, self._options.num_steps)
        carry = lax.while_loop(
            lambda c: hmc.running(c, n, track, self._options.max_steps),
            lambda c: hmc.step(c, n, x0, adapt.step_size, adapt.scale, white, self._dense_mass,
                               value_and_grad, track, track_uturn),
            carry,
        )
        out = hmc.finish(carry, start, p0, n, adapt.step_size, random.uniform(k_acc, (), dtype),
                         track, self.divergence_threshold, adapt.scale)
        proposal = _Proposal(x0, out.proposal.x, out.proposal.u, out.duration, out.adapt_accept_prob,
                             out.valid, out.uturn_time)
        new_state = TunedHMCState(
            i + 1, self._to_z(out.new.x), out.new.energy, out.new._replace(u=jnp.zeros_like(x0)),
            out.diverging, out.accept_prob,
            mean_accept_update(state.mean_accept_prob, out.accept_prob, i, self._num_warmup),
            carry.k.astype(jnp.int32), out.start_energy, out.energy_error, out.step_curvature, adapt, key,
        )
        return new_state, proposal

    # -- adaptation ----------------------------------------------------------------------

    def _warmup_config(self):
        return self._options.warmup_config(self._num_warmup, self._dense_mass, self._metric_mask,
                                           self.uturn_factor)

    def _adapt_chain(self, adapt, i, integrator, proposal):
        """Single-chain rule (``core/tuned_warmup.py``) after a transition to ``integrator``."""
        return tuned_chain_update(adapt, i, integrator.x, proposal.accept_prob, proposal.uturn_time,
                                  self._warmup_config(), integrator.grad)

    def _adapt_cross_chain(self, adapt, i, x, proposal):
        """Cross-chain rule (``core/tuned_warmup.py``). Every leaf of ``adapt`` has a
        leading chain axis; the tuning parameters are equal across it and are updated once
        for all chains, then broadcast back."""
        num_chains = x.shape[0]
        one = jax.tree.map(lambda a: a[0], adapt)
        shared, welford = tuned_cross_chain_update(
            one, adapt.welford, i, proposal.x_start, x, proposal.x_proposal, proposal.velocity,
            proposal.duration, proposal.accept_prob, proposal.valid, self._warmup_config(),
        )
        shared = jax.tree.map(lambda a: jnp.broadcast_to(a, (num_chains,) + jnp.shape(a)), shared)
        return shared._replace(welford=welford)
