"""``one_comp_mm_elim_abs.stan``: one-compartment pharmacokinetics, first-order absorption
and Michaelis-Menten elimination.

Concentration ``C(t)`` with ``C(t0) = 0`` (Stan's transformed data ``C0 = {0.0}``) and
``dC/dt = dose(t) - (V_m / V) C / (K_m + C)``, ``dose(t) = exp(-k_a t) D k_a / V`` for
``t > 0`` and ``0`` otherwise (as in the Stan function), with data ``D`` and ``V``
(Stan's ``x_r``), read at ``times``. Priors ``k_a, K_m, V_m, sigma ~ cauchy(0, 1)`` on
``(0, inf)``: ``HalfCauchy(1)`` (normalised; the factor 2 is a constant). Likelihood
``C_hat[n] ~ lognormal(log C[n], sigma)``.

ODE solver. Stan calls ``integrate_ode_bdf`` at its defaults (rtol = atol = 1e-6). We
solve with an explicit adaptive Dormand-Prince 4(5) method at the same tolerances: the
problem is not stiff on the posterior region (the elimination's Jacobian is
``-(V_m/V) K_m / (K_m + C)^2``, at most ``V_m / (V K_m)`` in size, i.e. of order 1/day for
the posterior's ``K_m`` and ``V_m``, over 10 days), so an implicit method buys nothing; for
very small ``K_m`` (``V_m / (V K_m)`` large) the stiffness lasts only while ``C`` is near 0
and costs a few extra steps. The ``t > 0`` switch of the dose is kept: it only changes the
right-hand side at the single point ``t = 0``, which the error control absorbs.

* NumPyro: ``diffrax`` (``Dopri5``, ``PIDController(rtol=1e-6, atol=1e-6)``,
  ``SaveAt(ts=times)``, ``max_steps=4096`` in all, ``throw=False``), gradients by
  diffrax's default ``RecursiveCheckpointAdjoint``. Chosen over
  ``jax.experimental.ode.odeint`` (still shipped by jax 0.10, used by NumPyro's
  Lotka-Volterra example) for the reasons given in ``lotka_volterra.py``: maintained,
  exact reverse-mode gradient of the computed solution, ``vmap``-able, and a failed solve
  gives ``inf`` states (non-finite potential: a divergence) instead of a silent inaccurate
  answer.
* Pyro: ``torchdiffeq.odeint(..., method="dopri5", rtol=1e-6, atol=1e-6)``, at most
  10000 steps between outputs; a failed solve gives ``nan`` states (a ``nan`` potential,
  which Pyro's HMC/NUTS count as divergent). Leading batch dimensions on the parameters
  are accepted (chains in a plate).
"""

import numpy as np

RTOL = 1e-6
ATOL = 1e-6
MAX_STEPS = 4096  # diffrax: steps over the whole interval
MAX_STEPS_PER_OUTPUT = 10000  # torchdiffeq: steps between consecutive output times


def numpyro_model(data):
    import diffrax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    t0 = float(data["t0"])
    D = float(data["D"])
    V = float(data["V"])
    times = jnp.asarray(data["times"], dtype=jnp.float64)
    C_hat = jnp.asarray(data["C_hat"], dtype=jnp.float64)
    C0 = jnp.zeros(1, dtype=jnp.float64)  # Stan's transformed data

    def dC_dt(t, C, args):
        k_a, K_m, V_m = args
        dose = jnp.where(t > 0, jnp.exp(-k_a * t) * D * k_a / V, 0.0)
        elim = (V_m / V) * C / (K_m + C)
        return dose - elim

    term = diffrax.ODETerm(dC_dt)
    solver = diffrax.Dopri5()
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL)
    saveat = diffrax.SaveAt(ts=times)

    def solve(k_a, K_m, V_m):
        sol = diffrax.diffeqsolve(term, solver, t0=t0, t1=times[-1], dt0=None, y0=C0,
                                  args=(k_a, K_m, V_m), saveat=saveat,
                                  stepsize_controller=controller, max_steps=MAX_STEPS,
                                  throw=False)
        return sol.ys[:, 0]  # (N_t,); inf where the solve failed

    def model():
        k_a = numpyro.sample("k_a", dist.HalfCauchy(1.0))
        K_m = numpyro.sample("K_m", dist.HalfCauchy(1.0))
        V_m = numpyro.sample("V_m", dist.HalfCauchy(1.0))
        sigma = numpyro.sample("sigma", dist.HalfCauchy(1.0))
        C = solve(k_a, K_m, V_m)
        # a failed solve makes the location non-finite: without the eager argument check
        # the log density is then non-finite (a divergence) instead of an exception
        with numpyro.validation_enabled(False):
            numpyro.sample("C_hat", dist.LogNormal(jnp.log(C), sigma).to_event(1), obs=C_hat)

    return model


def pyro_model(data):
    import pyro
    import pyro.distributions as dist
    import torch
    from torchdiffeq import odeint

    f64 = torch.float64
    t0 = float(data["t0"])
    D = float(data["D"])
    V = float(data["V"])
    times = torch.as_tensor(np.asarray(data["times"], dtype=np.float64))
    t_grid = torch.cat([torch.tensor([t0], dtype=f64), times])  # torchdiffeq wants t0 first
    C_hat = torch.as_tensor(np.asarray(data["C_hat"], dtype=np.float64))
    one = torch.tensor(1.0, dtype=f64)

    def dC_dt(k_a, K_m, V_m):
        def f(t, C):
            dose = torch.where(t > 0, torch.exp(-k_a * t) * D * k_a / V, torch.zeros_like(k_a))
            elim = (V_m / V) * C / (K_m + C)
            return dose - elim

        return f

    def solve(k_a, K_m, V_m):
        C0 = torch.zeros_like(k_a)  # Stan's transformed data C0 = {0}, batched like the parameters
        try:
            Cs = odeint(dC_dt(k_a, K_m, V_m), C0, t_grid, rtol=RTOL, atol=ATOL, method="dopri5",
                        options={"max_num_steps": MAX_STEPS_PER_OUTPUT})
        except AssertionError:  # too many steps or step-size underflow
            Cs = torch.full((t_grid.shape[0],) + tuple(C0.shape), float("nan"), dtype=f64)
        return Cs[1:].movedim(0, -1)  # (..., N_t)

    def model():
        k_a = pyro.sample("k_a", dist.HalfCauchy(one))
        K_m = pyro.sample("K_m", dist.HalfCauchy(one))
        V_m = pyro.sample("V_m", dist.HalfCauchy(one))
        sigma = pyro.sample("sigma", dist.HalfCauchy(one))
        C = solve(k_a, K_m, V_m)
        with pyro.validation_enabled(False):  # a failed solve: non-finite density, no exception
            pyro.sample("C_hat", dist.LogNormal(torch.log(C), sigma.unsqueeze(-1)).to_event(1),
                        obs=C_hat)

    return model
