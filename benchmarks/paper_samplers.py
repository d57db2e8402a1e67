"""Samplers of the paper suite (``benchmarks/run_paper.py``), run the paper's way: many
independent chains from the paper's initial states, no burn-in discarded, every gradient
evaluation counted (esh_math.md §9).

Every runner returns a :class:`Trace`:

* ``states (C, T, d)`` with ``grads (C, T)``: the states each chain held and the
  cumulative number of gradient evaluations at which it took each of them (``grads[:, 0]
  = 0`` is the initial state). The MMD at a budget of ``g`` gradients uses each chain's
  last state with ``grads <= g`` (``paper_metrics.states_at_budgets``). For the paper's
  ESH-leap the states are ergodic draws (§9.3): a time-weighted pick from the trajectory
  so far.
* ``ess_chains (C, N, d)`` and ``ess_grads (C,)``: the sequence the paper's ESS is computed
  on and the gradients it cost (ESS per gradient = ESS / ess_grads). For the fixed-step
  baselines and ESH-leap this is every state of the run (for ESH-leap the unweighted
  grid points, as in the paper); for the adaptive samplers it is every draw, warmup
  included, because the paper's protocol has no burn-in.

Samplers (step sizes as in the paper, §9.2):

==================  =========================================================================
``esh_leap``        the paper's ESH: scaled leapfrog, eps = 0.1, no velocity refresh
                    (``esh_kernels.jax.sample``), ergodic draws for the MMD
``esh``             ``esh_kernels.numpyro.ESH`` defaults, its warmup counted
``adjusted_esh``    ``esh_kernels.numpyro.AdjustedESH`` defaults, its warmup counted
``tuned_hmc``       ``esh_kernels.numpyro.TunedHMC`` defaults, its warmup counted
``nuts``            ``numpyro.infer.NUTS`` defaults, its warmup counted
``mala_0.1``        MALA: one leapfrog step eps = 0.1 with fresh momentum, Metropolis test
``mala_0.01``       MALA with eps = 0.01
``ula_0.1``         the same step as MALA 0.1 without the Metropolis test
``hmc_k5``          HMC with 5 leapfrog steps of eps = 0.01 per proposal, Metropolis test
``bj_mclmc``        BlackJAX MCLMC (isokinetic McLachlan, 2 gradients per step), tuned by
                    ``mclmc_find_L_and_step_size`` (tuning gradients counted; before its
                    end the chains hold their initial states)
==================  =========================================================================
"""

import math
import time
import warnings
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random

from esh_kernels.core import IntegratorState, euclidean_leapfrog
from esh_kernels.core.metropolis import log_accept_prob

SAMPLER_ORDER = ("esh_leap", "esh", "adjusted_esh", "tuned_hmc", "nuts", "bj_mclmc",
                 "mala_0.1", "mala_0.01", "ula_0.1", "hmc_k5")
SAMPLER_LABELS = {
    "esh_leap": "ESH-leap (paper, eps 0.1)",
    "esh": "esh_kernels ESH",
    "adjusted_esh": "esh_kernels AdjustedESH",
    "tuned_hmc": "esh_kernels TunedHMC",
    "nuts": "NumPyro NUTS",
    "bj_mclmc": "BlackJAX MCLMC",
    "mala_0.1": "MALA 0.1",
    "mala_0.01": "MALA 0.01",
    "ula_0.1": "ULA 0.1",
    "hmc_k5": "HMC k=5, eps 0.01",
}
ESH_LEAP_STEP = 0.1
LANGEVIN = {"mala_0.1": (0.1, 1, True), "mala_0.01": (0.01, 1, True), "ula_0.1": (0.1, 1, False),
            "hmc_k5": (0.01, 5, True)}  # name -> (step size, leapfrog steps, Metropolis test)


@dataclass
class Trace:
    states: np.ndarray
    grads: np.ndarray
    ess_chains: np.ndarray
    ess_grads: np.ndarray
    seconds: float
    info: dict = field(default_factory=dict)


def _value_and_grad(energy):
    return jax.vmap(jax.value_and_grad(energy))


# -- fixed-step baselines ---------------------------------------------------------------


def run_langevin(target, x0, budget, key, step_size, n_leapfrog, metropolis):
    """MALA / ULA / HMC with fresh ``N(0, I)`` momentum per proposal (esh_math.md §9.2);
    ``n_leapfrog`` gradients per proposal (the gradient at the current state is cached)."""
    vg = _value_and_grad(target.energy)
    n_prop = budget // n_leapfrog
    C = x0.shape[0]

    @jax.jit
    def run(x0, key):
        e0, g0 = vg(x0)
        state = IntegratorState(x0, jnp.zeros_like(x0), jnp.zeros(C), e0, g0)

        def body(carry, k):
            state, n_acc = carry
            k_p, k_u = random.split(k)
            p0 = random.normal(k_p, x0.shape, x0.dtype)
            prop = IntegratorState(state.x, p0, state.r, state.energy, state.grad)
            prop = lax.fori_loop(0, n_leapfrog, lambda _, s: euclidean_leapfrog(s, step_size, vg), prop)
            if metropolis:
                dH = prop.energy - state.energy + 0.5 * (jnp.sum(prop.u**2, -1) - jnp.sum(p0**2, -1))
                dH = jnp.where(jnp.isfinite(dH), dH, jnp.inf)
                accept = jnp.log(random.uniform(k_u, (C,))) < log_accept_prob(dH)
            else:
                accept = jnp.all(jnp.isfinite(prop.x), -1) & jnp.isfinite(prop.energy)
            new = jax.tree.map(lambda a, b: jnp.where(accept.reshape((C,) + (1,) * (a.ndim - 1)), a, b),
                               prop, state)
            return (new, n_acc + accept), new.x

        (_, n_acc), xs = lax.scan(body, (state, jnp.zeros(C)), random.split(key, n_prop))
        return jnp.concatenate([x0[None], xs]), n_acc / n_prop

    t0 = time.perf_counter()
    xs, acc = jax.block_until_ready(run(x0, key))
    seconds = time.perf_counter() - t0  # includes compilation, as for every sampler here
    states = np.swapaxes(np.asarray(xs), 0, 1)  # (C, n_prop + 1, d)
    grads = np.broadcast_to(n_leapfrog * np.arange(n_prop + 1), states.shape[:2])
    return Trace(states, grads, states, np.full(C, float(n_leapfrog * n_prop)), seconds,
                 {"accept_mean": float(np.mean(acc)), "step_size": step_size,
                  "leapfrog_steps": n_leapfrog})


# -- the paper's ESH leapfrog with ergodic draws ----------------------------------------


def ergodic_draws(trajectory, log_weights, budgets, rng):
    """One time-weighted draw per chain from the trajectory up to each budget (Alg. 2,
    esh_math.md §4.2): point ``k`` (after ``k`` gradient steps) has the weight of the
    physical time spent there, ``dt_new[k-1] + dt_old[k]`` (``log_weights``, from
    ``esh_kernels.jax.sample(keep_trajectory=True)``). After ``g`` gradients, points
    ``0..g`` are available with these weights: the leaving half-step of point ``g`` uses
    the gradient at ``x_g``, which is already paid for.

    ``trajectory (n+1, C, d)``, ``log_weights (n+1, C)``; returns ``(B, C, d)``.
    """
    lw = np.asarray(log_weights, np.float64)
    n1, C = lw.shape
    out = []
    for g in budgets:
        g = min(int(g), n1 - 1)
        head = lw[: g + 1]
        cum = np.cumsum(np.exp(head - head.max(0)), 0)  # per-chain scaling: same draw
        u = rng.random(C) * cum[-1]
        idx = np.array([np.searchsorted(cum[:, c], u[c], side="right") for c in range(C)])
        out.append(trajectory[np.minimum(idx, g), np.arange(C)])
    return np.stack(out)


def run_esh_leap(target, x0, budget, key, budgets, rng):
    """The paper's ESH-leap (eps = 0.1, deterministic dynamics, one gradient per step)."""
    from esh_kernels.jax import sample

    def energy(x):
        return jax.vmap(target.energy)(x)

    kw = dict(n_steps=budget, step_size=ESH_LEAP_STEP, key=key, keep_trajectory=True, keep_diagnostics=False)
    t0 = time.perf_counter()
    res = jax.block_until_ready(sample(energy, x0, **kw))
    seconds = time.perf_counter() - t0  # includes compilation
    traj = np.asarray(res.trajectory)  # (n+1, C, d)
    draws = ergodic_draws(traj, np.asarray(res.log_time_weights), budgets, rng)  # (B, C, d)
    C = x0.shape[0]
    states = np.swapaxes(draws, 0, 1)
    grads = np.broadcast_to(np.asarray(budgets, dtype=np.int64), (C, len(budgets)))
    grid = np.swapaxes(traj, 0, 1)
    return Trace(states, grads, grid, np.full(C, float(budget)), seconds,
                 {"step_size": ESH_LEAP_STEP, "diverged_chains": int(np.sum(np.asarray(res.diverged)))})


# -- NumPyro kernels (ours and NUTS), warmup counted ------------------------------------


def _numpyro_kernel(name, model):
    if name == "nuts":
        from numpyro.infer import NUTS

        return NUTS(model), "num_steps"
    import esh_kernels.numpyro as ekn

    cls = {"esh": ekn.ESH, "adjusted_esh": ekn.AdjustedESH, "tuned_hmc": ekn.TunedHMC}[name]
    return cls(model), "n_steps"


def run_numpyro(name, target, x0, budget, key, num_warmup, max_draws):
    """A NumPyro kernel with ``chain_method="vectorized"`` from the paper's initial
    states: ``num_warmup`` adaptation draws (collected: no burn-in is discarded), then
    sampling until every chain has used ``budget`` gradients (or ``max_draws`` draws).
    Gradients per draw come from the kernel's extra field (``num_steps`` for NUTS,
    ``n_steps`` for esh_kernels)."""
    from numpyro.infer import MCMC

    from paper_targets import numpyro_model

    kernel, field = _numpyro_kernel(name, numpyro_model(target))
    C = x0.shape[0]
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=1, num_chains=C,
                chain_method="vectorized", progress_bar=False)
    k_warm, k_samp = random.split(key)
    xs, gs = [], []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.warmup(k_warm, init_params={"x": jnp.asarray(x0)}, extra_fields=(field,),
                    collect_warmup=True)
        xs.append(np.asarray(mcmc.get_samples(group_by_chain=True)["x"]))
        gs.append(np.asarray(mcmc.get_extra_fields(group_by_chain=True)[field], np.float64))
        used = gs[0].sum(1)
        tail = gs[0][:, num_warmup // 2:] if num_warmup >= 2 else gs[0]
        rate = tail.mean(1)  # gradients per draw of each chain (ESH in 2-D: below 1)
        draws = 0
        for k in random.split(k_samp, 4):  # at most four top-ups
            short = np.maximum(budget - used, 0.0)
            if not np.any(short > 0) or draws >= max_draws:
                break
            # enough draws for the chain that needs the most of them, with 30% to spare,
            # but at most 4x the median chain's need: ESH's cost per draw can differ
            # 100-fold between chains, and a vectorized run waits for the slowest chain
            need_c = short / np.maximum(rate, 1e-2)
            need = min(np.max(need_c), 4 * np.median(need_c[short > 0]))
            n = int(min(max_draws - draws, math.ceil(1.3 * need) + 5))
            mcmc.num_samples = n
            mcmc.run(k, extra_fields=(field,))
            xs.append(np.asarray(mcmc.get_samples(group_by_chain=True)["x"]))
            g = np.asarray(mcmc.get_extra_fields(group_by_chain=True)[field], np.float64)
            gs.append(g)
            used = used + g.sum(1)
            rate = g.mean(1)
            draws += n
            mcmc.post_warmup_state = mcmc.last_state
    seconds = time.perf_counter() - t0  # includes compilation
    chain = np.concatenate(xs, axis=1)  # (C, W + S, d)
    grads = np.cumsum(np.concatenate(gs, axis=1), axis=1)
    states = np.concatenate([np.asarray(x0)[:, None], chain], axis=1)
    grads = np.concatenate([np.zeros((C, 1)), grads], axis=1)
    info = {"num_warmup": num_warmup, "grads_warmup_mean": float(gs[0].sum(1).mean()),
            "draws_after_warmup": draws, "grads_per_draw_after_warmup": float(np.mean(rate)),
            "reached_budget": bool(np.all(grads[:, -1] >= budget)),
            "chains_short_of_budget": int(np.sum(grads[:, -1] < budget))}
    return Trace(states, grads, chain, grads[:, -1].copy(), seconds, info)


# -- BlackJAX MCLMC ----------------------------------------------------------------------


def run_bj_mclmc(target, x0, budget, key):
    """BlackJAX MCLMC (isokinetic McLachlan, 2 gradients per step), each chain tuned by
    ``mclmc_find_L_and_step_size`` (defaults, diagonal preconditioning) with
    ``num_steps`` = half the step budget, which spends about 17% of the gradient budget on
    tuning (1666 of 10000); the rest is sampled. Before the tuning ends the chains hold
    their initial states (the tuner's intermediate states are not returned by BlackJAX)."""
    import blackjax
    from blackjax.mcmc import mclmc
    from blackjax.mcmc.integrators import isokinetic_mclachlan

    grads_per_step = 2
    logdensity = lambda x: -target.energy(x)  # noqa: E731
    kernel = mclmc.build_kernel(integrator=isokinetic_mclachlan)
    C = x0.shape[0]
    k_tune, k_samp = random.split(key)
    n_tune_box = []

    def tune_one(x, k):
        k1, k2 = random.split(k)
        st = mclmc.init(x, logdensity, k1)
        st, params, n_tune = blackjax.mclmc_find_L_and_step_size(
            mclmc_kernel=kernel, num_steps=max(budget // (2 * grads_per_step), 10), state=st,
            rng_key=k2, logdensity_fn=logdensity, diagonal_preconditioning=True)
        n_tune_box.append(n_tune)
        return st, params

    t0 = time.perf_counter()
    states, params = jax.block_until_ready(jax.jit(jax.vmap(tune_one))(jnp.asarray(x0), random.split(k_tune, C)))
    n_tune = int(n_tune_box[0])
    n_samp = max((budget - grads_per_step * n_tune) // grads_per_step, 1)

    def sample_one(st, p, k):
        def body(s, kk):
            s, info = kernel(kk, s, logdensity, p.inverse_mass_matrix, p.L, p.step_size)
            return s, (s.position, info.nonans)

        return lax.scan(body, st, random.split(k, n_samp))

    _, (pos, nonans) = jax.block_until_ready(
        jax.jit(jax.vmap(sample_one))(states, params, random.split(k_samp, C)))
    seconds = time.perf_counter() - t0  # includes compilation
    pos = np.asarray(pos)
    states_out = np.concatenate([np.asarray(x0)[:, None], pos], axis=1)
    g = grads_per_step * (n_tune + np.arange(1, n_samp + 1))
    grads = np.broadcast_to(np.concatenate([[0], g]), states_out.shape[:2])
    return Trace(states_out, grads, pos, np.full(C, float(grads_per_step * (n_tune + n_samp))), seconds,
                 {"tuning_grads": grads_per_step * n_tune, "step_size_mean": float(np.mean(params.step_size)),
                  "L_mean": float(np.mean(params.L)), "nan_steps": int(np.sum(~np.asarray(nonans)))})


def run_sampler(name, target, x0, budget, key, budgets, rng, num_warmup, max_draws):
    """Dispatch by sampler name (see :data:`SAMPLER_ORDER`)."""
    if name == "esh_leap":
        return run_esh_leap(target, x0, budget, key, budgets, rng)
    if name in LANGEVIN:
        return run_langevin(target, x0, budget, key, *LANGEVIN[name])
    if name == "bj_mclmc":
        return run_bj_mclmc(target, x0, budget, key)
    return run_numpyro(name, target, x0, budget, key, num_warmup, max_draws)
