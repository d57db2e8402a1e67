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
from typing import Any, NamedTuple

import torch
from pyro.infer.autoguide.initialization import init_to_uniform

from esh_kernels.core.checks import (
    check_bool,
    check_int,
    check_positive,
    check_refresh_rate,
)
from esh_kernels.core import esh_draw
from esh_kernels.core.esh_draw import DrawCarry
from esh_kernels.core.integrators import IntegratorState
from esh_kernels.core.self_check import ESH_REMEDIES
from esh_kernels.core.sphere import unit_vector
from esh_kernels.core.warmup import (
    ESHAdaptState,
    ESHWarmupConfig,
    esh_warmup_adjusted_update,
    esh_warmup_init,
)
from esh_kernels.pyro._base import FlatKernel, where
from esh_kernels.pyro._isokinetic import IsokineticTransition, draw_isokinetic
from esh_kernels.pyro._model import Compiled


class ESHState(NamedTuple):
    """A batch of chains (leading axis ``C``). ``z``/``potential_energy`` are the draw
    (flat, unconstrained); ``integrator`` is where the dynamics are now; ``x_prev`` the
    position before the last step; ``time_prev``/``time_cur`` the physical time of
    ``x_prev`` and ``integrator.x`` not yet credited to a draw."""

    i: int
    z: Any
    potential_energy: Any
    integrator: IntegratorState
    x_prev: Any
    energy_prev: Any
    time_prev: Any
    time_cur: Any
    diverging: Any
    n_steps: Any  # gradient evaluations spent on this draw
    energy_error: Any  # change of H = E + d r over the draw
    adapt_state: ESHAdaptState


_N_FLAT = len(DrawCarry._fields) - 1 + len(IntegratorState._fields)


def _flatten_carry(c):
    return (c.k, *c.integ) + tuple(c[2:])


def _unflatten_carry(flat):
    return DrawCarry(flat[0], IntegratorState(*flat[1:6]), *flat[6:])


class ESH(FlatKernel):
    """Energy Sampling Hamiltonian dynamics with equally weighted draws of the
    physical-time average (Ver Steeg & Galstyan, 2021), for Pyro. Same algorithm,
    arguments and defaults as :class:`esh_kernels.numpyro.ESH`.

    :param model: a Pyro model (give this or ``potential_fn``).
    :param potential_fn: potential energy on a dict of unconstrained tensors; needs
        ``initial_params``.
    :param step_size: fixed scaled-time step size (preconditioned frame); tuned if None.
    :param trajectory_length: physical time per draw; tuned if None so that a draw takes
        ``steps_per_draw`` steps on average, or longer where the slowest statistic would need
        more than about 3 draws to decorrelate (``esh_math.md`` §7.5).
    :param steps_per_draw: mean leapfrog steps per draw that tuning aims for (default 2).
    :param refresh_rate: partial velocity refresh rate per unit scaled time; ``0`` is the
        paper's deterministic dynamics, ``None`` (default) uses ``1/sqrt(d)``.
    :param desired_energy_var: target ``Var[dH]/d`` per step for step-size tuning.
    :param dense_mass, full_mass: the mass-matrix structure (False, True or site-name
        blocks), as :class:`esh_kernels.pyro.AdjustedESH`.
    :param adapt_mass_matrix: estimate the preconditioner in warmup (default True).
    :param max_steps: cap on steps per draw.
    :param init_strategy, transforms, max_plate_nesting, jit_compile, jit_options,
        ignore_jit_warnings: as :class:`esh_kernels.pyro.AdjustedESH`.
    """

    min_dim = 2
    #: ``to_arviz`` reports the potential energy as ``energy`` (``arviz._add_isokinetic_energy``)
    energy_is_potential_energy = True
    self_check_remedies = ESH_REMEDIES

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=None,
        trajectory_length=None,
        steps_per_draw=2,
        refresh_rate=None,
        desired_energy_var=5e-4,
        dense_mass=False,
        full_mass=None,
        adapt_mass_matrix=True,
        max_steps=1024,
        init_strategy=init_to_uniform,
        transforms=None,
        max_plate_nesting=None,
        jit_compile=True,
        jit_options=None,
        ignore_jit_warnings=False,
    ):
        super().__init__(
            model, potential_fn, dense_mass=dense_mass, full_mass=full_mass,
            init_strategy=init_strategy,
            transforms=transforms, max_plate_nesting=max_plate_nesting,
            jit_compile=jit_compile, jit_options=jit_options,
            ignore_jit_warnings=ignore_jit_warnings,
        )
        self._step_size = check_positive("step_size", step_size)
        self._trajectory_length = check_positive("trajectory_length", trajectory_length)
        self._steps_per_draw = check_positive("steps_per_draw", steps_per_draw, allow_none=False)
        self._refresh_rate = check_refresh_rate(refresh_rate)
        self._desired_energy_var = check_positive("desired_energy_var", desired_energy_var, allow_none=False)
        self._adapt_mass_matrix = check_bool("adapt_mass_matrix", adapt_mass_matrix)
        self._max_steps = check_int("max_steps", max_steps, 1)

    @property
    def host_check_every(self):
        """Steps between two checks whether any chain still runs (see module docstring)."""
        if self._state is None or self._state.integrator.x.device.type == "cpu":
            return 1
        return 4

    # -- state ---------------------------------------------------------------------------

    def _warmup_config(self):
        return ESHWarmupConfig(
            num_warmup=self._num_warmup,
            desired_energy_var=self._desired_energy_var,
            steps_per_draw=self._steps_per_draw,
            tune_step_size=self._step_size is None,
            tune_metric=self._adapt_mass_matrix,
            tune_trajectory=self._trajectory_length is None,
            target_accept_prob=0.8,
            trajectory_factor=2.0,
            metric_mask=self._metric_mask,
            max_steps=self._max_steps,
        )

    def _init_state(self, x, energy, grad, normal=None):
        C, d = x.shape
        step = self._step_size if self._step_size is not None else 0.5 * math.sqrt(d)
        step = x.new_full((C,), step)
        rate = self._refresh_rate if self._refresh_rate is not None else 1.0 / math.sqrt(d)
        length = step * 0.0 + (self._trajectory_length or self._steps_per_draw * step)
        refresh_length = step * 0.0 + (1.0 / rate if rate > 0 else math.inf)
        adapt = esh_warmup_init(x, step, length, refresh_length, self._dense_mass)
        normal = self._rng.normal(x, (C, d)) if normal is None else normal
        zero = x.new_zeros(C)
        integ = IntegratorState(x, unit_vector(normal), zero, energy, grad)
        return ESHState(
            0, x, energy, integ, x, energy, zero, zero,
            torch.zeros_like(zero, dtype=torch.bool), zero, zero, adapt,
        )

    def _draw(self, state):
        return state.z

    def _resync(self, state, x, energy, grad):
        integ = state.integrator._replace(x=x, energy=energy, grad=grad)
        zero = torch.zeros_like(energy)
        return state._replace(z=x, potential_energy=energy, integrator=integ, x_prev=x,
                              energy_prev=energy, time_prev=zero, time_cur=zero)

    def _iteration_stats(self, state):
        return {
            "diverging": state.diverging,
            "n_steps": state.n_steps,
            "energy_error": state.energy_error,
            "potential_energy": state.potential_energy,
        }

    def _final_parameters(self):
        a = self._state.adapt_state
        return {"step size": a.step_size, "trajectory length": a.trajectory_length}

    # -- one step of every chain (masked) ------------------------------------------------

    def _step_fn(self, *args):
        """``(*carry, normal, uniform1, uniform2, step_size, refresh_length, scale,
        step_cap)`` -> ``(*carry, still_running)``: one masked step of
        :func:`esh_kernels.core.esh_draw.step`."""
        c = _unflatten_carry(args[:_N_FLAT])
        normal, uniform1, uniform2, step_size, refresh_length, scale, step_cap = args[_N_FLAT:]
        stepped = esh_draw.step(c, normal, uniform1, uniform2, step_size, refresh_length, scale,
                                self._value_and_grad, self.divergence_threshold)
        c = where(esh_draw.running(c, step_cap), stepped, c)
        return (*_flatten_carry(c), esh_draw.running(c, step_cap))

    def _build(self, x):
        s = self._state
        C, d = x.shape
        zero = x.new_zeros(C)
        a = s.adapt_state
        mode = "trace" if self._jit_compile else "eager"
        carry = DrawCarry(zero, s.integrator, x, s.potential_energy, zero + 0.1, zero + 0.1,
                       zero + 1.0, x, s.potential_energy, zero - math.inf, zero, zero, zero,
                       torch.ones_like(zero, dtype=torch.bool))
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
            adapt.scale, self._max_steps, fetch=(adapt.adjusted.step_size.mean(),),
            descend=self._warmup_config().adjusted_config().descends(i),
        )
        self._set_log_values({"step size": f"{step_mean:.2e}", "phase": "adjusted"})
        new = prop.state._replace(r=torch.zeros_like(prop.state.r))
        adapt = esh_warmup_adjusted_update(adapt, i, new.x, prop.adapt_accept_prob, self._warmup_config())
        zero = torch.zeros_like(new.energy)
        return ESHState(
            i + 1, new.x, new.energy, new, new.x, new.energy, zero, zero, prop.diverging,
            prop.num_steps, prop.energy_error, adapt,
        )

    def _esh_draw(self, state, i, draws=None):
        """One ESH draw (:mod:`esh_kernels.core.esh_draw`): warmup phase 2 or sampling."""
        adapt = state.adapt_state
        x = state.integrator.x
        draws = _TorchDraws(self._rng, x) if draws is None else draws
        warm = i < self._num_warmup
        carry, integ0, step_cap = esh_draw.start(
            state.integrator, state.x_prev, state.energy_prev, state.time_prev, state.time_cur,
            state.integrator.x, state.potential_energy, adapt, warm, self._steps_per_draw,
            self._max_steps,
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
        while running and done < self._max_steps:
            for _ in range(every):
                out = step(*flat, *draws.step(), adapt.step_size, adapt.refresh_length,
                           adapt.scale, step_cap)
                flat, active = out[:-1], out[-1]
                done += 1
            running = bool(active.any())
        carry = _unflatten_carry(flat)
        end = esh_draw.finish(carry, integ0, draws.restart())
        if warm:
            adapt = esh_draw.warmup_update(adapt, i, carry, end, state.integrator.energy,
                                           self._warmup_config())
        return ESHState(
            i + 1, end.pick_x, end.pick_energy, end.integ, end.x_prev, end.energy_prev,
            end.time_prev, end.time_cur, end.diverging, carry.k, carry.sum_dh, adapt,
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
