"""``ESH`` for Pyro: the algorithm of :class:`esh_kernels.numpyro.ESH`.

ESH dynamics (``D = d``), time-scaled leapfrog, and equally weighted draws of the
physical-time average: each draw is one point picked, with probability proportional to
the physical time it spans, from an interval of ``trajectory_length`` physical time
(weighted reservoir, paper Alg. 3; ``esh_math.md`` §4). Warmup uses
:func:`esh_kernels.core.warmup.esh_warmup_update`, the function the NumPyro kernel uses.

Warmup runs in two phases (``esh_kernels/core/warmup.py``): exact adjusted isokinetic
transitions first (``esh_kernels/pyro/_isokinetic.py``), then ESH itself to tune its step
size and the time per draw.

Host synchronisation: a draw takes as many steps as its physical-time interval needs,
which is not known in advance, so the loop asks the device whether any chain is still
running every ``host_check_every`` steps (1 on CPU, where the check costs nothing; 4 on
other devices, where it is a synchronisation and up to 3 masked steps may be wasted).
Finished chains are frozen by masking while the others go on.
"""

import math

import torch

from esh_kernels.core.esh_draw import ESHState
from esh_kernels.core.options import ESHOptions
from esh_kernels.core import esh_draw
from esh_kernels.core.esh_draw import DrawCarry
from esh_kernels.core.integrators import IntegratorState
from esh_kernels.core.self_check import ESH_REMEDIES
from esh_kernels.core.sphere import unit_vector
from esh_kernels.core.warmup import (
    esh_warmup_adjusted_update,
    esh_warmup_init,
)
from esh_kernels.pyro._base import FlatKernel, where
from esh_kernels.pyro._isokinetic import IsokineticTransition, draw_isokinetic
from esh_kernels.pyro._model import Compiled


_N_FLAT = len(DrawCarry._fields) - 1 + len(IntegratorState._fields)


def _flatten_carry(c):
    return (c.k, *c.integ) + tuple(c[2:])


def _unflatten_carry(flat):
    return DrawCarry(flat[0], IntegratorState(*flat[1:6]), *flat[6:])


class ESH(FlatKernel):
    """Energy Sampling Hamiltonian dynamics with equally weighted draws of the
    physical-time average (Ver Steeg & Galstyan, 2021), for Pyro. Same algorithm,
    arguments and defaults as :class:`esh_kernels.numpyro.ESH`.

    Its own arguments (``step_size``, ``trajectory_length``, ``steps_per_draw``,
    ``num_steps``, ``refresh_rate``, ``desired_energy_var``, ``adapt_mass_matrix``,
    ``max_steps``, ``regularize_mass_matrix``; keyword-only) are those of
    :class:`esh_kernels.core.options.ESHOptions`, the same in NumPyro and Pyro
    (``docs/kernels/esh.md``). The rest:

    :param model, potential_fn, dense_mass, full_mass, inverse_mass_matrix, init_strategy,
        transforms, max_plate_nesting, jit_compile, jit_options, ignore_jit_warnings: as for
        ``esh_kernels.pyro.AdjustedESH`` (Pyro's names and defaults).
    """

    options_type = ESHOptions
    iteration_stats = ("diverging", "n_steps", "energy_error", "potential_energy")
    min_dim = 2
    #: ``to_arviz`` reports the potential energy as ``energy`` (``arviz._add_isokinetic_energy``)
    energy_is_potential_energy = True
    self_check_remedies = ESH_REMEDIES

    @property
    def bias_guard(self):
        """The bias guard's decision per chain (``docs/esh_math.md`` §7.8), ``(predicted,
        shrink)``: the largest standardized bias it predicted at the tuned step and the factor
        it applied to the step (1 where none); zeros and ones until warmup ends. NumPyro keeps
        it as ``mcmc.last_state.adapt_state.bias``; here the current one during a run, the last
        one after it (None before any)."""
        if self._state is not None:
            bias = self._state.adapt_state.bias
            return bias.predicted, bias.shrink
        return getattr(self, "_final_bias", None)

    def cleanup(self):
        if self._state is not None:  # kept for `bias_guard` after the run
            self._final_bias = tuple(t.detach() for t in self.bias_guard)
        super().cleanup()

    # -- state ---------------------------------------------------------------------------

    def _warmup_config(self):
        return self._options.warmup_config(self._num_warmup, self._dense_mass, self._metric_mask,
                                           self._layout.dim)

    def _init_state(self, x, energy, grad, normal=None):
        C, d = x.shape
        opts = self._options
        step = x.new_full((C,), opts.initial_step_size(d))
        length = step * 0.0 + (opts.trajectory_length or opts.draw_steps * step)
        refresh_length = step * 0.0 + opts.refresh_length(d)
        adapt = esh_warmup_init(x, step, length, refresh_length, self._dense_mass, self._scale0,
                                self._metric_mask)
        normal = self._rng.normal(x, (C, d)) if normal is None else normal
        zero = x.new_zeros(C)
        integ = IntegratorState(x, unit_vector(normal), zero, energy, grad)
        return ESHState(
            0, x, self._model_energy(x, energy), integ, x, energy, zero, zero,
            torch.zeros_like(zero, dtype=torch.bool), zero, zero, adapt,
        )

    def _resync(self, state, x, energy, grad):
        """A new start at ``x``: the physical-time clock restarts there."""
        zero = torch.zeros_like(energy)
        return super()._resync(state, x, energy, grad)._replace(
            x_prev=x, energy_prev=energy, time_prev=zero, time_cur=zero)

    def _refresh(self, state):
        """The trajectory's end gets the recomputed energy and gradient; the trajectory, its
        clock and the picked draw are kept (restarting them at every ``clear_cache`` cut
        every draw's physical-time interval short and shrank the sd: 0.82 instead of 1
        on a standard normal)."""
        energy, grad = self._value_and_grad(state.integrator.x)
        return state._replace(integrator=state.integrator._replace(energy=energy, grad=grad))

    # -- one step of every chain (masked) ------------------------------------------------

    @property
    def _mask_steps(self):
        """Whether a step must freeze chains that are done: not for one chain asked "still
        running?" after every step, which is only ever stepped while it runs (about 20 fewer
        recorded operations per step, ``docs/pyro.md``)."""
        return self._state.integrator.x.shape[0] > 1 or self.host_check_every > 1

    def _step_fn(self, *args):
        """``(*carry, normal, uniform1, uniform2, step_size, refresh_length, scale,
        step_cap)`` -> ``(*carry, still_running)``: one step of
        :func:`esh_kernels.core.esh_draw.step`, chains that are done frozen by masking (not
        recorded for one chain checked after every step, ``_mask_steps``)."""
        c = _unflatten_carry(args[:_N_FLAT])
        normal, uniform1, uniform2, step_size, refresh_length, scale, step_cap = args[_N_FLAT:]
        stepped = esh_draw.step(c, normal, uniform1, uniform2, step_size, refresh_length, scale,
                                self._value_and_grad, self.divergence_threshold)
        if self._mask_steps:
            stepped = where(esh_draw.running(c, step_cap), stepped, c)
        return (*_flatten_carry(stepped), esh_draw.running(stepped, step_cap))

    def _build(self, x):
        s = self._state
        C, d = x.shape
        zero = x.new_zeros(C)
        a = s.adapt_state
        mode = "trace" if self._jit_compile else "eager"
        grad = s.integrator.grad
        energy = s.integrator.energy
        carry = DrawCarry(zero, s.integrator, x, energy, grad, zero + 0.1, zero + 0.1,
                          zero + 1.0, x, energy, grad, zero - math.inf, zero, zero,
                          zero, torch.ones_like(zero, dtype=torch.bool))
        example = (*_flatten_carry(carry), torch.zeros_like(x), zero + 0.5, zero + 0.5,
                   a.step_size, a.refresh_length, a.scale, zero + 2.0)
        self._compiled["step"] = Compiled(
            self._step_fn, example, mode, "ESH step", self._jit_options, self._ignore_jit_warnings,
        )
        if self._warmup_config().num_adjusted > 0:
            self._isokinetic = IsokineticTransition(
                self._value_and_grad, (s.integrator, a.step_size, a.scale), mode,
                self._jit_options, self._ignore_jit_warnings,
            )
            self._compiled["isokinetic step"] = self._isokinetic.step

    # -- one draw ------------------------------------------------------------------------

    def _transition(self, state, i, draws=None):
        """One draw: an exact isokinetic transition in warmup phase 1 (the first 3/4 of
        warmup), an ESH draw after (``esh_kernels/core/warmup.py``). ``draws`` (tests):
        :class:`IsokineticDraws` in phase 1; after it an object with ``pre()`` -> two
        ``(C,)`` uniforms, ``step()`` -> ``(normal (C, d), uniform, uniform)`` and
        ``restart()`` -> normals ``(C, d)``; by default all come from torch's generator."""
        if i < self._warmup_config().num_adjusted:
            return self._adjusted_draw(state, i, draws)
        return self._esh_draw(state, i, draws)

    def _adjusted_draw(self, state, i, draws=None):
        """Warmup phase 1: one exact isokinetic transition."""
        adapt = state.adapt_state
        draws = draw_isokinetic(self._rng, state.integrator.x) if draws is None else draws
        prop, (step_mean,) = self._isokinetic(
            state.integrator, draws, adapt.adjusted.step_size, adapt.adjusted.trajectory_length,
            adapt.scale, self._options.max_steps, fetch=(adapt.adjusted.step_size.mean(),),
            descend=self._warmup_config().adjusted_config().descends(i),
        )
        self._set_log_values({"step size": f"{step_mean:.2e}", "phase": "adjusted"})
        new = prop.state._replace(r=torch.zeros_like(prop.state.r))
        adapt = esh_warmup_adjusted_update(adapt, i, new.x, prop.adapt_accept_prob, self._warmup_config(),
                                           new.grad)
        zero = torch.zeros_like(new.energy)
        return ESHState(
            i + 1, new.x, self._model_energy(new.x, new.energy), new, new.x, new.energy, zero, zero,
            prop.diverging, prop.num_steps, prop.energy_error, adapt,
        )

    def _esh_draw(self, state, i, draws=None):
        """One ESH draw (:mod:`esh_kernels.core.esh_draw`): warmup phase 2 or sampling."""
        adapt = state.adapt_state
        x = state.integrator.x
        draws = _TorchDraws(self._rng, x) if draws is None else draws
        warm = i < self._num_warmup
        carry, integ0, step_cap = esh_draw.start(
            state.integrator, state.x_prev, state.energy_prev, state.time_prev, state.time_cur,
            adapt, warm, self._options.draw_steps, self._options.max_steps,
        )
        carry = esh_draw.offer_pending(carry, *draws.pre())
        step = self._compiled["step"]
        every = self.host_check_every
        flat = _flatten_carry(carry)
        # progress-bar numbers and the first "anyone running?" check in one transfer
        running, step_mean = torch.stack(
            [esh_draw.running(carry, step_cap).any().to(x.dtype), adapt.step_size.mean()]
        ).tolist()
        self._set_log_values({"step size": f"{step_mean:.2e}", "phase": "esh"})
        done = 0
        while running and done < self._options.max_steps:
            for _ in range(every):
                out = step(*flat, *draws.step(), adapt.step_size, adapt.refresh_length,
                           adapt.scale, step_cap)
                flat, active = out[:-1], out[-1]
                done += 1
            running = bool(active.any())
        carry = _unflatten_carry(flat)
        restart_normal = draws.restart()
        end = esh_draw.finish(carry, integ0, restart_normal)
        num_steps = carry.k
        if warm:
            adapt = esh_draw.warmup_update(adapt, i, carry, end, state.integrator.energy,
                                           self._warmup_config(), self._value_and_grad, restart_normal)
            num_steps = num_steps + esh_draw.probe_gradients(self._warmup_config())
        return ESHState(
            i + 1, end.pick_x, self._model_energy(end.pick_x, end.pick_energy), end.integ, end.x_prev,
            end.energy_prev, end.time_prev, end.time_cur, end.diverging, num_steps, carry.sum_dh, adapt,
        )


class _TorchDraws:
    def __init__(self, rng, x):
        self.rng, self.x = rng, x
        self.C, self.d = x.shape

    def pre(self):
        u = self.rng.uniform(self.x, (2, self.C))
        return u[0], u[1]

    def step(self):
        return self.rng.normal(self.x, (self.C, self.d)), *self.pre()

    def restart(self):
        return self.rng.normal(self.x, (self.C, self.d))
