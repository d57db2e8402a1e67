"""``TunedHMC``: Metropolis-adjusted Euclidean HMC that tunes itself, for NumPyro.

Per transition: a fresh momentum ``p ~ N(0, I)`` in the whitened frame, ``n`` leapfrog
steps (:func:`esh_kernels.core.euclidean_leapfrog` with the preconditioner ``L``), and a
Metropolis test on ``dH = dE + |p'|^2/2 - |p|^2/2``. The number of steps is jittered,
``n = ceil(h T / eps)`` with ``h`` the base-2 Halton number of the iteration (ChEES-HMC,
``esh_math.md`` §8), and capped at ``max_steps``.

Warmup tunes, with nothing to set by hand:

* the step size ``eps``: dual averaging to ``target_accept_prob``, restarted after every
  metric window (Stan's schedule, shared with ``AdjustedESH`` through ``_warmup.py``);
* a diagonal (or dense) preconditioner from windowed Welford estimates;
* the trajectory length ``T``: Adam ascent on ``log T`` of the ChEES criterion.

  - ``chain_method="vectorized"`` (the kernel sees the whole batch, ``C >= 2`` chains)
    and ``cross_chain=True``: BlackJAX-style ChEES across chains. One shared ``eps``
    (dual averaging on the harmonic mean of the chains' acceptance probabilities), one
    shared ``T`` (acceptance-weighted ensemble ChEES gradient) and one metric pooled over
    all chains' draws. The shared values are stored broadcast to shape ``(C,)``.
  - otherwise (``sequential``/``parallel``, or ``cross_chain=False``): every chain tunes
    itself. Its ChEES gradient uses the chain's own running (Welford) mean of positions
    in place of the ensemble mean and Adam averages it over iterations.

  The two modes are different algorithms, so a vectorized run with ``cross_chain=True``
  does NOT reproduce a sequential run draw for draw; with ``cross_chain=False`` it does.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax, random, vmap
from numpyro.util import is_prng_key

from esh_kernels.core.adaptation import (
    chees_gradient,
    chees_init,
    chees_update,
    halton,
    welford_covariance,
    welford_init,
    welford_pool,
    welford_update,
)
from esh_kernels.core.integrators import IntegratorState, euclidean_leapfrog
from esh_kernels.core.metropolis import log_accept_prob
from esh_kernels.core.preconditioning import precond_inverse, scale_from_covariance
from esh_kernels.numpyro._base import FlatKernel, check_int, check_positive, check_probability
from esh_kernels.numpyro._warmup import (
    MetricSchedule,
    dual_averaging_restart,
    dual_averaging_step,
    initial_scale,
    metric_update,
)


class TunedHMCAdaptState(NamedTuple):
    step_size: Any
    trajectory_length: Any  # T: the longest jittered trajectory, n = ceil(h T / eps)
    scale: Any  # preconditioner L (vector, or lower-triangular matrix if dense_mass)
    dual: Any  # DualAveragingState of log eps
    welford: Any  # WelfordState of the current metric window
    chees: Any  # ChEESState: Adam on log T and its moving average
    center: Any  # WelfordState: the chain's running mean (single-chain ChEES rule)


class TunedHMCState(NamedTuple):
    """State of one chain (or of a batch, each leaf with a leading chain axis). ``z`` is
    the draw (unconstrained pytree); ``integrator`` holds the flat position with its cached
    potential energy and gradient."""

    i: Any
    z: Any
    potential_energy: Any
    integrator: IntegratorState
    diverging: Any
    accept_prob: Any
    mean_accept_prob: Any
    n_steps: Any  # gradient evaluations spent on this draw
    energy: Any  # Hamiltonian E(x) + |p|^2/2 at the start of the transition
    energy_error: Any
    adapt_state: TunedHMCAdaptState
    rng_key: Any


class _Proposal(NamedTuple):
    """What the trajectory-length adaptation needs from one transition."""

    x_start: Any
    x_proposal: Any
    velocity: Any
    duration: Any
    accept_prob: Any
    valid: Any


class TunedHMC(FlatKernel):
    """HMC with nothing to set: step size, mass matrix and trajectory length are tuned
    in warmup. Exact (Metropolis-adjusted) for any tuning.

    :param model: a NumPyro model (give this or ``potential_fn``).
    :param potential_fn: a potential energy ``E(z) = -log p(z)`` on an unconstrained pytree;
        needs ``init_params``.
    :param step_size: fixed leapfrog step size (whitened frame). Given: no step-size
        adaptation. Default: dual averaging.
    :param trajectory_length: fixed longest trajectory ``T`` (whitened frame; a transition
        integrates for ``h T``, ``h`` in (0, 1) jittered, mean ``T/2``). Given: not tuned.
        Default: ChEES.
    :param target_accept_prob: acceptance rate that warmup aims for (per chain; the
        harmonic mean over chains with cross-chain tuning). The default 0.8 was chosen by
        measurement (ESS per gradient on 100-D Gaussians, eight schools and a logistic
        regression, ``docs/benchmarks.md``): with jittered trajectories of
        ChEES length, 0.8 beat 0.65 (the asymptotic optimum for a fixed trajectory,
        which loses too many long trajectories to rejection in 1-100 dimensions) and 0.9
        (too many small steps).
    :param dense_mass: estimate a dense (Cholesky) mass matrix instead of a diagonal one.
    :param adapt_mass_matrix: whether warmup estimates the mass matrix (default True).
    :param cross_chain: with ``chain_method="vectorized"``, tune step size, mass matrix
        and trajectory length jointly across chains (ChEES ensemble, default True). False
        keeps every chain's tuning to itself, so vectorized runs equal sequential ones.
    :param max_steps: cap on leapfrog steps (gradient evaluations) per transition.
    :param learning_rate: Adam learning rate on ``log T`` (ChEES).
    :param init_strategy: NumPyro init strategy (default ``init_to_uniform``).
    :param forward_mode_differentiation: use forward-mode AD (e.g. for ``lax.while_loop``
        inside the model).
    """

    min_dim = 1
    divergence_threshold = 1000.0

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=None,
        trajectory_length=None,
        target_accept_prob=0.8,
        dense_mass=False,
        adapt_mass_matrix=True,
        cross_chain=True,
        max_steps=1024,
        learning_rate=0.025,
        init_strategy=None,
        forward_mode_differentiation=False,
    ):
        kw = {} if init_strategy is None else {"init_strategy": init_strategy}
        super().__init__(model, potential_fn, dense_mass=dense_mass,
                         forward_mode_differentiation=forward_mode_differentiation, **kw)
        self._step_size = check_positive("step_size", step_size)
        self._trajectory_length = check_positive("trajectory_length", trajectory_length)
        self._target_accept_prob = check_probability("target_accept_prob", target_accept_prob)
        if not isinstance(adapt_mass_matrix, bool):
            raise ValueError(f"`adapt_mass_matrix` must be True or False, got {adapt_mass_matrix!r}")
        if not isinstance(cross_chain, bool):
            raise ValueError(f"`cross_chain` must be True or False, got {cross_chain!r}")
        self._adapt_mass_matrix = adapt_mass_matrix
        self._cross_chain = cross_chain
        self._max_steps = check_int("max_steps", max_steps, 1)
        self._learning_rate = check_positive("learning_rate", learning_rate, allow_none=False)
        self._batched_tuning = False

    def get_diagnostics_str(self, state):
        return "{} steps of size {:.2e}. acc. prob={:.2f}".format(
            int(jnp.ravel(state.n_steps)[0]),
            float(jnp.ravel(state.adapt_state.step_size)[0]),
            float(jnp.ravel(state.mean_accept_prob)[0]),
        )

    # -- batched (cross-chain) plumbing ----------------------------------------------------

    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs={}):
        state = super().init(rng_key, num_warmup, init_params, model_args, model_kwargs)
        num_chains = 1 if is_prng_key(rng_key) else rng_key.shape[0]
        self._batched_tuning = self._cross_chain and num_chains >= 2
        if self._batched_tuning:
            self._sample_fn = self._sample_batch
        return state

    def _sample_batch(self, state, value_and_grad):
        """All chains at once: per-chain transitions, then one shared adaptation step."""
        new, proposal = vmap(lambda s: self._transition(s, value_and_grad))(state)
        i = state.i[0]
        adapt = lax.cond(
            i < self._num_warmup,
            lambda a: self._adapt_batch(a, i, new.integrator.x, proposal),
            lambda a: a,
            state.adapt_state,
        )
        return new._replace(adapt_state=adapt)

    # -- one chain -----------------------------------------------------------------------

    def _init_chain(self, x, energy, grad, rng_key, num_warmup):
        dtype = x.dtype
        step = jnp.asarray(self._step_size if self._step_size is not None else 0.1, dtype)
        length = self._trajectory_length if self._trajectory_length is not None else step
        length = jnp.asarray(length, dtype)
        adapt = TunedHMCAdaptState(
            step,
            length,
            initial_scale(x, self._dense_mass),
            dual_averaging_restart(step),
            welford_init(x, dense=self._dense_mass),
            chees_init(length),
            welford_init(x),
        )
        zero = jnp.zeros((), dtype)
        integ = IntegratorState(x, jnp.zeros_like(x), zero, energy, grad)
        return TunedHMCState(
            jnp.array(0, jnp.int32), self._to_z(x), energy, integ, jnp.array(False),
            zero, zero, jnp.array(0, jnp.int32), energy, zero, adapt, rng_key,
        )

    def _sample_chain(self, state, value_and_grad):
        new, proposal = self._transition(state, value_and_grad)
        i = state.i
        adapt = lax.cond(
            i < self._num_warmup,
            lambda a: self._adapt_chain(a, i, new.integrator.x, proposal),
            lambda a: a,
            state.adapt_state,
        )
        return new._replace(adapt_state=adapt)

    def _transition(self, state, value_and_grad):
        """One HMC transition with the current tuning (adapt_state left unchanged)."""
        key, k_p, k_acc = random.split(state.rng_key, 3)
        adapt = state.adapt_state
        start = state.integrator
        x0 = start.x
        dtype = x0.dtype
        p0 = random.normal(k_p, x0.shape, dtype)
        h = halton(state.i).astype(dtype)
        n = jnp.clip(jnp.ceil(h * adapt.trajectory_length / adapt.step_size), 1, self._max_steps)
        n = n.astype(jnp.int32)

        def finite(integ):
            return jnp.isfinite(integ.energy) & jnp.all(jnp.isfinite(integ.grad))

        def cond(c):
            k, integ = c
            return (k < n) & finite(integ)

        def body(c):
            k, integ = c
            return k + 1, euclidean_leapfrog(integ, adapt.step_size, value_and_grad, adapt.scale)

        k, end = lax.while_loop(cond, body, (jnp.array(0, jnp.int32), start._replace(u=p0)))
        kinetic0 = 0.5 * jnp.sum(p0 * p0)
        kinetic1 = 0.5 * jnp.sum(end.u * end.u)
        energy_error = end.energy - start.energy + kinetic1 - kinetic0
        ok = finite(end) & jnp.all(jnp.isfinite(end.x)) & jnp.all(jnp.isfinite(end.u))
        energy_error = jnp.where(ok, energy_error, jnp.inf)
        log_alpha = log_accept_prob(energy_error)
        accept_prob = jnp.exp(log_alpha)
        accept = jnp.log(random.uniform(k_acc, (), dtype)) < log_alpha
        diverging = energy_error > self.divergence_threshold
        new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), end, start)

        i = state.i
        boundary = i == self._num_warmup
        mean_accept = jnp.where(boundary, 0.0, state.mean_accept_prob)
        count = jnp.where(i < self._num_warmup, i, i - self._num_warmup) + 1
        mean_accept = mean_accept + (accept_prob - mean_accept) / count
        proposal = _Proposal(
            x0, end.x, end.u, k.astype(dtype) * adapt.step_size, accept_prob,
            jnp.logical_not(diverging) & ok,
        )
        new_state = TunedHMCState(
            i + 1, self._to_z(new.x), new.energy, new._replace(u=jnp.zeros_like(x0)),
            diverging, accept_prob, mean_accept, k, start.energy + kinetic0, energy_error,
            adapt, key,
        )
        return new_state, proposal

    # -- adaptation ------------------------------------------------------------------------

    def _whiten(self, scale, proposal, center):
        """Positions (and the centre) in the whitened frame ``L^{-1} x``."""
        if self._dense_mass:
            inv = jnp.linalg.inv(scale)
            white = lambda v: (inv @ v[..., None])[..., 0]  # noqa: E731
        else:
            white = lambda v: precond_inverse(scale, v)  # noqa: E731
        return white(proposal.x_start), white(proposal.x_proposal), white(center)

    def _adapt_chain(self, adapt, i, x, proposal):
        """Single-chain rule: own acceptance, own metric, ChEES about the running mean."""
        schedule = MetricSchedule.build(self._num_warmup)
        step, dual = adapt.step_size, adapt.dual
        if self._step_size is None:
            dual = dual_averaging_step(dual, proposal.accept_prob, self._target_accept_prob)
            step = jnp.exp(dual.log_step)
        chees, center = adapt.chees, adapt.center
        length = adapt.trajectory_length
        if self._trajectory_length is None:
            x0, x1, c = self._whiten(adapt.scale, proposal, center.mean)
            valid = proposal.valid & (center.count > 1)
            g = chees_gradient(
                x0[None], x1[None], proposal.velocity[None], proposal.duration[None],
                proposal.accept_prob[None], valid[None], c, c, normalize=False,
            )
            chees = chees_update(chees, g, self._learning_rate)
        center = welford_update(center, x)
        welford, scale, ended = adapt.welford, adapt.scale, jnp.array(False)
        if self._adapt_mass_matrix:
            welford, scale, ended = metric_update(schedule, i, welford, scale, x)
        return self._finish_adapt(adapt, i, step, dual, scale, welford, chees, center, ended)

    def _adapt_batch(self, adapt, i, x, proposal):
        """Cross-chain rule (every leaf of ``adapt`` has a leading chain axis and the shared
        tuning parameters are equal across it)."""
        schedule = MetricSchedule.build(self._num_warmup)
        num_chains = x.shape[0]
        one = jax.tree.map(lambda a: a[0], adapt)
        step, dual = one.step_size, one.dual
        if self._step_size is None:
            alpha = jnp.where(proposal.valid, proposal.accept_prob, 0.0)
            inv_mean = jnp.mean(1.0 / jnp.maximum(alpha, 1e-10))
            harmonic = jnp.where(jnp.isfinite(inv_mean), 1.0 / inv_mean, 0.0)
            dual = dual_averaging_step(dual, harmonic, self._target_accept_prob)
            step = jnp.exp(dual.log_step)
        chees = one.chees
        if self._trajectory_length is None:
            x0, x1, _ = self._whiten(one.scale, proposal, one.center.mean)
            g = chees_gradient(
                x0, x1, proposal.velocity, proposal.duration, proposal.accept_prob,
                proposal.valid,
            )
            chees = chees_update(chees, g, self._learning_rate)
        welford, scale, ended = adapt.welford, one.scale, jnp.array(False)
        if self._adapt_mass_matrix:
            welford = vmap(welford_update, in_axes=(0, 0, None))(
                welford, x, jnp.where(schedule.collecting(i), 1.0, 0.0).astype(x.dtype)
            )
            ended = schedule.window_end(i)
            pooled = welford_pool(welford)
            new_scale = scale_from_covariance(welford_covariance(pooled, regularize=True))
            scale = jnp.where(ended, new_scale, scale)
            empty = vmap(lambda v: welford_init(v, dense=self._dense_mass))(x)
            welford = type(welford)(*[jnp.where(ended, e, w) for e, w in zip(empty, welford)])
        shared = self._finish_adapt(one, i, step, dual, scale, one.welford, chees, one.center, ended)
        shared = jax.tree.map(lambda a: jnp.broadcast_to(a, (num_chains,) + jnp.shape(a)), shared)
        return shared._replace(welford=welford)

    def _finish_adapt(self, adapt, i, step, dual, scale, welford, chees, center, ended):
        """Common end of an adaptation step: restart dual averaging after a new metric,
        switch to the averaged step size at the end of warmup, set T from ChEES."""
        if self._step_size is None:
            restarted = dual_averaging_restart(step)
            dual = jax.tree.map(lambda r, o: jnp.where(ended, r, o), restarted, dual)
            last = i == self._num_warmup - 1
            step = jnp.where(last, jnp.exp(dual.log_step_avg), step)
        length = adapt.trajectory_length
        if self._trajectory_length is None:
            length = jnp.exp(chees.log_length_avg)
            length = jnp.clip(length, step, self._max_steps * step)
        return TunedHMCAdaptState(step, length, scale, dual, welford, chees, center)
