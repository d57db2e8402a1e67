"""``AdjustedESH``: exact (Metropolis-adjusted) isokinetic ESH dynamics for NumPyro.

Per transition (``esh_math.md`` §6.4): a fresh unit velocity, a jittered number of
isokinetic leapfrog steps (``D = d - 1``, so ``p(x) Unif(S^{d-1})`` is invariant without
weights, §2.2), and a Metropolis test on the energy error ``dE + (d - 1) sum(dr)``.
Warmup tunes the step size (dual averaging), a windowed diagonal or dense preconditioner
and the trajectory length.
"""

import math
from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax, random

from esh_kernels.core.integrators import IntegratorState
from esh_kernels.core.metropolis import mean_accept_update
from esh_kernels.core.checks import check_bool, check_int, check_positive, check_probability
from esh_kernels.numpyro._base import FlatKernel
from esh_kernels.numpyro._isokinetic import isokinetic_transition
from esh_kernels.core.warmup import (
    AdjustedESHAdaptState,
    AdjustedWarmupConfig,
    adjusted_warmup_init,
    adjusted_warmup_update,
    default_trajectory_factor,
)


class AdjustedESHState(NamedTuple):
    """State of one chain. ``z`` is the draw (unconstrained pytree); ``integrator`` holds
    the flat position with its cached potential energy and gradient."""

    i: Any
    z: Any
    potential_energy: Any
    integrator: IntegratorState
    diverging: Any
    accept_prob: Any
    mean_accept_prob: Any
    n_steps: Any  # gradient evaluations spent on this draw
    energy_error: Any
    adapt_state: AdjustedESHAdaptState
    rng_key: Any
    monitor: Any = None  # self-check statistics (core/self_check.py), set by FlatKernel


class AdjustedESH(FlatKernel):
    """Metropolis-adjusted isokinetic ESH (microcanonical) sampler. Exact for any step size.

    :param model: a NumPyro model (give this or ``potential_fn``).
    :param potential_fn: a potential energy ``E(z) = -log p(z)`` on an unconstrained pytree;
        needs ``init_params``.
    :param step_size: fixed step size (in the preconditioned frame). Given: no step-size
        adaptation. Default: tuned by dual averaging.
    :param trajectory_length: fixed mean trajectory length (distance travelled per
        proposal, preconditioned frame). Given: not tuned. Default: tuned in warmup,
        ``trajectory_factor * sqrt(d)`` lengthened where the slowest of ``x`` and ``x^2``
        random-walks (``esh_math.md`` §7.5).
    :param target_accept_prob: acceptance rate that warmup aims for. Default 0.7, chosen
        with ``trajectory_factor`` on the headline yardstick (min over coordinates of bulk
        ESS of ``x`` and ``x^2`` per 1000 gradients, 4 vectorized chains, 1000 + 1000,
        x64; ``docs/kernels/adjusted_esh.md`` has the table): at factor 1, targets 0.7 /
        0.8 / 0.9 gave 170 / 142 / 131 on the 100-D ill-conditioned Gaussian, 134 / 104 / 70
        on eight schools and 28 / 25 / 22 on the logistic regression (medians over seeds).
    :param dense_mass, inverse_mass_matrix: NumPyro's mass-matrix arguments, as ``NUTS``
        takes them (``True``/``False`` or site-name blocks; an initial or fixed inverse mass
        matrix): :mod:`esh_kernels.core.mass_matrix` describes both.
    :param adapt_mass_matrix: whether warmup estimates the preconditioner (default True).
    :param max_steps: cap on leapfrog steps (gradient evaluations) per transition.
    :param trajectory_factor: the shortest tuned mean trajectory length, in units of
        ``sqrt(d)`` in the whitened frame (about the size of the typical set). Default 1 (2 with
        ``dense_mass=True``: ``esh_kernels.core.warmup.TRAJECTORY_FACTOR`` says why), chosen
        on the same
        yardstick: factors 0.75 / 1 / 1.25 / 1.5 / 2 at target 0.8 gave 131 / 142 / 118 /
        85 / 59 on the ill-conditioned Gaussian, 97 / 104 / 108 / 84 / 73 on eight schools
        and 19 / 25 / 28 / 35 / 24 on the logistic regression. The former default 2 was
        chosen on ESS of ``x`` alone, which the antithetic longer trajectories flatter
        (ESS of ``x`` 4353 against 975 for ``x^2`` on the Gaussian).
    :param init_strategy: NumPyro init strategy (default ``init_to_uniform``).
    :param forward_mode_differentiation: use forward-mode AD (e.g. for ``lax.while_loop``
        inside the model).
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
        inverse_mass_matrix=None,
        adapt_mass_matrix=True,
        max_steps=1024,
        trajectory_factor=None,
        init_strategy=None,
        forward_mode_differentiation=False,
    ):
        kw = {} if init_strategy is None else {"init_strategy": init_strategy}
        super().__init__(model, potential_fn, dense_mass=dense_mass,
                         inverse_mass_matrix=inverse_mass_matrix,
                         forward_mode_differentiation=forward_mode_differentiation, **kw)
        self._step_size = check_positive("step_size", step_size)
        self._trajectory_length = check_positive("trajectory_length", trajectory_length)
        self._target_accept_prob = check_probability("target_accept_prob", target_accept_prob)
        self._adapt_mass_matrix = check_bool("adapt_mass_matrix", adapt_mass_matrix)
        self._max_steps = check_int("max_steps", max_steps, 1)
        self._trajectory_factor = default_trajectory_factor(
            check_positive("trajectory_factor", trajectory_factor), self._dense_mass)

    def get_diagnostics_str(self, state):
        return "{} steps of size {:.2e}. acc. prob={:.2f}".format(
            int(state.n_steps), float(state.adapt_state.step_size), float(state.mean_accept_prob)
        )

    # -- one chain -----------------------------------------------------------------------

    def _init_chain(self, x, energy, grad, rng_key, num_warmup):
        d = x.shape[0]
        step = self._step_size if self._step_size is not None else 0.5 * math.sqrt(d)
        step = jnp.asarray(step, dtype=x.dtype)
        length = self._trajectory_length or self._warmup_config(num_warmup).steps_before_metric * step
        adapt = adjusted_warmup_init(x, step, jnp.asarray(length, dtype=x.dtype), self._dense_mass,
                                     self._scale0)
        zero = jnp.zeros((), x.dtype)
        integ = IntegratorState(x, jnp.zeros_like(x), zero, energy, grad)
        return AdjustedESHState(
            jnp.array(0, jnp.int32), self._to_z(x), energy, integ, jnp.array(False),
            zero, zero, jnp.array(0, jnp.int32), zero, adapt, rng_key,
        )

    def _sample_chain(self, state, value_and_grad):
        key, k_transition = random.split(state.rng_key)
        adapt = state.adapt_state
        config = self._warmup_config(self._num_warmup)
        prop = isokinetic_transition(
            state.integrator, k_transition, adapt.step_size, adapt.trajectory_length,
            adapt.scale, value_and_grad, self._max_steps, config.descends(state.i),
        )
        new, accept_prob = prop.state, prop.accept_prob

        i = state.i
        adapt = lax.cond(
            i < self._num_warmup,
            lambda a: adjusted_warmup_update(a, i, new.x, prop.adapt_accept_prob, config),
            lambda a: a,
            adapt,
        )
        mean_accept = mean_accept_update(state.mean_accept_prob, accept_prob, i, self._num_warmup)
        return AdjustedESHState(
            i + 1, self._to_z(new.x), new.energy, new, prop.diverging, accept_prob,
            mean_accept, prop.num_steps, prop.energy_error, adapt, key,
        )

    def _warmup_config(self, num_warmup):
        return AdjustedWarmupConfig(
            num_warmup=num_warmup,
            target_accept_prob=self._target_accept_prob,
            tune_step_size=self._step_size is None,
            tune_metric=self._adapt_mass_matrix,
            tune_trajectory=self._trajectory_length is None,
            trajectory_factor=self._trajectory_factor,
            metric_mask=self._metric_mask,
            max_steps=self._max_steps,
        )
