"""``ESH``: the paper's Energy Sampling Hamiltonian sampler for NumPyro (``esh_math.md`` §2-4).

ESH dynamics with ``D = d`` and the time-scaled leapfrog. Points of the scaled-time
trajectory are NOT distributed as ``p``: each carries the physical time it spans (weight
``e^r``); unweighted they follow ``p^((d-1)/d)`` (``p^(1/2)`` in 2-D). ``MCMC`` and ArviZ
treat draws as equally weighted, so each draw here is one point picked, with probability
proportional to physical time (weighted reservoir, paper Alg. 3), from an interval of
exactly ``trajectory_length`` physical time. Consecutive draws tile the physical-time axis
(a step that straddles two draws gives each its share), so the draws average to the
physical-time average of the trajectory: exact as the step size goes to zero, with no
Metropolis correction (the step size is tuned to a small energy error per dimension).

Warmup runs in two phases (``esh_kernels/core/warmup.py``): exact adjusted isokinetic
transitions first (robust convergence from a poor start, metric windows), then ESH itself
to tune its step size and the time per draw.
"""


import jax
import jax.numpy as jnp
from jax import lax, random
from jax.flatten_util import ravel_pytree

from esh_kernels.core.auxiliary import with_new_auxiliary
from esh_kernels.core.esh_draw import ESHState
from esh_kernels.core.options import ESHOptions
from esh_kernels.core import esh_draw
from esh_kernels.core.integrators import IntegratorState
from esh_kernels.core.self_check import ESH_REMEDIES
from esh_kernels.core.sphere import unit_vector
from esh_kernels.numpyro._base import FlatKernel
from esh_kernels.core.warmup import (
    esh_warmup_adjusted_update,
    esh_warmup_init,
)
from esh_kernels.numpyro._isokinetic import isokinetic_transition


class ESH(FlatKernel):
    """Energy Sampling Hamiltonian dynamics with equally weighted draws of the physical-time
    average (Ver Steeg & Galstyan, 2021).

    Its own arguments (``step_size``, ``trajectory_length``, ``steps_per_draw``,
    ``num_steps``, ``refresh_rate``, ``desired_energy_var``, ``adapt_mass_matrix``,
    ``max_steps``, ``regularize_mass_matrix``; keyword-only) are those of
    :class:`esh_kernels.core.options.ESHOptions`, the same in NumPyro and Pyro
    (``docs/kernels/esh.md``). The rest:

    :param model: a NumPyro model (give this or ``potential_fn``).
    :param potential_fn: potential energy ``E(z)`` on an unconstrained pytree; needs
        ``init_params``.
    :param dense_mass, inverse_mass_matrix, init_strategy, forward_mode_differentiation: as
        for :class:`esh_kernels.numpyro.AdjustedESH` (NumPyro's names and defaults).
    """

    options_type = ESHOptions
    min_dim = 2
    #: ``to_arviz`` reports the potential energy as ``energy`` (``arviz._add_isokinetic_energy``)
    energy_is_potential_energy = True
    self_check_remedies = ESH_REMEDIES

    def get_diagnostics_str(self, state):
        return "{} steps of size {:.2e}. diverging={}".format(
            int(state.n_steps), float(state.adapt_state.step_size), bool(state.diverging)
        )

    # -- one chain -----------------------------------------------------------------------

    def _init_chain(self, x, energy, grad, rng_key, num_warmup):
        d = x.shape[0]
        rng_key, k_u = random.split(rng_key)
        opts = self._options
        step = jnp.asarray(opts.initial_step_size(d), x.dtype)
        length = opts.trajectory_length or opts.draw_steps * step
        zero = jnp.zeros((), x.dtype)
        adapt = esh_warmup_init(
            x, step, jnp.asarray(length, x.dtype), jnp.asarray(opts.refresh_length(d), x.dtype),
            self._dense_mass, self._scale0, self._metric_mask,
        )
        adapt = adapt._replace(adjusted=self._with_sites(adapt.adjusted))
        u = unit_vector(random.normal(k_u, x.shape, x.dtype))
        integ = IntegratorState(x, u, zero, energy, grad)
        return ESHState(
            jnp.array(0, jnp.int32), self._to_z(x), self._model_energy(x, energy), integ, x, energy,
            zero, zero, jnp.array(False), jnp.array(0, jnp.int32), zero, adapt, rng_key,
        )

    def _sample_chain(self, state, value_and_grad):
        return lax.cond(
            state.i < self._warmup_config().num_adjusted,
            lambda s: self._adjusted_draw(s, value_and_grad),
            lambda s: self._esh_draw(s, value_and_grad),
            state,
        )

    def _sample_batch(self, state, value_and_grad):
        # All chains are at the same iteration: branch once for the batch (a per-chain
        # predicate would make vmap run both branches).
        i = state.i[0]  # unbatched inside the vmaps too (FlatKernel._sample_batch)
        return lax.cond(
            i < self._warmup_config().num_adjusted,
            jax.vmap(lambda s: self._adjusted_draw(s._replace(i=i), value_and_grad)),
            jax.vmap(lambda s: self._esh_draw(s._replace(i=i), value_and_grad)),
            state,
        )

    def _adjusted_draw(self, state, value_and_grad):
        """Warmup phase 1: one exact isokinetic transition (see the module docstring)."""
        key, k_transition = random.split(state.rng_key)
        adapt = state.adapt_state
        prop = isokinetic_transition(
            state.integrator, k_transition, adapt.adjusted.step_size,
            adapt.adjusted.trajectory_length, adapt.scale, value_and_grad, self._options.max_steps,
            self._warmup_config().adjusted_config().descends(state.i),
        )
        new = prop.state._replace(r=jnp.zeros_like(prop.state.r))
        adapt = esh_warmup_adjusted_update(adapt, state.i, new.x, prop.adapt_accept_prob, self._warmup_config(),
                                           new.grad)
        zero = jnp.zeros_like(new.energy)
        return ESHState(
            state.i + 1, self._to_z(new.x), self._model_energy(new.x, new.energy), new, new.x, new.energy,
            zero, zero, prop.diverging, prop.num_steps, prop.energy_error, adapt, key,
        )

    def _esh_draw(self, state, value_and_grad):
        """One ESH draw (:mod:`esh_kernels.core.esh_draw`): warmup phase 2 or sampling. As
        a block of ``numpyro.infer.Gibbs`` every draw starts a new trajectory at the last
        draw (:meth:`_restart_at_draw`, ``esh_math.md`` §4.6)."""
        restart_gradients = 0
        if self._gibbs_block:
            state, restart_gradients = self._restart_at_draw(state, value_and_grad)
        key, k_draw, k_u = random.split(state.rng_key, 3)
        adapt = state.adapt_state
        d = state.integrator.x.shape[0]
        dtype = state.integrator.x.dtype
        warm = state.i < self._num_warmup
        carry, integ0, step_cap = esh_draw.start(
            state.integrator, state.x_prev, state.energy_prev, state.time_prev, state.time_cur,
            adapt, warm, self._options.draw_steps, self._options.max_steps,
        )

        def uniforms(key):
            k1, k2 = random.split(key)
            return random.uniform(k1, (), dtype), random.uniform(k2, (), dtype)

        def body(loop):
            c, key = loop
            key, k_ref, k_offer = random.split(key, 3)
            c = esh_draw.step(
                c, random.normal(k_ref, (d,), dtype), *uniforms(k_offer), adapt.step_size,
                adapt.refresh_length, adapt.scale, value_and_grad, self.divergence_threshold,
            )
            return c, key

        k_pre, k_loop = random.split(k_draw)
        carry, _ = lax.while_loop(
            lambda loop: esh_draw.running(loop[0], step_cap), body,
            (esh_draw.offer_pending(carry, *uniforms(k_pre)), k_loop),
        )
        restart_normal = random.normal(k_u, (d,), dtype)
        end = esh_draw.finish(carry, integ0, restart_normal)
        adapt = lax.cond(
            warm,
            lambda a: esh_draw.warmup_update(a, state.i, carry, end, state.integrator.energy,
                                             self._warmup_config(), value_and_grad, restart_normal),
            lambda a: a,
            adapt,
        )
        # gradients: the draw's steps, the bias guard's probe (warmup) and a Gibbs block's restart
        num_steps = (carry.k + jnp.where(warm, esh_draw.probe_gradients(self._warmup_config()), 0)
                     + restart_gradients)
        return ESHState(
            state.i + 1, self._to_z(end.pick_x), self._model_energy(end.pick_x, end.pick_energy),
            end.integ, end.x_prev, end.energy_prev, end.time_prev, end.time_cur, end.diverging,
            num_steps.astype(jnp.int32), carry.sum_dh, adapt, key,
        )

    #: ESH's trajectory has run on past its draw, and the next draw continues it: a refresh
    #: at the first sampling draw would move the dynamics back to the draw (a Gibbs restart).
    #: Its first step after new arguments uses the old gradient once, its draws need no
    #: acceptance, and ``warmup(y)`` then ``run(y + 1)`` sampled the new posterior (1.949 for
    #: 1.945, the case of :meth:`FlatKernel._refresh_at_first_sampling_draw`)
    refreshes_at_sampling_start = False

    def _refresh_chain(self, state, value_and_grad):
        """:meth:`refresh` for ESH: the chain put at its draw ``z`` (the auxiliary coordinates
        of a model that has them, ``core/auxiliary.py``, as the dynamics hold them), its
        energy and gradient recomputed, no physical time pending. ESH's draw is a point
        picked inside its trajectory, which has run on past it, and a Gibbs sweep conditions
        the other blocks on the draw. In warmup's phase 1 the chain is at its draw already,
        and this is NumPyro's ``HMC.refresh``; an ESH draw of a Gibbs block then starts a new
        trajectory there anyway (:meth:`_restart_at_draw`)."""
        x = jnp.concatenate([ravel_pytree(state.z)[0], state.integrator.x[self._data_dim:]])
        return self._at(state, x, state.integrator.u, *value_and_grad(x))

    def _restart_at_draw(self, state, value_and_grad):
        """A new trajectory at the draw ``z`` with a fresh direction and, for a model given
        auxiliary coordinates, fresh ones from their standard normal law (an exact
        conditional draw): how every ESH draw of a block of ``numpyro.infer.Gibbs`` starts
        (:meth:`_esh_draw`), not only those after a refresh, because continuing the
        trajectory when the other blocks happen not to move selects its stretches by where
        the draws fell. Measured (``esh_math.md`` §4.6): a 1-D mixture whose component was
        drawn by ``DiscreteGibbs``, variance -2% to -6% (at a fixed step of 0.05 too) when
        only refreshes restarted, within Monte Carlo error when every draw restarts.

        Returns the state and the gradients it cost: none where the dynamics are at the draw
        already (after a :meth:`refresh`, which Gibbs calls when another block moved, or when
        the draw was the trajectory's last position), whose energy and gradient are then
        reused with the new auxiliary coordinates' closed-form part; one otherwise."""
        key, k_u, k_aux = random.split(state.rng_key, 3)
        x = self._flat(state.z, k_aux)
        u = unit_vector(random.normal(k_u, x.shape, x.dtype))
        d, integ = self._data_dim, state.integrator
        at_draw = jnp.all(integ.x[:d] == x[:d])
        energy, grad = lax.cond(at_draw, lambda: with_new_auxiliary(integ.x, integ.energy, integ.grad, x, d),
                                lambda: value_and_grad(x))
        return self._at(state, x, u, energy, grad)._replace(rng_key=key), 1 - at_draw.astype(jnp.int32)

    def _at(self, state, x, u, energy, grad):
        """``state`` with the dynamics at ``x`` (its ``energy`` and ``grad``) in direction
        ``u``, ``r = 0``, no time pending."""
        zero = jnp.zeros_like(energy)
        return state._replace(potential_energy=self._model_energy(x, energy),
                              integrator=IntegratorState(x, u, zero, energy, grad),
                              x_prev=x, energy_prev=energy, time_prev=zero, time_cur=zero)

    def _warmup_config(self):
        return self._options.warmup_config(self._num_warmup, self._dense_mass, self._metric_mask, self._dim)
