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


import torch

from esh_kernels.core.isokinetic import AdjustedESHState
from esh_kernels.core.options import AdjustedESHOptions
from esh_kernels.core.integrators import IntegratorState
from esh_kernels.core.metropolis import mean_accept_update
from esh_kernels.core.warmup import (
    adjusted_warmup_init,
    adjusted_warmup_update,
)
from esh_kernels.pyro._base import FlatKernel
from esh_kernels.pyro._isokinetic import IsokineticTransition, draw_isokinetic


class AdjustedESH(FlatKernel):
    """Metropolis-adjusted isokinetic ESH (microcanonical) sampler for Pyro. Exact for any
    step size. Same algorithm, arguments and defaults as
    :class:`esh_kernels.numpyro.AdjustedESH`.

    Its own arguments (``step_size``, ``trajectory_length``, ``target_accept_prob``,
    ``adapt_mass_matrix``, ``max_steps``, ``trajectory_factor``; keyword-only) are those of
    :class:`esh_kernels.core.options.AdjustedESHOptions`, the same in NumPyro and Pyro
    (``docs/kernels/adjusted_esh.md``). The rest:

    :param model: a Pyro model (give this or ``potential_fn``).
    :param potential_fn: a potential energy ``E(z) = -log p(z)`` on a dict of
        unconstrained tensors; needs ``initial_params`` (``MCMC(..., initial_params=)``).
    :param dense_mass, full_mass: the mass-matrix structure, under either name
        (``full_mass`` is ``pyro.infer.NUTS``'s): ``"auto"`` (the default: dense where warmup
        finds the posterior correlated, diagonal otherwise, ``esh_math.md`` §7.6), False
        (diagonal), True (dense, Cholesky preconditioner), or a list of tuples of site
        names, each tuple one dense block (sites in no tuple stay diagonal):
        :mod:`esh_kernels.core.mass_matrix`.
    :param inverse_mass_matrix: an initial metric, or a fixed one with
        ``adapt_mass_matrix=False``, as the NumPyro kernels take it: the diagonal or the
        matrix over the flat unconstrained vector (sites in name order), or ``{site or
        tuple of sites: array}``, other sites keeping the identity (a dense one needs
        ``dense_mass=True``; :func:`esh_kernels.core.mass_matrix.initial_scale`).
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

    options_type = AdjustedESHOptions
    min_dim = 2
    #: ``to_arviz`` reports the potential energy as ``energy`` (``arviz._add_isokinetic_energy``)
    energy_is_potential_energy = True

    # -- state ---------------------------------------------------------------------------

    def _warmup_config(self):
        return self._options.warmup_config(self._num_warmup, self._dense_mass, self._metric_mask)

    def _init_state(self, x, energy, grad):
        C, d = x.shape
        step = self._options.initial_step_size(d)
        step = x.new_full((C,), step)
        length = self._options.trajectory_length or self._warmup_config().steps_before_metric * step
        length = step * 0.0 + length
        adapt = adjusted_warmup_init(x, step, length, self._dense_mass, self._scale0,
                                     self._metric_mask)
        zero = x.new_zeros(C)
        integ = IntegratorState(x, torch.zeros_like(x), zero, energy, grad)
        return AdjustedESHState(
            0, x, self._model_energy(x, energy), integ, torch.zeros_like(zero, dtype=torch.bool),
            zero, zero, zero, zero, zero, adapt,
        )

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
            self._options.max_steps, fetch=(adapt.step_size.mean(), state.mean_accept_prob.mean()),
            descend=self._warmup_config().descends(i), num_steps=self._options.num_steps,
        )
        self._set_log_values({"step size": f"{step_mean:.2e}", "acc. prob": f"{acc_mean:.3f}"})
        new, accept_prob = prop.state, prop.accept_prob
        if i < self._num_warmup:
            adapt = adjusted_warmup_update(adapt, i, new.x, prop.adapt_accept_prob, self._warmup_config(),
                                           new.grad)
        mean_accept = mean_accept_update(state.mean_accept_prob, accept_prob, i, self._num_warmup)
        return AdjustedESHState(
            i + 1, new.x, self._model_energy(new.x, new.energy), new, prop.diverging, accept_prob,
            mean_accept, prop.num_steps, prop.energy_error, prop.step_curvature, adapt,
        )
