"""``TunedHMC`` for Pyro: the algorithm of :class:`esh_kernels.numpyro.TunedHMC`.

Per transition: a fresh momentum ``p ~ N(0, I)`` in the whitened frame, ``n`` leapfrog
steps (:func:`esh_kernels.core.euclidean_leapfrog` with the preconditioner ``L``) and a
Metropolis test on ``dH = dE + |p'|^2/2 - |p|^2/2``; ``n = ceil(h T / eps)`` with ``h`` the
base-2 Halton number of the iteration, capped at ``max_steps``. Warmup
(:mod:`esh_kernels.core.tuned_warmup`) tunes the step size, the mass matrix and ``T``:

* by default (``cross_chain=False``), under ``pyro.infer.MCMC`` or in ``BatchedMCMC``:
  each chain on its own, independent of the others, ``T = uturn_factor * (mean
  time to a U-turn)``, the trajectory being continued past the proposal during warmup
  until NUTS's no-U-turn criterion fails (the NumPyro kernel's single-chain rule);
* opt-in, in ``BatchedMCMC`` with ``C >= 2`` chains and ``cross_chain=True``: ChEES
  across the chains, one shared step size and one pooled mass matrix (the NumPyro
  kernel's rule under ``chain_method="vectorized"``). This couples the chains, and one
  stuck chain can drag everyone's tuning down (the NumPyro kernel's docstring).

Host synchronisation: one per transition (the largest number of steps), except while a
warmup trajectory is continued to its U-turn, whose length is not known in advance: then
the loop checks every ``host_check_every`` steps (1 on CPU, 4 on other devices) whether a
chain still runs, as ``ESH`` does.
"""

import warnings
from typing import Any, NamedTuple

import torch

from esh_kernels.core.hmc import TunedHMCState
from esh_kernels.core.options import TunedHMCOptions
from esh_kernels.core.adaptation import halton
from esh_kernels.core import hmc
from esh_kernels.core.metropolis import mean_accept_update
from esh_kernels.core.integrators import IntegratorState
from esh_kernels.core.tuned_warmup import (
    UTURN_FACTOR,
    TunedHMCAdaptState,
    tuned_chain_update,
    tuned_cross_chain_update,
    tuned_warmup_init,
    tracks_uturn,
    untuned_warning,
    whitener,
)
from esh_kernels.core.warmup import (
    step_size_search_init,
    step_size_search_result,
    step_size_search_update,
)
from esh_kernels.pyro._base import FlatKernel, where
from esh_kernels.pyro._model import Compiled


def _flat(c):
    """A :class:`esh_kernels.core.hmc.Carry` as the flat tuple of tensors that the recorded
    step takes and returns (:func:`_carry` reads it back)."""
    return (*c.last, *c.proposal, c.k, c.k_turn, c.curvature)


def _carry(flat):
    """The :class:`esh_kernels.core.hmc.Carry` that :func:`_flat` flattened."""
    return hmc.Carry(flat[10], IntegratorState(*flat[:5]), IntegratorState(*flat[5:10]), flat[11], flat[12])


class TunedHMCDraws(NamedTuple):
    """The random numbers of one transition (injectable for tests)."""

    normal: Any  # (C, d) standard normal momentum (whitened frame)
    uniform_accept: Any  # (C,) uniforms in [0, 1) for the Metropolis test


class TunedHMC(FlatKernel):
    """HMC with nothing to set: step size, mass matrix and trajectory length are tuned in
    warmup. Exact (Metropolis-adjusted). Same algorithm, arguments and defaults as
    :class:`esh_kernels.numpyro.TunedHMC`.

    Its own arguments (``step_size``, ``trajectory_length``, ``target_accept_prob``,
    ``adapt_mass_matrix``, ``cross_chain``, ``max_steps``, ``learning_rate``; keyword-only)
    are those of :class:`esh_kernels.core.options.TunedHMCOptions`, the same in NumPyro and
    Pyro (``docs/kernels/tuned_hmc.md``). The rest:

    :param model, potential_fn, dense_mass, full_mass, inverse_mass_matrix, init_strategy,
        transforms, max_plate_nesting, jit_compile, jit_options, ignore_jit_warnings: as for
        ``esh_kernels.pyro.AdjustedESH`` (Pyro's names and defaults).
    """

    options_type = TunedHMCOptions
    iteration_stats = ("diverging", "accept_prob", "n_steps", "energy", "energy_error",
                       "step_curvature", "potential_energy")
    min_dim = 1
    #: single-chain rule: ``T = uturn_factor * mean U-turn time`` (``esh_math.md`` §7.3)
    uturn_factor = UTURN_FACTOR
    #: where the initial step-size search starts (the NumPyro kernel's value)
    initial_step_size = 1.0

    @property
    def _tune_length(self):
        return self._options.tune_length

    @property
    def _cross_chain_tuning(self):
        return self._options.pools_chains(self._num_chains)

    def _config(self):
        return self._options.warmup_config(self._num_warmup, self._dense_mass, self._metric_mask,
                                           self.uturn_factor)

    # -- state ---------------------------------------------------------------------------

    def _init_state(self, x, energy, grad):
        C = x.shape[0]
        message = untuned_warning(self._num_warmup, self._options.step_size,
                                  self._options.trajectory_length, self._options.num_steps)
        if message is not None:
            warnings.warn(message, UserWarning, stacklevel=2)
        zero = x.new_zeros(C)
        integ = IntegratorState(x, torch.zeros_like(x), zero, energy, grad)
        given = self._options.step_size
        step = x.new_full((C,), self.initial_step_size if given is None else given)
        if self._options.searches_step_size(self._num_warmup):
            step = self._search_step_size(integ, step)
            if self._cross_chain_tuning:  # shared tuning starts from one step: the smallest
                step = step * 0.0 + step.min()
        length = self._options.initial_trajectory_length(step, self._config())
        adapt = tuned_warmup_init(x, step, length, self._dense_mass, self._scale0,
                                  self._metric_mask)
        return TunedHMCState(0, x, energy, integ, torch.zeros_like(zero, dtype=torch.bool), zero,
                             zero, zero, energy, zero, zero, adapt)

    def _search_step_size(self, start, step):
        """Initial step size per chain by the reasonable-step-size search (the NumPyro
        kernel's ``_search_step_size``; ``core/warmup.py``)."""
        p0 = self._rng.normal(start.x, tuple(start.x.shape))
        search = step_size_search_init(step)
        while not bool(search.done.all()):
            energy_error = hmc.step_energy_error(start, p0, search.step, self._scale0, self._value_and_grad)
            search = step_size_search_update(search, energy_error)
        return step_size_search_result(search)

    # -- one leapfrog step of every chain (masked) ----------------------------------------

    def _step_fn(self, *args, track_uturn=False):
        """One masked step of :func:`esh_kernels.core.hmc.step` for every chain."""
        c = _carry(args)
        n, x0, step_size, scale, white, track, max_steps = args[13:]
        stepped = hmc.step(c, n, x0, step_size, scale, white, self._dense_mass,
                           self._value_and_grad, track, track_uturn)
        c = where(hmc.running(c, n, track, max_steps), stepped, c)
        return (*_flat(c), hmc.running(c, n, track, max_steps))

    def _build(self, x):
        s = self._state
        a = s.adapt_state
        C = x.shape[0]
        zero = x.new_zeros(C)
        mode = "trace" if self._jit_compile else "eager"
        integ = s.integrator._replace(u=torch.ones_like(x) * 0.3)
        white = a.scale
        example = (*integ, *integ, zero, zero, zero, zero + 2.0, x, a.step_size, a.scale, white,
                   torch.ones_like(zero, dtype=torch.bool), zero + self._options.max_steps)
        self._compiled["HMC step"] = Compiled(
            lambda *args: self._step_fn(*args, track_uturn=False), example, mode, "HMC step",
            self._jit_options, self._ignore_jit_warnings,
        )
        if self._tune_length and not self._cross_chain_tuning and self._num_warmup > 0:
            self._compiled["HMC step (U-turn)"] = Compiled(
                lambda *args: self._step_fn(*args, track_uturn=True), example, mode,
                "HMC step with U-turn tracking", self._jit_options, self._ignore_jit_warnings,
            )

    # -- one transition ------------------------------------------------------------------

    def _draws(self, x):
        C, d = x.shape
        return TunedHMCDraws(self._rng.normal(x, (C, d)), self._rng.uniform(x, (C,)))

    def _transition(self, state, i, draws=None):
        """One HMC transition (:mod:`esh_kernels.core.hmc`) and, in warmup, its adaptation."""
        adapt = state.adapt_state
        start = state.integrator
        x0 = start.x
        draws = self._draws(x0) if draws is None else draws
        p0 = draws.normal
        warm = i < self._num_warmup
        cross = self._cross_chain_tuning
        track_uturn = self._tune_length and not cross and warm and tracks_uturn(i)
        c, n = hmc.start(start, p0, halton(i), adapt.step_size, adapt.trajectory_length,
                         float(self._options.max_steps), self._options.num_steps)
        track = torch.full_like(c.k, 1.0 if track_uturn else 0.0) > 0.5
        white = hmc.whitening(adapt.scale, self._dense_mass and track_uturn)
        flat = _flat(c)
        max_steps = c.k + self._options.max_steps
        host = torch.stack([n.max(), adapt.step_size.mean(), state.mean_accept_prob.mean()]).tolist()
        self._set_log_values({"step size": f"{host[1]:.2e}", "acc. prob": f"{host[2]:.3f}"})
        if not track_uturn:
            step = self._compiled["HMC step"]
            for _ in range(int(host[0])):
                flat = step(*flat, n, x0, adapt.step_size, adapt.scale, white, track, max_steps)[:-1]
        else:
            step = self._compiled["HMC step (U-turn)"]
            running, done, every = True, 0, self.host_check_every
            while running and done < self._options.max_steps:
                for _ in range(every):
                    out = step(*flat, n, x0, adapt.step_size, adapt.scale, white, track, max_steps)
                    flat, still = out[:-1], out[-1]
                    done += 1
                running = bool(still.any())
        c = _carry(flat)
        out = hmc.finish(c, start, p0, n, adapt.step_size, draws.uniform_accept, track,
                         self.divergence_threshold, adapt.scale)
        if warm:
            if cross:
                adapt = self._adapt_cross_chain(adapt, i, x0, out.new.x, out.proposal, out.duration,
                                                out.adapt_accept_prob, out.valid)
            else:
                adapt = tuned_chain_update(adapt, i, out.new.x, out.adapt_accept_prob, out.uturn_time,
                                           self._config(), out.new.grad)
        return TunedHMCState(
            i + 1, out.new.x, out.new.energy, out.new._replace(u=torch.zeros_like(x0)), out.diverging,
            out.accept_prob,
            mean_accept_update(state.mean_accept_prob, out.accept_prob, i, self._num_warmup),
            c.k, out.start_energy, out.energy_error, out.step_curvature, adapt,
        )

    def _adapt_cross_chain(self, adapt, i, x0, x, end, duration, accept_prob, valid):
        C = x.shape[0]
        shared = TunedHMCAdaptState(*[_first(leaf) for leaf in adapt])
        shared, welford = tuned_cross_chain_update(
            shared, adapt.welford, i, x0, x, end.x, end.u, duration, accept_prob, valid,
            self._config(),
        )
        shared = TunedHMCAdaptState(*[_broadcast(leaf, C) for leaf in shared])
        return shared._replace(welford=welford)


def _first(tree):
    if tree is None:  # the adapt state's ``sites`` (NumPyro only)
        return None
    if isinstance(tree, tuple):
        return type(tree)(*[_first(t) for t in tree])
    return tree[0]


def _broadcast(tree, C):
    if tree is None:
        return None
    if isinstance(tree, tuple):
        return type(tree)(*[_broadcast(t, C) for t in tree])
    return tree.unsqueeze(0).expand((C,) + tuple(tree.shape))


__all__ = ["TunedHMC", "TunedHMCState", "TunedHMCDraws", "whitener"]
