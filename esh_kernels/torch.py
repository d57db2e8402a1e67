"""Batched ESH samplers for energy functions, torch backend.

Functional API for energy-based models (many chains at once, a few hundred gradient steps,
memory independent of the trajectory length unless the trajectory is requested)::

    import torch
    from esh_kernels.torch import sample, jarzynski, ReplayBuffer

    net = MyEnergyNet().to("cuda")       # your nn.Module, net(x): (batch, 3, 32, 32) -> (batch,);
                                         # a complete, runnable one: docs/energy_models.md
    x0 = torch.rand(256, 3, 32, 32, device="cuda") * 2 - 1
    res = sample(net, x0, n_steps=200, step_size=0.1, bounds=True)
    res.samples          # one ergodic (time-weighted reservoir) draw per chain
    res.state.x          # final positions

    jr = jarzynski(net, x0.shape, n_steps=100, device="cuda")
    jr.log_z, jr.log_z_se, jr.ess

Every tensor is created on the device and with the dtype of ``x0``. The loop is a Python
loop with no host synchronisation (no ``.item()``); gradients come from
``torch.autograd.grad(energy.sum(), x)`` and no autograd graph outlives a step. While
sampling, the parameters of an ``nn.Module`` energy are temporarily set to
``requires_grad=False`` (restored afterwards) so their gradients are neither built nor
stored; the sampler's outputs never require grad. Put the module in ``eval()`` mode if
it has batch statistics (they would couple the chains).

Randomness comes from ``generator`` (a ``torch.Generator`` on the device of ``x0``; the
global one by default), or can be passed in pre-drawn (``u0``, ``uniforms``,
``normals``) to reproduce a run exactly, e.g. against ``esh_kernels.jax``.

Math: ``docs/esh_math.md`` §3-5, written once in :mod:`esh_kernels.core` and
:mod:`esh_kernels.core.energy_sampling`. User guide: ``docs/energy_models.md``.
"""

import contextlib
import math

import torch

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
    "SampleResult",
    "JarzynskiResult",
    "Diagnostics",
]


def _check_x0(x0):
    if not isinstance(x0, torch.Tensor):
        raise ValueError(f"x0 must be a torch.Tensor, got {type(x0).__name__}.")
    if not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating-point tensor, got dtype {x0.dtype}.")
    return es.check_event_size(x0.shape)


def _check_x0_bounds(x0, bounds):
    if bounds is not None:  # one host sync before the loop
        es.check_inside_bounds(bool(((x0 >= bounds[0]) & (x0 <= bounds[1])).all()), bounds)


def _as_tensor(value, like):
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


@contextlib.contextmanager
def _frozen_parameters(energy_fn):
    """Turn off ``requires_grad`` of an ``nn.Module``'s parameters while sampling."""
    params = list(energy_fn.parameters()) if isinstance(energy_fn, torch.nn.Module) else []
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _value_and_grad(energy_fn, energy_args, shape, energy_scale, dtype):
    """``x_flat (batch, d) -> (scale * E(x), scale * dE/dx flattened)``; no graph kept."""
    batch = shape[0]

    def value_and_grad(x_flat):
        x = x_flat.detach().reshape(shape)
        if x.is_inference():  # e.g. x0 made under torch.inference_mode()
            x = x.clone()
        x.requires_grad_(True)
        with torch.enable_grad():
            e = energy_fn(x, *energy_args)
            es.check_energy_shape(e.shape, batch)
            (g,) = torch.autograd.grad(e.sum(), x, allow_unused=True)
        if g is None:  # the energy does not depend on x
            g = torch.zeros_like(x)
        return energy_scale * e.detach().to(dtype), energy_scale * g.reshape(x_flat.shape)

    return value_and_grad


def _run(energy_fn, energy_args, x0, u0, generator, uniforms, normals, step_size,
         energy_scale, refresh_rate, *, n_steps, bounds, reservoir, refresh, keep_trajectory,
         keep_diagnostics):
    """Shared loop of ``sample`` and ``jarzynski``."""
    shape = tuple(x0.shape)
    dtype, device = x0.dtype, x0.device
    batch = shape[0]
    d = math.prod(shape[1:])
    vg = _value_and_grad(energy_fn, energy_args, shape, energy_scale, dtype)

    x = x0.detach().reshape(batch, d)
    if u0 is None:
        z0 = torch.randn((batch, d), generator=generator, dtype=dtype, device=device)
    else:
        z0 = _as_tensor(u0, x0).reshape(batch, d)
    u = unit_vector(z0)
    energy, grad = vg(x)
    state = IntegratorState(x, u, torch.zeros_like(energy), energy, grad)
    energy0 = energy
    res = (x, energy, torch.full_like(energy, -math.inf)) if reservoir else None
    diverged = torch.zeros(batch, dtype=torch.bool, device=device)
    if uniforms is not None:
        uniforms = _as_tensor(uniforms, x0)
    if normals is not None:
        normals = _as_tensor(normals, x0).reshape(n_steps, batch, d)

    traj, old_times, new_times, diags = [], [], [], []
    for i in range(n_steps):
        log_u = z = None
        if reservoir:
            unif = (uniforms[i] if uniforms is not None else
                    torch.rand((2, batch), generator=generator, dtype=dtype, device=device))
            log_u = torch.log(unif)
        if refresh:
            z = (normals[i] if normals is not None else
                 torch.randn((batch, d), generator=generator, dtype=dtype, device=device))
        state, res, ok, (log_dt_old, log_dt_new) = es.energy_step(
            state, res, step_size, vg, d, bounds, log_u, z, refresh_rate)
        diverged = diverged | ~ok
        if keep_trajectory:
            traj.append(state.x)
            old_times.append(log_dt_old)
            new_times.append(log_dt_new)
        if keep_diagnostics:
            diags.append(es.step_diagnostics(state, energy0, d))

    extra = {}
    if keep_trajectory:
        extra["trajectory"] = torch.stack([x] + traj).reshape((n_steps + 1,) + shape)
        log_dt_old, log_dt_new = torch.stack(old_times), torch.stack(new_times)
        extra["log_time_weights"] = es.point_log_weights(torch, log_dt_old, log_dt_new,
                                                         torch.cat)
        step_times = torch.logcumsumexp(torch.logaddexp(log_dt_old, log_dt_new), dim=0)
        start = torch.full((1, batch), -math.inf, dtype=dtype, device=device)
        extra["log_times"] = torch.cat([start, step_times])
    if keep_diagnostics:
        extra["diagnostics"] = Diagnostics(*(torch.stack(v) for v in zip(*diags)))
    return es.reshaped_state(state, shape), res, diverged, extra


def _check_random_inputs(u0, uniforms, normals, x0, n_steps):
    es.check_random_shapes(x0.shape, n_steps, *(None if v is None else tuple(v.shape)
                                                 for v in (u0, uniforms, normals)))


def sample(
    energy_fn,
    x0,
    n_steps,
    step_size=0.1,
    *,
    generator=None,
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
        constant) for ``x`` of shape ``(batch, *event_shape)``, e.g. an ``nn.Module``.
        Chains must not interact (the gradient of the summed energy is used).
      x0: initial positions, ``(batch, *event_shape)``, floating point; ``d = prod(event)``
        must be at least 2. Sets the device and dtype of everything.
      n_steps: number of leapfrog steps (one gradient each, plus one at ``x0``).
      step_size: scaled-time step ``eps`` (each step moves every chain by exactly ``eps``
        in Euclidean distance, before reflection).
      generator: optional ``torch.Generator`` (on ``x0.device``) for all random draws.
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
      energy_args: extra arguments passed to ``energy_fn``.
      uniforms: optional pre-drawn ``Uniform(0, 1)`` of shape ``(n_steps, 2, batch)`` for
        the reservoir (offer of the old point, then of the new point, at each step).
      normals: optional pre-drawn standard normals ``(n_steps, batch, *event_shape)`` for
        the velocity refresh.

    Returns:
      :class:`~esh_kernels.core.energy_sampling.SampleResult` (tensors on ``x0.device``, none
      requiring grad).
    """
    _check_x0(x0)
    n_steps, bounds, refresh = es.check_run_args(n_steps, step_size, energy_scale, bounds,
                                                 refresh_rate)
    _check_x0_bounds(x0, bounds)
    _check_random_inputs(u0, uniforms, normals, x0, n_steps)
    with torch.inference_mode(False), torch.no_grad(), _frozen_parameters(energy_fn):
        return es.sample_result(*_run(
            energy_fn, tuple(energy_args), x0, u0, generator, uniforms, normals, step_size,
            energy_scale, refresh_rate, n_steps=n_steps, bounds=bounds, reservoir=True,
            refresh=refresh, keep_trajectory=bool(keep_trajectory),
            keep_diagnostics=bool(keep_diagnostics),
        ))


def jarzynski(
    energy_fn,
    x0,
    n_steps,
    step_size=0.1,
    *,
    generator=None,
    base_log_prob=None,
    u0=None,
    energy_scale=1.0,
    bounds=None,
    keep_trajectory=False,
    keep_diagnostics=True,
    energy_args=(),
    dtype=torch.float32,
    device=None,
):
    """Jarzynski / normalising-flow sampler (paper §2.3, Alg. 4) with an estimate of log Z.

    Particles start at ``x0 ~ q0`` with uniform unit velocities and ``r0 = 0`` and follow
    ``n_steps`` deterministic ESH leapfrog steps. The log importance weight of particle i
    is ``-log q0(x0_i) - E(x_T,i) - (d-1)(r_T,i - r_0)`` (exact phase-space volume change,
    ``docs/esh_math.md`` §5), so ``mean(w) ≈ Z = ∫ exp(-energy_scale * E)``.

    Args:
      energy_fn: as in :func:`sample`.
      x0: the initial particles ``(batch, *event_shape)`` drawn from the base ``q0``, or a
        shape (tuple or ``torch.Size``) to draw them here from the default base: the
        standard normal (``E0 = |x|²/2``, ``Z0 = (2π)^(d/2)``), or the uniform law on the
        box when ``bounds`` is given.
      n_steps, step_size, energy_scale, bounds, keep_trajectory, keep_diagnostics,
      energy_args, generator: as in :func:`sample` (no velocity refresh: the flow must
        stay deterministic).
      base_log_prob: ``(batch,)`` normalised log density of ``x0`` under its base.
        Default: the default base above evaluated at ``x0``. Pass it whenever ``x0`` comes
        from another distribution, or the estimate is wrong.
      u0: optional initial directions (normalised per chain).
      dtype, device: of ``x0`` when it is drawn here.

    Returns:
      :class:`~esh_kernels.core.energy_sampling.JarzynskiResult` with ``log_z``, ``log_z_se``
      (delta-method standard error) and ``ess`` (Kish), as 0-d tensors.
    """
    n_steps, bounds, _ = es.check_run_args(n_steps, step_size, energy_scale, bounds)
    if isinstance(x0, (tuple, list, torch.Size)):
        shape = tuple(int(s) for s in x0)
        es.check_event_size(shape)
        if bounds is None:
            x0 = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        else:
            x0 = torch.rand(shape, generator=generator, dtype=dtype, device=device)
            x0 = bounds[0] + (bounds[1] - bounds[0]) * x0
    batch, d = _check_x0(x0)
    _check_x0_bounds(x0, bounds)
    _check_random_inputs(u0, None, None, x0, n_steps)
    with torch.inference_mode(False), torch.no_grad(), _frozen_parameters(energy_fn):
        final, _, diverged, extra = _run(
            energy_fn, tuple(energy_args), x0, u0, generator, None, None, step_size,
            energy_scale, 0.0, n_steps=n_steps, bounds=bounds, reservoir=False,
            refresh=False, keep_trajectory=bool(keep_trajectory),
            keep_diagnostics=bool(keep_diagnostics),
        )
        if base_log_prob is None:
            base_log_prob = es.default_base_log_prob(x0.detach().reshape(batch, d), bounds)
        else:
            es.check_random_input("base_log_prob", tuple(base_log_prob.shape), (batch,))
            base_log_prob = _as_tensor(base_log_prob, x0).detach()
        return es.jarzynski_result(final, diverged, extra, base_log_prob)


# ---------------------------------------------------------------------------------------
# Persistent chains for contrastive-divergence training


class ReplayBuffer:
    """A buffer of persistent chains updated by ESH (persistent contrastive divergence).

    Example::

        buf = ReplayBuffer.uniform(10_000, (3, 32, 32), device="cuda", bounds=True)
        for x_data in loader:
            x_neg = buf.sample(net, 64, n_steps=100)
            loss = net(x_data).mean() - net(x_neg).mean()
            ...

    Args:
      buffer: initial chains ``(buffer_size, *event_shape)``; sets device and dtype.
      reinit_fraction: probability that a picked chain restarts from noise.
      noise_fn: ``noise_fn(n) -> (n, *event_shape)`` tensor; default uniform on ``bounds``
        (or ``[-1, 1]``).
      step_size, energy_scale, bounds, refresh_rate: defaults for :meth:`sample`.
      use_reservoir: return and store the reservoir draws (True, the paper's choice) or
        the final states.

    These arguments, checked, are kept in ``settings``
    (:class:`~esh_kernels.core.energy_sampling.ReplaySettings`); ``buffer`` holds the chains
    and ``last_result`` the last :meth:`sample`'s full result.
      generator: optional ``torch.Generator`` for the picks, the noise and the sampler.
    """

    def __init__(self, buffer, *, reinit_fraction=0.05, noise_fn=None, step_size=0.1,
                 energy_scale=1.0, bounds=None, refresh_rate=0.0, use_reservoir=True,
                 generator=None):
        _check_x0(buffer)
        self.buffer = buffer.detach().clone()
        self.settings = es.replay_settings(reinit_fraction, noise_fn, step_size, energy_scale,
                                           bounds, refresh_rate, use_reservoir)
        self.generator = generator
        self.last_result = None

    @classmethod
    def uniform(cls, buffer_size, event_shape, *, dtype=torch.float32, device=None,
                bounds=None, generator=None, **kw):
        """A buffer initialised from uniform noise on ``bounds`` (default ``[-1, 1]``)."""
        low, high = es.check_bounds(bounds) or (-1.0, 1.0)
        shape = (int(buffer_size),) + tuple(event_shape)
        buffer = low + (high - low) * torch.rand(shape, generator=generator, dtype=dtype,
                                                 device=device)
        return cls(buffer, bounds=bounds, generator=generator, **kw)

    def __len__(self):
        return self.buffer.shape[0]

    def _noise(self, n):
        if self.settings.noise_fn is not None:
            return _as_tensor(self.settings.noise_fn(n), self.buffer)
        low, high = self.settings.bounds or (-1.0, 1.0)
        shape = (n,) + tuple(self.buffer.shape[1:])
        u = torch.rand(shape, generator=self.generator, dtype=self.buffer.dtype,
                       device=self.buffer.device)
        return low + (high - low) * u

    def sample(self, energy_fn, batch_size, n_steps, *, step_size=None, energy_args=()):
        """Pick ``batch_size`` distinct chains, restart each from noise with probability
        ``reinit_fraction``, run ``n_steps`` ESH steps, write them back and return the
        samples ``(batch_size, *event_shape)`` (reservoir draws or final states). The full
        :class:`~esh_kernels.core.energy_sampling.SampleResult` is kept in ``last_result``."""
        s = self.settings
        n = self.buffer.shape[0]
        if not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}.")
        device = self.buffer.device
        idx = torch.randperm(n, generator=self.generator, device=device)[:batch_size]
        x0 = self.buffer[idx]
        if s.reinit_fraction > 0:
            fresh = torch.rand(batch_size, generator=self.generator, device=device,
                               dtype=self.buffer.dtype) < s.reinit_fraction
            x0 = torch.where(fresh.reshape((-1,) + (1,) * (x0.dim() - 1)),
                             self._noise(batch_size), x0)
        result = sample(energy_fn, x0, n_steps,
                        s.step_size if step_size is None else step_size,
                        generator=self.generator, energy_scale=s.energy_scale,
                        bounds=s.bounds, refresh_rate=s.refresh_rate,
                        keep_diagnostics=False, energy_args=energy_args)
        out = result.samples if s.use_reservoir else result.state.x
        self.buffer[idx] = out
        self.last_result = result
        return out
