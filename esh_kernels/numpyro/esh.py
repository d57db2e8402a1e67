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

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax, random

from esh_kernels.core import esh_draw
from esh_kernels.core.integrators import IntegratorState
from esh_kernels.core.self_check import ESH_REMEDIES
from esh_kernels.core.sphere import unit_vector
from esh_kernels.core.checks import check_bool, check_int, check_positive, check_refresh_rate
from esh_kernels.numpyro._base import FlatKernel
from esh_kernels.core.warmup import (
    ESHAdaptState,
    ESHWarmupConfig,
    esh_warmup_adjusted_update,
    esh_warmup_init,
)
from esh_kernels.numpyro._isokinetic import isokinetic_transition


class ESHState(NamedTuple):
    """One chain. ``z``/``potential_energy`` are the draw; ``integrator`` is where the
    dynamics are now; ``x_prev`` the position before the last step; ``time_prev`` and
    ``time_cur`` the physical time of ``x_prev`` and ``integrator.x`` not yet credited to
    a draw (it belongs to the next one)."""

    i: Any
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
    rng_key: Any
    monitor: Any = None  # self-check statistics (core/self_check.py), set by FlatKernel


class ESH(FlatKernel):
    """Energy Sampling Hamiltonian dynamics with equally weighted draws of the physical-time
    average (Ver Steeg & Galstyan, 2021).

    :param model: a NumPyro model (give this or ``potential_fn``).
    :param potential_fn: potential energy ``E(z)`` on an unconstrained pytree; needs
        ``init_params``.
    :param step_size: fixed scaled-time step size (preconditioned frame); tuned if None.
    :param trajectory_length: physical time per draw, in units of scaled time at the
        reference energy (the mean potential energy of the warmup draws that tuned it;
        the clock is re-anchored to it at every draw, ``esh_math.md`` §4.4); tuned if None
        so that a draw takes ``steps_per_draw`` steps on average, or longer where the
        slowest of ``x`` and ``x^2`` would need more than about 3 draws to decorrelate
        (``esh_math.md`` §7.5).
    :param steps_per_draw: mean leapfrog steps per draw that tuning aims for. The default 2
        gave the most effective samples per gradient on the benchmark Gaussians (1: 83,
        2: 247, 4: 199, 8: 117 per 1000 gradients on the 100-D ill-conditioned one): one
        step per draw repeats points, many steps per draw discard all but one point.
    :param refresh_rate: partial velocity refresh rate per unit scaled time (whitened
        frame). ``0`` is the paper's deterministic dynamics, which are not ergodic on
        symmetric targets (an isotropic Gaussian, which every Gaussian becomes after
        preconditioning, conserves angular momentum). ``None`` (default) uses
        ``1/sqrt(d)``, chosen by measurement (``docs/benchmarks.md``).
    :param desired_energy_var: target ``Var[dH]/d`` per step for step-size tuning (§7.1);
        smaller means less discretisation bias and more gradients.
    :param dense_mass, inverse_mass_matrix: NumPyro's mass-matrix arguments, as ``NUTS``
        takes them (``True``/``False`` or site-name blocks; an initial or fixed inverse mass
        matrix): :mod:`esh_kernels.core.mass_matrix` describes both.
    :param adapt_mass_matrix: estimate the preconditioner in warmup (default True).
    :param max_steps: cap on steps per draw (a draw stopped by the cap covers less
        physical time; raise it for targets with very uneven density in low dimension).
    :param init_strategy: NumPyro init strategy.
    :param forward_mode_differentiation: use forward-mode AD.
    """

    min_dim = 2
    #: ``to_arviz`` reports the potential energy as ``energy`` (``arviz._add_isokinetic_energy``)
    energy_is_potential_energy = True
    divergence_threshold = 1000.0
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
        inverse_mass_matrix=None,
        adapt_mass_matrix=True,
        max_steps=1024,
        init_strategy=None,
        forward_mode_differentiation=False,
    ):
        kw = {} if init_strategy is None else {"init_strategy": init_strategy}
        super().__init__(model, potential_fn, dense_mass=dense_mass,
                         inverse_mass_matrix=inverse_mass_matrix,
                         forward_mode_differentiation=forward_mode_differentiation, **kw)
        self._step_size = check_positive("step_size", step_size)
        self._trajectory_length = check_positive("trajectory_length", trajectory_length)
        self._steps_per_draw = check_positive("steps_per_draw", steps_per_draw, allow_none=False)
        self._refresh_rate = check_refresh_rate(refresh_rate)
        self._desired_energy_var = check_positive("desired_energy_var", desired_energy_var, allow_none=False)
        self._adapt_mass_matrix = check_bool("adapt_mass_matrix", adapt_mass_matrix)
        self._max_steps = check_int("max_steps", max_steps, 1)

    def get_diagnostics_str(self, state):
        return "{} steps of size {:.2e}. diverging={}".format(
            int(state.n_steps), float(state.adapt_state.step_size), bool(state.diverging)
        )

    # -- one chain -----------------------------------------------------------------------

    def _init_chain(self, x, energy, grad, rng_key, num_warmup):
        d = x.shape[0]
        rng_key, k_u = random.split(rng_key)
        step = self._step_size if self._step_size is not None else 0.5 * math.sqrt(d)
        step = jnp.asarray(step, x.dtype)
        # max(d, 1): a model without latent sites (d = 0) is never moved (FlatKernel.init)
        rate = self._refresh_rate if self._refresh_rate is not None else 1.0 / math.sqrt(max(d, 1))
        length = self._trajectory_length or self._steps_per_draw * step
        zero = jnp.zeros((), x.dtype)
        adapt = esh_warmup_init(
            x, step, jnp.asarray(length, x.dtype),
            jnp.asarray(1.0 / rate if rate > 0 else jnp.inf, x.dtype), self._dense_mass, self._scale0,
        )
        u = unit_vector(random.normal(k_u, x.shape, x.dtype))
        integ = IntegratorState(x, u, zero, energy, grad)
        return ESHState(
            jnp.array(0, jnp.int32), self._to_z(x), energy, integ, x, energy, zero, zero,
            jnp.array(False), jnp.array(0, jnp.int32), zero, adapt, rng_key,
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
        return lax.cond(
            state.i[0] < self._warmup_config().num_adjusted,
            jax.vmap(lambda s: self._adjusted_draw(s, value_and_grad)),
            jax.vmap(lambda s: self._esh_draw(s, value_and_grad)),
            state,
        )

    def _adjusted_draw(self, state, value_and_grad):
        """Warmup phase 1: one exact isokinetic transition (see the module docstring)."""
        key, k_transition = random.split(state.rng_key)
        adapt = state.adapt_state
        prop = isokinetic_transition(
            state.integrator, k_transition, adapt.adjusted.step_size,
            adapt.adjusted.trajectory_length, adapt.scale, value_and_grad, self._max_steps,
            self._warmup_config().adjusted_config().descends(state.i),
        )
        new = prop.state._replace(r=jnp.zeros_like(prop.state.r))
        adapt = esh_warmup_adjusted_update(adapt, state.i, new.x, prop.adapt_accept_prob, self._warmup_config())
        zero = jnp.zeros_like(new.energy)
        return ESHState(
            state.i + 1, self._to_z(new.x), new.energy, new, new.x, new.energy, zero, zero,
            prop.diverging, prop.num_steps, prop.energy_error, adapt, key,
        )

    def _esh_draw(self, state, value_and_grad):
        """One ESH draw (:mod:`esh_kernels.core.esh_draw`): warmup phase 2 or sampling."""
        key, k_draw, k_u = random.split(state.rng_key, 3)
        adapt = state.adapt_state
        d = state.integrator.x.shape[0]
        dtype = state.integrator.x.dtype
        warm = state.i < self._num_warmup
        carry, integ0, step_cap = esh_draw.start(
            state.integrator, state.x_prev, state.energy_prev, state.time_prev, state.time_cur,
            state.integrator.x, state.potential_energy, adapt, warm, self._steps_per_draw,
            self._max_steps,
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
        end = esh_draw.finish(carry, integ0, random.normal(k_u, (d,), dtype))
        adapt = lax.cond(
            warm,
            lambda a: esh_draw.warmup_update(a, state.i, carry, end, state.integrator.energy,
                                             self._warmup_config()),
            lambda a: a,
            adapt,
        )
        return ESHState(
            state.i + 1, self._to_z(end.pick_x), end.pick_energy, end.integ, end.x_prev,
            end.energy_prev, end.time_prev, end.time_cur, end.diverging,
            carry.k.astype(jnp.int32), carry.sum_dh, adapt, key,
        )

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
            max_steps=self._max_steps,
            metric_mask=self._metric_mask,
        )
