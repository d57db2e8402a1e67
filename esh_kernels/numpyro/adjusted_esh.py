"""``AdjustedESH``: exact (Metropolis-adjusted) isokinetic ESH dynamics for NumPyro.

Per transition (``esh_math.md`` §6.4): a fresh unit velocity, a jittered number of
isokinetic leapfrog steps (``D = d - 1``, so ``p(x) Unif(S^{d-1})`` is invariant without
weights, §2.2), and a Metropolis test on the energy error ``dE + (d - 1) sum(dr)``.
Warmup tunes the step size (dual averaging), a windowed diagonal or dense preconditioner
and the trajectory length.
"""


import jax.numpy as jnp
from jax import lax, random

from esh_kernels.core.isokinetic import AdjustedESHState
from esh_kernels.core.options import AdjustedESHOptions
from esh_kernels.core.integrators import IntegratorState
from esh_kernels.core.metropolis import mean_accept_update
from esh_kernels.numpyro._base import FlatKernel
from esh_kernels.numpyro._isokinetic import isokinetic_transition
from esh_kernels.core.warmup import (
    adjusted_warmup_init,
    adjusted_warmup_update,
)


class AdjustedESH(FlatKernel):
    """Metropolis-adjusted isokinetic ESH (microcanonical) sampler. Exact for any step size.

    Its own arguments (``step_size``, ``trajectory_length``, ``target_accept_prob``,
    ``adapt_mass_matrix``, ``max_steps``, ``trajectory_factor``; keyword-only) are those of
    :class:`esh_kernels.core.options.AdjustedESHOptions`, the same in NumPyro and Pyro
    (``docs/kernels/adjusted_esh.md``). The rest:

    :param model: a NumPyro model (give this or ``potential_fn``).
    :param potential_fn: a potential energy ``E(z) = -log p(z)`` on an unconstrained pytree;
        needs ``init_params``.
    :param dense_mass, inverse_mass_matrix: NumPyro's mass-matrix arguments, as ``NUTS``
        takes them (``True``/``False`` or site-name blocks; an initial or fixed inverse mass
        matrix), and ``dense_mass="auto"`` (the default): a dense metric where warmup finds
        the posterior correlated, diagonal otherwise (``esh_math.md`` §7.6):
        :mod:`esh_kernels.core.mass_matrix` describes them.
    :param init_strategy: NumPyro init strategy (default ``init_to_uniform``).
    :param forward_mode_differentiation: use forward-mode AD (e.g. for ``lax.while_loop``
        inside the model).
    """

    options_type = AdjustedESHOptions
    min_dim = 2
    #: ``to_arviz`` reports the potential energy as ``energy`` (``arviz._add_isokinetic_energy``)
    energy_is_potential_energy = True

    def get_diagnostics_str(self, state):
        return "{} steps of size {:.2e}. acc. prob={:.2f}".format(
            int(state.n_steps), float(state.adapt_state.step_size), float(state.mean_accept_prob)
        )

    # -- one chain -----------------------------------------------------------------------

    def _init_chain(self, x, energy, grad, rng_key, num_warmup):
        d = x.shape[0]
        step = self._options.initial_step_size(d)
        step = jnp.asarray(step, dtype=x.dtype)
        length = self._options.trajectory_length or self._warmup_config(num_warmup).steps_before_metric * step
        adapt = self._with_sites(adjusted_warmup_init(x, step, jnp.asarray(length, dtype=x.dtype),
                                                      self._dense_mass, self._scale0,
                                                      self._metric_mask))
        zero = jnp.zeros((), x.dtype)
        integ = IntegratorState(x, jnp.zeros_like(x), zero, energy, grad)
        return AdjustedESHState(
            jnp.array(0, jnp.int32), self._to_z(x), self._model_energy(x, energy), integ, jnp.array(False),
            zero, zero, jnp.array(0, jnp.int32), zero, zero, adapt, rng_key,
        )

    def _sample_chain(self, state, value_and_grad):
        key, k_transition = random.split(state.rng_key)
        adapt = state.adapt_state
        config = self._warmup_config(self._num_warmup)
        prop = isokinetic_transition(
            state.integrator, k_transition, adapt.step_size, adapt.trajectory_length,
            adapt.scale, value_and_grad, self._options.max_steps, config.descends(state.i),
            self._options.num_steps,
        )
        new, accept_prob = prop.state, prop.accept_prob

        i = state.i
        adapt = lax.cond(
            i < self._num_warmup,
            lambda a: adjusted_warmup_update(a, i, new.x, prop.adapt_accept_prob, config, new.grad),
            lambda a: a,
            adapt,
        )
        mean_accept = mean_accept_update(state.mean_accept_prob, accept_prob, i, self._num_warmup)
        return AdjustedESHState(
            i + 1, self._to_z(new.x), self._model_energy(new.x, new.energy), new, prop.diverging, accept_prob,
            mean_accept, prop.num_steps, prop.energy_error, prop.step_curvature, adapt, key,
        )

    def _warmup_config(self, num_warmup):
        return self._options.warmup_config(num_warmup, self._dense_mass, self._metric_mask)
