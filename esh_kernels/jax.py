"""Batched ESH samplers for energy functions, JAX backend.

Functional API for energy-based models (many chains at once, a few hundred gradient steps,
memory independent of the trajectory length unless the trajectory is requested)::

    import jax, jax.numpy as jnp
    from esh_kernels.jax import sample, jarzynski, ReplayBuffer

    def energy(x):                       # (batch, ...) -> (batch,)
        return 0.5 * jnp.sum(x ** 2, axis=(1, 2, 3))

    res = sample(energy, x0, n_steps=200, step_size=0.1, key=jax.random.key(0))
    res.samples          # one ergodic (time-weighted reservoir) draw per chain
    res.state.x          # final positions

    jr = jarzynski(energy, (4096, 3, 8, 8), n_steps=100, key=jax.random.key(1))
    jr.log_z, jr.log_z_se, jr.ess

The loops are ``lax.scan`` inside ``jax.jit`` (no host synchronisation per step). The
energy function is a static argument of the compiled function: pass a stable function
(e.g. ``model.apply``) and its changing arrays (e.g. the parameters) through
``energy_args``, which is traced, so that a new parameter value does not recompile. All
array arguments may be traced, so ``sample`` can also be called inside a user's ``jit``.

Randomness is derived from ``key`` (``jax.random.key`` or ``PRNGKey``), or can be passed
in pre-drawn (``u0``, ``uniforms``, ``normals``) to reproduce a run exactly, e.g. across
backends (``esh_kernels.torch`` gives the same numbers for the same inputs).

Math: ``docs/esh_math.md`` §3-5, written once in :mod:`esh_kernels.core` and
:mod:`esh_kernels.core.energy_sampling`. User guide: ``docs/energy_models.md``.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from esh_kernels.core import IntegratorState, unit_vector
from esh_kernels.core import energy_sampling as es
from esh_kernels.core.energy_sampling import (
    Diagnostics,
    JarzynskiResult,
    SampleResult,
    log_z_estimate,
)

__all__ = [
    "sample",
    "jarzynski",
    "log_z_estimate",
    "ReplayBuffer",
    "replay_sample",
    "SampleResult",
    "JarzynskiResult",
    "Diagnostics",
]


def _float_dtype(x):
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x0 must be a floating-point array, got dtype {x.dtype}.")
    return x.dtype


def _value_and_grad(energy_fn, energy_args, shape, energy_scale, dtype):
    """``x_flat (batch, d) -> (scale * E(x), scale * dE/dx flattened)``."""
    batch = shape[0]

    def total(x_flat):
        e = energy_fn(x_flat.reshape(shape), *energy_args)
        es.check_energy_shape(jnp.shape(e), batch)
        e = e.astype(dtype)
        return jnp.sum(e), e

    grad_fn = jax.grad(total, has_aux=True)

    def value_and_grad(x_flat):
        g, e = grad_fn(x_flat)
        return energy_scale * e, energy_scale * g

    return value_and_grad


def _run(
    energy_fn,
    energy_args,
    x0,
    u0,
    key,
    uniforms,
    normals,
    step_size,
    energy_scale,
    refresh_rate,
    *,
    n_steps,
    bounds,
    reservoir,
    refresh,
    keep_trajectory,
    keep_diagnostics,
):
    """Shared scan of ``sample`` and ``jarzynski`` (traced; flags are Python values)."""
    shape = x0.shape
    dtype = x0.dtype
    batch = shape[0]
    d = math.prod(shape[1:])
    step_size = jnp.asarray(step_size, dtype)
    energy_scale = jnp.asarray(energy_scale, dtype)
    vg = _value_and_grad(energy_fn, energy_args, shape, energy_scale, dtype)

    if key is not None:
        key_u, key_res, key_ref = jax.random.split(key, 3)
    x = x0.reshape(batch, d)
    if u0 is None:
        u = unit_vector(jax.random.normal(key_u, (batch, d), dtype))
    else:
        u = unit_vector(jnp.asarray(u0, dtype).reshape(batch, d))
    energy, grad = vg(x)
    state = IntegratorState(x, u, jnp.zeros_like(energy), energy, grad)
    energy0 = energy
    res = (x, energy, jnp.full_like(energy, -jnp.inf)) if reservoir else None
    diverged = jnp.zeros((batch,), bool)

    xs = (
        jnp.arange(n_steps),
        None if uniforms is None else jnp.asarray(uniforms, dtype),
        None if normals is None else jnp.asarray(normals, dtype).reshape(n_steps, batch, d),
    )

    def body(carry, inputs):
        state, res, diverged = carry
        i, unif, z = inputs
        log_u = None
        if reservoir:
            if unif is None:
                unif = jax.random.uniform(jax.random.fold_in(key_res, i), (2, batch), dtype)
            log_u = jnp.log(unif)
        if refresh and z is None:
            z = jax.random.normal(jax.random.fold_in(key_ref, i), (batch, d), dtype)
        new, res, ok, log_dts = es.energy_step(state, res, step_size, vg, d, bounds, log_u,
                                               z if refresh else None, refresh_rate)
        out = {}
        if keep_trajectory:
            out["trajectory"] = (new.x, *log_dts)
        if keep_diagnostics:
            out["diagnostics"] = es.step_diagnostics(new, energy0, d)
        return (new, res, diverged | ~ok), out

    (state, res, diverged), out = lax.scan(body, (state, res, diverged), xs)

    extra = {}
    if keep_trajectory:
        xs_path, log_dt_old, log_dt_new = out["trajectory"]
        extra["trajectory"] = jnp.concatenate([x[None], xs_path]).reshape((n_steps + 1,) + shape)
        extra["log_time_weights"] = es.point_log_weights(jnp, log_dt_old, log_dt_new,
                                                         jnp.concatenate)
        step_times = lax.cumlogsumexp(jnp.logaddexp(log_dt_old, log_dt_new), axis=0)
        extra["log_times"] = jnp.concatenate([jnp.full((1, batch), -jnp.inf, dtype), step_times])
    if keep_diagnostics:
        extra["diagnostics"] = Diagnostics(*out["diagnostics"])
    return es.reshaped_state(state, shape), res, diverged, extra


_STATIC = ("energy_fn", "n_steps", "bounds", "reservoir", "refresh", "keep_trajectory",
           "keep_diagnostics")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _sample_jit(energy_fn, energy_args, x0, u0, key, uniforms, normals, step_size,
                energy_scale, refresh_rate, **flags):
    return es.sample_result(*_run(energy_fn, energy_args, x0, u0, key, uniforms, normals,
                                  step_size, energy_scale, refresh_rate, **flags))


def _check_x0_bounds(x0, bounds):
    if bounds is not None and not isinstance(x0, jax.core.Tracer):
        es.check_inside_bounds(bool(jnp.all((x0 >= bounds[0]) & (x0 <= bounds[1]))), bounds)


def _check_random_inputs(key, u0, uniforms, normals, x0, n_steps, refresh, reservoir=True):
    es.check_random_shapes(x0.shape, n_steps, *(None if v is None else jnp.shape(v)
                                                 for v in (u0, uniforms, normals)))
    needs_key = (u0 is None) or (reservoir and uniforms is None) or (refresh and normals is None)
    if needs_key and key is None:
        raise ValueError(
            "key is required (e.g. key=jax.random.key(0)) unless u0, uniforms and, with "
            "refresh_rate > 0, normals are all given."
        )


def sample(
    energy_fn,
    x0,
    n_steps,
    step_size=0.1,
    *,
    key=None,
    u0=None,
    energy_scale=1.0,
    bounds=None,
    refresh_rate=0.0,
    keep_trajectory=False,
    keep_diagnostics=True,
    energy_args=(),
    uniforms=None,
    normals=None,
):
    """Run batched ESH dynamics on ``energy_fn`` and draw one ergodic sample per chain.

    Args:
      energy_fn: ``energy_fn(x, *energy_args) -> (batch,)`` energies (``-log p`` up to a
        constant) for ``x`` of shape ``(batch, *event_shape)``. Chains must not interact
        (the gradient of the summed energy is used).
      x0: initial positions, ``(batch, *event_shape)``, floating point; ``d = prod(event)``
        must be at least 2.
      n_steps: number of leapfrog steps (one gradient each, plus one at ``x0``).
      step_size: scaled-time step ``eps`` (each step moves every chain by exactly ``eps``
        in Euclidean distance, before reflection).
      key: PRNG key; needed unless all random inputs below are given.
      u0: initial velocities (normalised to unit vectors per chain), default uniform.
      energy_scale: multiplies the energy (inverse temperature); the sampled density is
        ``∝ exp(-energy_scale * E)``.
      bounds: ``None``, ``True`` (the box ``[-1, 1]``) or ``(low, high)``: positions that
        leave the box are mirrored back and the velocity component flipped.
      refresh_rate: partial velocity refresh per unit scaled time (0: the paper's
        deterministic dynamics).
      keep_trajectory: also return all positions and their physical times
        (memory ``O(n_steps * batch * d)``).
      keep_diagnostics: return per-step energy, kinetic term and energy error
        (``O(n_steps * batch)`` scalars); ``False`` keeps memory independent of n_steps.
      energy_args: extra (traced) arguments of ``energy_fn``, e.g. network parameters.
      uniforms: optional pre-drawn ``Uniform(0, 1)`` of shape ``(n_steps, 2, batch)`` for
        the reservoir (offer of the old point, then of the new point, at each step).
      normals: optional pre-drawn standard normals ``(n_steps, batch, *event_shape)`` for
        the velocity refresh.

    Returns:
      :class:`~esh_kernels.core.energy_sampling.SampleResult`.
    """
    x0 = jnp.asarray(x0)
    _float_dtype(x0)
    es.check_event_size(x0.shape)
    n_steps, bounds, refresh = es.check_run_args(n_steps, step_size, energy_scale, bounds,
                                                 refresh_rate)
    _check_x0_bounds(x0, bounds)
    _check_random_inputs(key, u0, uniforms, normals, x0, n_steps, refresh)
    return _sample_jit(
        energy_fn, tuple(energy_args), x0, u0, key, uniforms, normals, step_size,
        energy_scale, refresh_rate, n_steps=n_steps, bounds=bounds, reservoir=True,
        refresh=refresh, keep_trajectory=bool(keep_trajectory),
        keep_diagnostics=bool(keep_diagnostics),
    )


@functools.partial(jax.jit, static_argnames=_STATIC)
def _jarzynski_jit(energy_fn, energy_args, x0, u0, key, base_log_prob, step_size,
                   energy_scale, **flags):
    final, _, diverged, extra = _run(energy_fn, energy_args, x0, u0, key, None, None,
                                     step_size, energy_scale, 0.0, **flags)
    if base_log_prob is None:
        base_log_prob = es.default_base_log_prob(x0.reshape(x0.shape[0], -1), flags["bounds"])
    return es.jarzynski_result(final, diverged, extra, base_log_prob)


def jarzynski(
    energy_fn,
    x0,
    n_steps,
    step_size=0.1,
    *,
    key=None,
    base_log_prob=None,
    u0=None,
    energy_scale=1.0,
    bounds=None,
    keep_trajectory=False,
    keep_diagnostics=True,
    energy_args=(),
    dtype=jnp.float32,
):
    """Jarzynski / normalising-flow sampler (paper §2.3, Alg. 4) with an estimate of log Z.

    Particles start at ``x0 ~ q0`` with uniform unit velocities and ``r0 = 0`` and follow
    ``n_steps`` deterministic ESH leapfrog steps. The log importance weight of particle i
    is ``-log q0(x0_i) - E(x_T,i) - (d-1)(r_T,i - r_0)`` (exact phase-space volume change,
    ``docs/esh_math.md`` §5), so ``mean(w) ≈ Z = ∫ exp(-energy_scale * E)``.

    Args:
      energy_fn: as in :func:`sample`.
      x0: the initial particles ``(batch, *event_shape)`` drawn from the base ``q0``, or a
        shape tuple to draw them here from the default base: the standard normal
        (``E0 = |x|²/2``, ``Z0 = (2π)^(d/2)``), or the uniform law on the box when
        ``bounds`` is given.
      n_steps, step_size, energy_scale, bounds, keep_trajectory, keep_diagnostics,
      energy_args: as in :func:`sample` (no velocity refresh: the flow must stay
        deterministic).
      key: PRNG key (needed unless ``x0`` is an array and ``u0`` is given).
      base_log_prob: ``(batch,)`` normalised log density of ``x0`` under its base.
        Default: the default base above evaluated at ``x0``. Pass it whenever ``x0`` comes
        from another distribution, or the estimate is wrong.
      u0: optional initial directions (normalised per chain).
      dtype: dtype of ``x0`` when it is drawn here.

    Returns:
      :class:`~esh_kernels.core.energy_sampling.JarzynskiResult` with ``log_z``, ``log_z_se``
      (delta-method standard error) and ``ess`` (Kish).
    """
    n_steps, bounds, _ = es.check_run_args(n_steps, step_size, energy_scale, bounds)
    if isinstance(x0, (tuple, list)):
        shape = tuple(int(s) for s in x0)
        es.check_event_size(shape)
        if key is None:
            raise ValueError("key is required to draw x0 from the base distribution.")
        key, key_x = jax.random.split(key)
        if bounds is None:
            x0 = jax.random.normal(key_x, shape, dtype)
        else:
            x0 = jax.random.uniform(key_x, shape, dtype, bounds[0], bounds[1])
    x0 = jnp.asarray(x0)
    _float_dtype(x0)
    batch, _ = es.check_event_size(x0.shape)
    _check_x0_bounds(x0, bounds)
    if base_log_prob is not None:
        es.check_random_input("base_log_prob", jnp.shape(base_log_prob), (batch,))
        base_log_prob = jnp.asarray(base_log_prob, x0.dtype)
    _check_random_inputs(key, u0, None, None, x0, n_steps, False, reservoir=False)
    return _jarzynski_jit(
        energy_fn, tuple(energy_args), x0, u0, key, base_log_prob, step_size, energy_scale,
        n_steps=n_steps, bounds=bounds, reservoir=False, refresh=False,
        keep_trajectory=bool(keep_trajectory), keep_diagnostics=bool(keep_diagnostics),
    )


# ---------------------------------------------------------------------------------------
# Persistent chains for contrastive-divergence training


def _uniform_noise(key, shape, dtype, bounds):
    low, high = bounds if bounds is not None else (-1.0, 1.0)
    return jax.random.uniform(key, shape, dtype, low, high)


def replay_sample(
    buffer,
    key,
    energy_fn,
    batch_size,
    n_steps,
    step_size=0.1,
    *,
    reinit_fraction=0.05,
    noise_fn=None,
    energy_scale=1.0,
    bounds=None,
    refresh_rate=0.0,
    use_reservoir=True,
    energy_args=(),
):
    """Pure-function form of :meth:`ReplayBuffer.sample` (compiled; usable inside ``jit``).

    Picks ``batch_size`` distinct buffer entries, replaces each by noise with probability
    ``reinit_fraction`` (``noise_fn(key, shape, dtype)``, default uniform on ``bounds`` or
    ``[-1, 1]``), runs :func:`sample` from them and writes the result back.

    Returns ``(new_buffer, samples, result)`` where ``samples`` are the reservoir draws
    (``use_reservoir=True``, as in the paper's EBM training) or the final states, and
    ``result`` the :class:`~esh_kernels.core.energy_sampling.SampleResult` (no diagnostics).
    """
    buffer = jnp.asarray(buffer)
    _float_dtype(buffer)
    es.check_event_size(buffer.shape)
    reinit_fraction = es.check_fraction("reinit_fraction", reinit_fraction)
    n_steps, bounds, refresh = es.check_run_args(n_steps, step_size, energy_scale, bounds,
                                                 refresh_rate)
    if not 1 <= batch_size <= buffer.shape[0]:
        raise ValueError(f"batch_size must be in [1, {buffer.shape[0]}], got {batch_size}.")
    return _replay_jit(
        energy_fn, tuple(energy_args), buffer, key, reinit_fraction, step_size, energy_scale,
        refresh_rate, batch_size=int(batch_size), noise_fn=noise_fn, n_steps=n_steps,
        bounds=bounds, reservoir=True, refresh=refresh, keep_trajectory=False,
        keep_diagnostics=False, use_reservoir=bool(use_reservoir),
    )


@functools.partial(
    jax.jit, static_argnames=_STATIC + ("batch_size", "noise_fn", "use_reservoir")
)
def _replay_jit(energy_fn, energy_args, buffer, key, reinit_fraction, step_size, energy_scale,
                refresh_rate, *, batch_size, noise_fn, use_reservoir, **flags):
    k_idx, k_mask, k_noise, k_run = jax.random.split(key, 4)
    idx = jax.random.choice(k_idx, buffer.shape[0], (batch_size,), replace=False)
    x0 = buffer[idx]
    shape = x0.shape
    noise = (noise_fn(k_noise, shape, x0.dtype) if noise_fn is not None
             else _uniform_noise(k_noise, shape, x0.dtype, flags["bounds"]))
    fresh = jax.random.uniform(k_mask, (batch_size,), x0.dtype) < reinit_fraction
    x0 = jnp.where(fresh.reshape((-1,) + (1,) * (x0.ndim - 1)), noise, x0)
    result = _sample_jit(energy_fn, energy_args, x0, None, k_run, None, None, step_size,
                         energy_scale, refresh_rate, **flags)
    out = result.samples if use_reservoir else result.state.x
    return buffer.at[idx].set(out), out, result


class ReplayBuffer:
    """A buffer of persistent chains updated by ESH (persistent contrastive divergence).

    Example::

        buf = ReplayBuffer.uniform(10_000, (3, 32, 32), key=jax.random.key(0), bounds=True)
        for step in range(n_train):
            # model.apply: your energy(x, params), e.g. a Flax module's apply; a complete,
            # runnable loop is in docs/energy_models.md
            x_neg = buf.sample(model.apply, 64, n_steps=100, energy_args=(params,))
            ...  # loss = E(x_data) - E(x_neg)

    Args:
      buffer: initial chains ``(buffer_size, *event_shape)``.
      key: PRNG key; the buffer keeps its own key and splits it at every call.
      reinit_fraction: probability that a picked chain restarts from noise.
      noise_fn: ``noise_fn(key, shape, dtype)``; default uniform on ``bounds`` (or
        ``[-1, 1]``).
      step_size, energy_scale, bounds, refresh_rate: defaults for :meth:`sample`.
      use_reservoir: return and store the reservoir draws (True, the paper's choice) or
        the final states.

    These arguments, checked, are kept in ``settings``
    (:class:`~esh_kernels.core.energy_sampling.ReplaySettings`); ``buffer`` holds the chains
    and ``last_result`` the last :meth:`sample`'s full result.
    """

    def __init__(self, buffer, key, *, reinit_fraction=0.05, noise_fn=None, step_size=0.1,
                 energy_scale=1.0, bounds=None, refresh_rate=0.0, use_reservoir=True):
        buffer = jnp.asarray(buffer)
        _float_dtype(buffer)
        es.check_event_size(buffer.shape)
        self.buffer = buffer
        self.key = key
        self.settings = es.replay_settings(reinit_fraction, noise_fn, step_size, energy_scale,
                                           bounds, refresh_rate, use_reservoir)
        self.last_result = None

    @classmethod
    def uniform(cls, buffer_size, event_shape, key, *, dtype=jnp.float32, bounds=None, **kw):
        """A buffer initialised from uniform noise on ``bounds`` (default ``[-1, 1]``)."""
        key, k_init = jax.random.split(key)
        shape = (int(buffer_size),) + tuple(event_shape)
        buffer = _uniform_noise(k_init, shape, dtype, es.check_bounds(bounds))
        return cls(buffer, key, bounds=bounds, **kw)

    def __len__(self):
        return self.buffer.shape[0]

    def sample(self, energy_fn, batch_size, n_steps, *, step_size=None, energy_args=()):
        """Pick ``batch_size`` chains, run ``n_steps`` ESH steps, write them back and
        return the samples ``(batch_size, *event_shape)``. The full
        :class:`~esh_kernels.core.energy_sampling.SampleResult` is kept in ``last_result``."""
        self.key, key = jax.random.split(self.key)
        s = self.settings
        self.buffer, out, self.last_result = replay_sample(
            self.buffer, key, energy_fn, batch_size, n_steps,
            s.step_size if step_size is None else step_size,
            reinit_fraction=s.reinit_fraction, noise_fn=s.noise_fn,
            energy_scale=s.energy_scale, bounds=s.bounds, refresh_rate=s.refresh_rate,
            use_reservoir=s.use_reservoir, energy_args=energy_args,
        )
        return out
