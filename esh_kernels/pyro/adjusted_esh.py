"""``AdjustedESH`` for Pyro: the algorithm of :class:`esh_kernels.numpyro.AdjustedESH`.

Per transition (``esh_math.md`` §6.4): a fresh unit velocity, a jittered number of
isokinetic leapfrog steps (``D = d - 1``), and a Metropolis test on the energy error
``dE + (d - 1) sum(dr)``. Warmup tunes the step size (dual averaging), a windowed diagonal
or dense preconditioner and the trajectory length with
:func:`esh_kernels.core.warmup.adjusted_warmup_update`, the function the NumPyro kernel
uses.

Host synchronisation: one per transition (the largest number of steps over the chains,
fetched together with the progress-bar numbers) before the leapfrog loop; none inside it
(``esh_kernels/pyro/_isokinetic.py``).
"""

import math
from typing import Any, NamedTuple

import torch
from pyro.infer.autoguide.initialization import init_to_uniform

from esh_kernels.core.checks import check_bool, check_int, check_positive, check_probability
from esh_kernels.core.integrators import IntegratorState
from esh_kernels.core.metropolis import mean_accept_update
from esh_kernels.core.warmup import (
    AdjustedESHAdaptState,
    AdjustedWarmupConfig,
    adjusted_warmup_init,
    adjusted_warmup_update,
    default_trajectory_factor,
)
from esh_kernels.pyro._base import FlatKernel
from esh_kernels.pyro._isokinetic import IsokineticDraws, IsokineticTransition, draw_isokinetic


class AdjustedESHState(NamedTuple):
    """State of a batch of chains (leading axis ``C``), the fields of the NumPyro kernel's
    state less ``z``/``rng_key`` (the draw is ``integrator.x``; randomness is torch's)."""

    i: int
    potential_energy: Any
    integrator: IntegratorState
    diverging: Any
    accept_prob: Any
    mean_accept_prob: Any
    n_steps: Any  # gradient evaluations spent on this draw
    energy_error: Any
    adapt_state: AdjustedESHAdaptState


AdjustedESHDraws = IsokineticDraws  # the random numbers of one transition


class AdjustedESH(FlatKernel):
    """Metropolis-adjusted isokinetic ESH (microcanonical) sampler for Pyro. Exact for any
    step size. Same algorithm, arguments and defaults as
    :class:`esh_kernels.numpyro.AdjustedESH`.

    :param model: a Pyro model (give this or ``potential_fn``).
    :param potential_fn: a potential energy ``E(z) = -log p(z)`` on a dict of
        unconstrained tensors; needs ``initial_params`` (``MCMC(..., initial_params=)``).
    :param step_size: fixed step size (preconditioned frame). Default: dual averaging.
    :param trajectory_length: fixed mean trajectory length. Default: tuned in warmup
        (``esh_math.md`` §7.5).
    :param target_accept_prob: acceptance rate that warmup aims for (default 0.7; the
        measurement is in the NumPyro kernel's docstring).
    :param dense_mass, full_mass: the mass-matrix structure, under either name
        (``full_mass`` is ``pyro.infer.NUTS``'s): False (diagonal), True (dense, Cholesky
        preconditioner), or a list of tuples of site names, each tuple one dense block
        (sites in no tuple stay diagonal): :mod:`esh_kernels.core.mass_matrix`.
    :param adapt_mass_matrix: estimate the preconditioner in warmup (default True).
    :param max_steps: cap on leapfrog steps (gradient evaluations) per transition.
    :param trajectory_factor: the shortest tuned mean trajectory length, in units of
        ``sqrt(d)`` in the whitened frame (default 1, 2 with ``dense_mass=True``:
        ``esh_kernels.core.warmup.TRAJECTORY_FACTOR``).
    :param init_strategy: Pyro init strategy (default ``init_to_uniform``).
    :param transforms: ``{site: constrained -> unconstrained transform}`` (as Pyro's HMC).
    :param max_plate_nesting: as Pyro's HMC (guessed when None).
    :param jit_compile: record one leapfrog step (potential energy, its gradient and the
        ESH update, masking included) as a graph and run it with TorchScript (default
        True: 3-5x faster steps on small models, ``docs/pyro.md``). Recording refuses
        Python control flow on tensor values, and the graph is checked against the eager
        step at the initial point; a model that cannot be recorded runs eagerly with a
        warning that says why. ``False`` runs eagerly (Pyro's own default).
    :param jit_options: options for ``torch.jit.trace``.
    :param ignore_jit_warnings: silence tracer warnings.
    """

    min_dim = 2
    #: ``to_arviz`` reports the potential energy as ``energy`` (``arviz._add_isokinetic_energy``)
    energy_is_potential_energy = True

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=None,
        trajectory_length=None,
        target_accept_prob=0.7,
        dense_mass=False,
        full_mass=None,
        adapt_mass_matrix=True,
        max_steps=1024,
        trajectory_factor=None,
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
        self._target_accept_prob = check_probability("target_accept_prob", target_accept_prob)
        self._adapt_mass_matrix = check_bool("adapt_mass_matrix", adapt_mass_matrix)
        self._max_steps = check_int("max_steps", max_steps, 1)
        self._trajectory_factor = default_trajectory_factor(
            check_positive("trajectory_factor", trajectory_factor), self._dense_mass)

    # -- state ---------------------------------------------------------------------------

    def _warmup_config(self):
        return AdjustedWarmupConfig(
            num_warmup=self._num_warmup,
            target_accept_prob=self._target_accept_prob,
            tune_step_size=self._step_size is None,
            tune_metric=self._adapt_mass_matrix,
            tune_trajectory=self._trajectory_length is None,
            trajectory_factor=self._trajectory_factor,
            metric_mask=self._metric_mask,
            max_steps=self._max_steps,
        )

    def _init_state(self, x, energy, grad):
        C, d = x.shape
        step = self._step_size if self._step_size is not None else 0.5 * math.sqrt(d)
        step = x.new_full((C,), step)
        length = self._trajectory_length or self._warmup_config().steps_before_metric * step
        length = step * 0.0 + length
        adapt = adjusted_warmup_init(x, step, length, self._dense_mass)
        zero = x.new_zeros(C)
        integ = IntegratorState(x, torch.zeros_like(x), zero, energy, grad)
        return AdjustedESHState(
            0, energy, integ, torch.zeros_like(zero, dtype=torch.bool), zero, zero, zero,
            zero, adapt,
        )

    def _draw(self, state):
        return state.integrator.x

    def _resync(self, state, x, energy, grad):
        integ = state.integrator._replace(x=x, energy=energy, grad=grad)
        return state._replace(integrator=integ, potential_energy=energy)

    def _iteration_stats(self, state):
        return {
            "diverging": state.diverging,
            "accept_prob": state.accept_prob,
            "n_steps": state.n_steps,
            "energy_error": state.energy_error,
            "potential_energy": state.potential_energy,
        }

    def _final_parameters(self):
        a = self._state.adapt_state
        return {"step size": a.step_size, "trajectory length": a.trajectory_length}

    # -- one transition ------------------------------------------------------------------

    def _build(self, x):
        s = self._state
        self._isokinetic = IsokineticTransition(
            self._value_and_grad, (s.integrator, s.adapt_state.step_size, s.adapt_state.scale),
            "trace" if self._jit_compile else "eager", self._jit_options, self._ignore_jit_warnings,
        )
        self._compiled["isokinetic step"] = self._isokinetic.step

    def _transition(self, state, i, draws=None):
        adapt = state.adapt_state
        draws = draw_isokinetic(self._rng, state.integrator.x) if draws is None else draws
        prop, (step_mean, acc_mean) = self._isokinetic(
            state.integrator, draws, adapt.step_size, adapt.trajectory_length, adapt.scale,
            self._max_steps, fetch=(adapt.step_size.mean(), state.mean_accept_prob.mean()),
            descend=self._warmup_config().descends(i),
        )
        self._set_log_values({"step size": f"{step_mean:.2e}", "acc. prob": f"{acc_mean:.3f}"})
        new, accept_prob = prop.state, prop.accept_prob
        if i < self._num_warmup:
            adapt = adjusted_warmup_update(adapt, i, new.x, prop.adapt_accept_prob, self._warmup_config())
        mean_accept = mean_accept_update(state.mean_accept_prob, accept_prob, i, self._num_warmup)
        return AdjustedESHState(
            i + 1, new.energy, new, prop.diverging, accept_prob, mean_accept, prop.num_steps,
            prop.energy_error, adapt,
        )
