"""``lotka_volterra.stan``: Lotka-Volterra predator-prey ODE fitted to the Hudson's Bay
lynx-hare series.

State ``z = (u, v)`` (prey, predator), ``du/dt = (alpha - beta v) u``,
``dv/dt = (-gamma + delta u) v`` with ``theta = (alpha, beta, gamma, delta) > 0``, solved
from ``z(0) = z_init`` and read at the measurement times ``ts``. Priors:
``theta[1], theta[3] ~ normal(1, 0.5)``, ``theta[2], theta[4] ~ normal(0.05, 0.05)`` (on
``theta > 0``: a normal truncated at 0, whose normaliser is a constant, kept here),
``sigma ~ lognormal(-1, 1)``, ``z_init ~ lognormal(log 10, 1)``. Likelihood:
``y_init[k] ~ lognormal(log z_init[k], sigma[k])`` and
``y[:, k] ~ lognormal(log z[:, k], sigma[k])``.

ODE solver. Stan calls ``integrate_ode_rk45`` (Dormand-Prince 4(5), adaptive) with
rtol 1e-5, atol 1e-3 and at most 500 steps between outputs. We use the same method with
tighter tolerances, rtol = atol = 1e-6, on both sides: the solution error is then far
below the posterior's spread (the states are O(1..100) there), and the NumPyro and Pyro
potentials agree to ~1e-6 relative on posterior draws (less where a population falls far
below ``atol``, which happens only far out in the prior's tails).

* NumPyro: ``diffrax`` (``Dopri5``, ``PIDController(rtol=1e-6, atol=1e-6)``,
  ``SaveAt(ts=ts)``, ``max_steps=4096`` in all, ``throw=False``), gradients by diffrax's
  default ``RecursiveCheckpointAdjoint`` (reverse mode through the solver's own steps, so
  the gradient is the exact derivative of the computed solution). Why not
  ``jax.experimental.ode.odeint``, which NumPyro's own Lotka-Volterra example
  (``examples/ode.py``) uses and which jax 0.10 still ships: it lives in
  ``jax.experimental``, it has no failure signal (at ``mxstep`` its loop just stops and the
  output is interpolated from where it stopped, silently inaccurate), and its gradient
  comes from a separate backward adjoint solve (``custom_vjp``), so it is not the exact
  derivative of the forward value. diffrax is maintained (P. Kidger, JAX
  ecosystem), differentiable, works under ``vmap`` (vectorized chains) and with
  ``throw=False`` a failed solve yields ``inf`` states, so the potential is non-finite and
  the sampler treats the step as divergent instead of raising.
* Pyro: ``torchdiffeq.odeint(..., method="dopri5", rtol=1e-6, atol=1e-6)`` (autograd
  through the steps), at most 10000 steps between outputs; a failed solve (too many steps
  or step-size underflow, which torchdiffeq raises as ``AssertionError``) gives ``nan``
  states, hence a ``nan`` potential, which Pyro's HMC/NUTS count as divergent. The model
  accepts leading batch dimensions on the parameters (chains in a plate).
"""

import numpy as np

RTOL = 1e-6
ATOL = 1e-6
MAX_STEPS = 4096  # diffrax: steps over the whole interval
MAX_STEPS_PER_OUTPUT = 10000  # torchdiffeq: steps between consecutive output times

THETA_LOC = (1.0, 0.05, 1.0, 0.05)
THETA_SCALE = (0.5, 0.05, 0.5, 0.05)


def numpyro_model(data):
    import diffrax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    ts = jnp.asarray(data["ts"], dtype=jnp.float64)
    y_init = jnp.asarray(data["y_init"], dtype=jnp.float64)
    y = jnp.asarray(data["y"], dtype=jnp.float64)
    loc = jnp.asarray(THETA_LOC, dtype=jnp.float64)
    scale = jnp.asarray(THETA_SCALE, dtype=jnp.float64)

    def dz_dt(t, z, theta):
        u, v = z[0], z[1]
        alpha, beta, gamma, delta = theta[0], theta[1], theta[2], theta[3]
        return jnp.stack([(alpha - beta * v) * u, (-gamma + delta * u) * v])

    term = diffrax.ODETerm(dz_dt)
    solver = diffrax.Dopri5()
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL)
    saveat = diffrax.SaveAt(ts=ts)

    def solve(z_init, theta):
        sol = diffrax.diffeqsolve(term, solver, t0=0.0, t1=ts[-1], dt0=None, y0=z_init,
                                  args=theta, saveat=saveat, stepsize_controller=controller,
                                  max_steps=MAX_STEPS, throw=False)
        return sol.ys  # (N, 2); inf where the solve failed

    def model():
        theta = numpyro.sample("theta", dist.TruncatedNormal(loc, scale, low=0.0).to_event(1))
        z_init = numpyro.sample("z_init", dist.LogNormal(jnp.log(10.0), 1.0).expand([2]).to_event(1))
        sigma = numpyro.sample("sigma", dist.LogNormal(-1.0, 1.0).expand([2]).to_event(1))
        z = solve(z_init, theta)
        numpyro.sample("y_init", dist.LogNormal(jnp.log(z_init), sigma).to_event(1), obs=y_init)
        # a failed solve makes the location non-finite: without the eager argument check
        # the log density is then non-finite (a divergence) instead of an exception
        with numpyro.validation_enabled(False):
            numpyro.sample("y", dist.LogNormal(jnp.log(z), sigma).to_event(2), obs=y)

    return model


def pyro_model(data):
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.distributions import constraints
    from torchdiffeq import odeint

    f64 = torch.float64
    ts = torch.as_tensor(np.asarray(data["ts"], dtype=np.float64))
    t_grid = torch.cat([torch.zeros(1, dtype=f64), ts])  # torchdiffeq wants t0 first
    y_init = torch.as_tensor(np.asarray(data["y_init"], dtype=np.float64))
    y = torch.as_tensor(np.asarray(data["y"], dtype=np.float64))
    loc = torch.tensor(THETA_LOC, dtype=f64)
    scale = torch.tensor(THETA_SCALE, dtype=f64)

    class PositiveNormal(dist.TorchDistribution):
        """Normal(loc, scale) truncated to (0, inf), normalised (NumPyro's
        ``TruncatedNormal(loc, scale, low=0)``; Pyro has none)."""

        arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
        support = constraints.positive
        has_rsample = True

        def __init__(self, loc, scale, validate_args=None):
            self.loc, self.scale = torch.broadcast_tensors(loc, scale)
            self._base = torch.distributions.Normal(self.loc, self.scale)
            super().__init__(self.loc.shape, validate_args=validate_args)

        def expand(self, batch_shape, _instance=None):
            batch_shape = torch.Size(batch_shape)
            return PositiveNormal(self.loc.expand(batch_shape), self.scale.expand(batch_shape))

        def log_prob(self, value):
            # P(X > 0) = Phi(loc / scale), through the standard normal's cdf
            mass = torch.special.ndtr(self.loc / self.scale)
            return self._base.log_prob(value) - torch.log(mass)

        def rsample(self, sample_shape=torch.Size()):
            shape = self._extended_shape(sample_shape)
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            lo = torch.special.ndtr(-self.loc / self.scale)
            q = lo + u * (1 - lo)
            return (self.loc + self.scale * torch.special.ndtri(q)).clamp_min(torch.finfo(f64).tiny)

    def dz_dt(theta):
        alpha, beta, gamma, delta = theta.unbind(-1)

        def f(t, z):
            u, v = z[..., 0], z[..., 1]
            return torch.stack([(alpha - beta * v) * u, (-gamma + delta * u) * v], dim=-1)

        return f

    def solve(z_init, theta):
        try:
            zs = odeint(dz_dt(theta), z_init, t_grid, rtol=RTOL, atol=ATOL, method="dopri5",
                        options={"max_num_steps": MAX_STEPS_PER_OUTPUT})
        except AssertionError:  # too many steps or step-size underflow
            zs = torch.full((t_grid.shape[0],) + tuple(z_init.shape), float("nan"), dtype=f64)
        return zs[1:].movedim(0, -2)  # (..., N, 2)

    def model():
        theta = pyro.sample("theta", PositiveNormal(loc, scale).to_event(1))
        z_init = pyro.sample("z_init", dist.LogNormal(torch.tensor(np.log(10.0), dtype=f64),
                                                      torch.tensor(1.0, dtype=f64)).expand([2]).to_event(1))
        sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(-1.0, dtype=f64),
                                                    torch.tensor(1.0, dtype=f64)).expand([2]).to_event(1))
        z = solve(z_init, theta)
        pyro.sample("y_init", dist.LogNormal(torch.log(z_init), sigma).to_event(1), obs=y_init)
        with pyro.validation_enabled(False):  # a failed solve: non-finite density, no exception
            pyro.sample("y", dist.LogNormal(torch.log(z), sigma.unsqueeze(-2)).to_event(2), obs=y)

    return model
