"""One ESH draw of fixed physical length, written once for both PPLs (``esh_math.md`` §4.3-4.5).

An ESH draw runs the time-scaled leapfrog (``D = d``) with a partial velocity refresh
before every step, and offers each position to a one-item weighted reservoir with the
physical time spent there (§3.5, §4.3). A sampling draw covers exactly the tuned physical
time (the clock re-anchored at its start, §4.4); time left over from the last step
belongs to the next draw, so consecutive draws tile the physical-time axis. A warmup draw
(phase 2 of ``core/warmup.py``) is a fixed number of steps covering about one refresh
length, its clock restarted at ``r = 0``.

The functions here take one chain (NumPyro, under ``vmap``) or a batch of chains (Pyro,
leading axis ``C``); the loop is the caller's: NumPyro runs :func:`step` in a
``lax.while_loop`` while :func:`running`, Pyro records it as one graph and masks finished
chains. Random numbers come in from the caller (standard normals and uniforms), so both
PPLs give the same draws from the same inputs (tested to 1e-10 in float64). ``warm`` is
a Python bool (Pyro, where the iteration is known on the host) or a traced boolean.
"""

import math
from typing import Any, NamedTuple

from esh_kernels.core.backend import namespace
from esh_kernels.core.bias_guard import shadow_statistic
from esh_kernels.core.dynamics import kinetic_energy_change
from esh_kernels.core.integrators import esh_leapfrog, finite_state
from esh_kernels.core.reservoir import offer_time
from esh_kernels.core.sphere import partial_refresh, refresh_noise_scale, unit_vector
from esh_kernels.core import state_fields
from esh_kernels.core.warmup import (
    esh_sampling_log_speed,
    esh_warmup_update,
    select,
    select_lazy,
    select_rows,
)


class ESHState(NamedTuple):
    """State of ``ESH``: one chain (NumPyro; a vectorized run adds a leading chain axis) or
    a batch of chains with leading axis ``C`` (Pyro). ``z``/``potential_energy`` are the
    draw; ``x_prev``/``energy_prev`` the position before the last step; ``time_prev`` and
    ``time_cur`` the physical time of ``x_prev`` and ``integrator.x`` not yet credited to a
    draw (it belongs to the next one). ``i``, ``z``, ``integrator``, ``rng_key`` and
    ``monitor`` as in :class:`esh_kernels.core.isokinetic.AdjustedESHState`."""

    i: Any
    z: Any
    potential_energy: Any
    integrator: Any
    x_prev: Any
    energy_prev: Any
    time_prev: Any
    time_cur: Any
    diverging: Any
    n_steps: Any  # gradient evaluations spent on this draw
    energy_error: Any  # change of H = E + d r over the draw
    adapt_state: Any  # core.warmup.ESHAdaptState
    rng_key: Any = None
    monitor: Any = None

    num_steps = state_fields.num_steps  # NumPyro's names (core/state_fields.py)
    z_grad = state_fields.no_z_grad
    energy = state_fields.isokinetic_energy
    __getitem__ = state_fields.field_lookup


class DrawCarry(NamedTuple):
    """The state of a draw in progress (one chain, or leading axis ``C``).

    ``integ`` is where the dynamics are; ``x_prev``/``energy_prev``/``grad_prev`` the position
    before the last step, its potential and gradient; ``time_prev``/``time_cur`` the physical
    time of ``x_prev`` and ``integ.x`` not yet credited to a draw; ``remaining`` the physical
    time the draw still needs; ``pick_x``/``pick_energy``/``pick_grad``/``log_total`` the
    reservoir; ``sum_dh``/``sum_dh2`` the energy error over the draw and its sum of squares
    per step; ``log_step_time`` the log physical time the draw's steps spanned; ``ok`` False
    once a step diverged.

    ``grad_prev`` and ``pick_grad`` are exact in a warmup draw, the only draw that reads them
    (the bias guard's probe, :func:`warmup_update`): it credits no time to the positions left
    pending by the draw before, so every position it can pick is one its own steps reached,
    whose gradient the leapfrog computed. A sampling draw may pick the pending ``x_prev``,
    whose gradient the state does not keep; there ``grad_prev`` starts as a placeholder
    (:func:`start`) and ``pick_grad`` is not read.
    """

    k: Any  # steps taken (a float, so that a recorded torch graph has one dtype)
    integ: Any
    x_prev: Any
    energy_prev: Any
    grad_prev: Any
    time_prev: Any
    time_cur: Any
    remaining: Any
    pick_x: Any
    pick_energy: Any
    pick_grad: Any
    log_total: Any
    sum_dh: Any
    sum_dh2: Any
    log_step_time: Any
    ok: Any


class DrawEnd(NamedTuple):
    """A finished draw: the dynamics' new state and the draw made. A diverged draw is
    dropped: the chain restarts where the draw began, with a fresh direction."""

    integ: Any
    pick_x: Any
    pick_energy: Any
    pick_grad: Any  # the gradient at ``pick_x`` (exact in a warmup draw, ``DrawCarry``)
    x_prev: Any
    energy_prev: Any
    time_prev: Any
    time_cur: Any
    diverging: Any
    non_finite: Any  # the divergence reached a non-finite state (step-size back-off)


def start(integ, x_prev, energy_prev, time_prev, time_cur, adapt, warm, steps_per_draw, max_steps):
    """Set up a draw from the chain's state (``integ``, the pending ``x_prev``/``time_*``);
    the reservoir starts empty, holding ``integ``'s position as a placeholder that the first
    offer of positive time replaces (every draw that does not diverge makes one). Returns
    ``(carry, integ0, step_cap)``: the carry before the pending positions are offered
    (:func:`offer_pending`), the dynamics' start (``r`` set) and the number of steps the
    draw may take."""
    xp = namespace(integ.x)
    d = integ.x.shape[-1]
    zero = xp.zeros_like(integ.energy)

    def warm_steps():  # about one refresh length (sqrt(d) without refresh)
        finite = xp.isfinite(adapt.refresh_length)
        distance = xp.where(finite, adapt.refresh_length, zero + math.sqrt(d))
        return xp.floor(xp.clip(xp.ceil(distance / adapt.step_size), steps_per_draw, max_steps))

    r0 = select_lazy(warm, lambda: zero, lambda: esh_sampling_log_speed(adapt, integ.energy, d))
    carry = DrawCarry(
        k=zero, integ=integ._replace(r=r0), x_prev=x_prev, energy_prev=energy_prev,
        grad_prev=integ.grad,  # a placeholder: x_prev's gradient is not kept (DrawCarry)
        time_prev=select(warm, zero, time_prev), time_cur=select(warm, zero, time_cur),
        remaining=select(warm, zero + math.inf, adapt.trajectory_length),
        pick_x=integ.x, pick_energy=integ.energy, pick_grad=integ.grad,
        log_total=zero - math.inf, sum_dh=zero,
        sum_dh2=zero, log_step_time=zero - math.inf, ok=xp.ones_like(zero, dtype=bool),
    )
    return carry, carry.integ, select_lazy(warm, warm_steps, lambda: zero + max_steps)


def _offer(c, x, energy, grad, time, uniform):
    remaining, log_total, pick_x, pick_energy, pick_grad, left = offer_time(
        c.remaining, c.log_total, c.pick_x, c.pick_energy, c.pick_grad, x, energy, grad, time,
        namespace(uniform).log(uniform),
    )
    return c._replace(remaining=remaining, log_total=log_total, pick_x=pick_x,
                      pick_energy=pick_energy, pick_grad=pick_grad), left


def offer_pending(c, uniform_prev, uniform_cur):
    """Credit the pending time of ``x_prev`` and of the current position to the draw
    (uniforms in ``[0, 1)`` for the two reservoir offers)."""
    c, t_prev = _offer(c, c.x_prev, c.energy_prev, c.grad_prev, c.time_prev, uniform_prev)
    c, t_cur = _offer(c, c.integ.x, c.integ.energy, c.integ.grad, c.time_cur, uniform_cur)
    return c._replace(time_prev=t_prev, time_cur=t_cur)


def running(c, step_cap):
    """The draw needs more physical time, has steps left, and has not diverged."""
    return (c.remaining > 0) & (c.k < step_cap) & c.ok


def step(c, normal, uniform_prev, uniform_cur, step_size, refresh_length, scale, value_and_grad,
         divergence_threshold):
    """One step of a draw: partial refresh (§6.3), time-scaled leapfrog with the physical
    time of each half-step (§3.4-3.5), then the offers (``normal``: standard normals of the
    position's shape). A step whose energy error is not finite or exceeds
    ``divergence_threshold``, or that reaches a non-finite gradient or position, ends the
    draw as divergent."""
    xp = namespace(c.integ.x)
    d = c.integ.x.shape[-1]
    integ = c.integ
    u = partial_refresh(integ.u, normal, refresh_noise_scale(step_size, refresh_length, d))
    new, dr, (log_dt_old, log_dt_new) = esh_leapfrog(
        integ._replace(u=u), step_size, value_and_grad, d, scale, with_time=True
    )
    dh = new.energy - integ.energy + kinetic_energy_change(dr, d)
    ok = finite_state(new) & (xp.abs(dh) < divergence_threshold)  # False for a NaN or infinite dh
    c = c._replace(
        k=c.k + 1.0, integ=new, x_prev=integ.x, energy_prev=integ.energy, grad_prev=integ.grad,
        time_prev=xp.exp(log_dt_old), time_cur=xp.exp(log_dt_new), sum_dh=c.sum_dh + dh,
        sum_dh2=c.sum_dh2 + dh * dh,
        log_step_time=xp.logaddexp(c.log_step_time, xp.logaddexp(log_dt_old, log_dt_new)),
        ok=ok,
    )
    return offer_pending(c, uniform_prev, uniform_cur)


def finish(c, integ0, restart_normal):
    """The draw's outcome (:class:`DrawEnd`) from the final carry; ``restart_normal``
    gives the fresh direction used if it diverged."""
    xp = namespace(integ0.x)
    diverging = ~c.ok
    restart = integ0._replace(u=unit_vector(restart_normal))
    zero = xp.zeros_like(c.time_prev)
    return DrawEnd(
        integ=select_rows(diverging, restart, c.integ),
        pick_x=select_rows(diverging, integ0.x, c.pick_x),
        pick_energy=xp.where(diverging, integ0.energy, c.pick_energy),
        pick_grad=select_rows(diverging, integ0.grad, c.pick_grad),
        x_prev=select_rows(diverging, integ0.x, c.x_prev),
        energy_prev=xp.where(diverging, integ0.energy, c.energy_prev),
        time_prev=xp.where(diverging, zero, c.time_prev),
        time_cur=xp.where(diverging, zero, c.time_cur),
        diverging=diverging,
        non_finite=~(xp.isfinite(c.sum_dh) & finite_state(c.integ)),
    )


def probe_gradients(config):
    """Gradients a phase-2 draw spends on the bias guard's probe (:func:`warmup_update`):
    one, none where the step size is not tuned (the guard only shortens a tuned step)."""
    return 1 if config.tune_step_size else 0


def warmup_update(adapt, i, c, end, start_energy, config, value_and_grad, restart_normal):
    """Phase-2 adaptation after a warmup draw (:func:`core.warmup.esh_warmup_update`):
    the mean squared energy error per step and dimension, the steps and their physical
    time, the draw made, and the bias guard's statistic at the draw
    (:func:`core.bias_guard.shadow_statistic` from the draw's gradient, which the trajectory
    computed, and :func:`probe_gradients` more; its probe direction is the sign of
    ``restart_normal``, the normals :func:`finish` took, which only a divergent draw uses,
    and a divergent draw is not probed)."""
    xp = namespace(c.k)
    d = c.integ.x.shape[-1]
    shadow = (shadow_statistic(end.pick_x, end.pick_grad, adapt.scale, value_and_grad, restart_normal)
              if probe_gradients(config) else None)
    return esh_warmup_update(
        adapt, i, c.sum_dh2 / (xp.where(c.k > 1.0, c.k, 1.0) * d), c.k, c.log_step_time,
        end.diverging, config, energy=end.pick_energy, non_finite=end.non_finite,
        draw=end.pick_x, start_energy=start_energy, shadow=shadow,
    )
