#!/usr/bin/env python
"""Ensemble mode (``esh_kernels.numpyro.run_ensemble``) against BlackJAX's LAPS (issue 17).

    python benchmarks/ensemble_vs_laps.py [--targets std_gauss ill_gauss] [--chains 2048]
        [--protocol b2|mmd] [--seeds 0] [--samplers laps ensemble] [--laps-steps1 2000]
        [--host-devices 4] [--x32] [--out results.json]

Results and commands of the runs: ``docs/benchmarks.md``, "Ensemble mode against LAPS"; the
summary table: ``docs/many_chains.md``.

Set-up shared by both samplers: the same number of chains, the same potential (NumPyro's
``initialize_model`` of our NumPyro model: ``benchmarks/targets.py``'s targets, or our model
of a posteriordb_dev posterior, ``benchmarks/pdb_models``), the same initial distribution
(uniform(-2, 2) on the flat unconstrained vector: ``init_to_uniform``), float64 (``--x32``:
float32, for a GPU run). Targets: ``std_gauss``, ``ill_gauss``, ``eight_schools``,
``hier_500`` ... (``targets.make_targets``) and any posteriordb_dev posterior by name
(``logmesquite_logvas``, ``kidscore_interaction_c``, ...).

What is measured
----------------
The bias of the ensemble itself, at each iteration ``t`` (as the LAPS paper measures it, its
Eqs. 12-13): with ``m_i(t)`` the mean of ``x_i^2`` over the chains,
``b2_i(t) = (m_i(t) - E[x_i^2])^2 / Var[x_i^2]``, ``b2_max = max_i b2_i`` and
``b2_avg = mean_i b2_i``. ``x`` is the flat unconstrained vector; the truth ``E[x_i^2]``,
``Var[x_i^2]`` is analytic for the Gaussians, ``benchmarks/reference/<target>.json`` for
eight schools and ``hier_500``, and for a posteriordb posterior the moments of its 10 000
reference draws mapped to the unconstrained scale (``targets.reference_unconstrained``:
NumPyro's ``unconstrain_fn``, flattened in ``ravel_pytree`` order). Gradients are counted per
chain, warm start, tuning and LAPS's unadjusted phase included.

* ``--protocol b2`` (default, 1024-2048 chains): gradients per chain to the first
  iteration with ``b2_max < 0.01`` and to the first after which it stays below. The noise
  floor of ``b2_max`` for ``C`` independent chains is about the max of ``d`` chi^2_1 / C
  variables (about 10/C for d = 100).
* ``--protocol mmd`` (256 chains): the LAPS paper's 256-chain comparison (its Table 2, as a
  public reading of the paper's text describes it; the authors' code, ``JakobRobnik/
  MicroCanonicalHMC`` ``ensemble/main.py``, finds the crossings of the max and mean bias at
  0.01) counts gradients per chain to ``b2_avg < 0.01``, since with 256 chains ``b2_max``
  cannot reach 0.01; that is reported. Besides, as issue 17 asked (no MMD measure was found in
  the paper or its code), the squared maximum mean
  discrepancy between the ensemble and the reference draws (``targets.mmd2``: unbiased,
  Gaussian kernel on coordinates standardised by the reference, median-heuristic bandwidth)
  at each recorded iteration, its value at fixed gradient budgets, and the gradients to the
  first iteration below the 95 % quantile of the same statistic for ``C`` independent
  reference draws (20 repetitions). Needs reference draws: the Gaussians (exact draws) and
  the posteriordb posteriors.

Each row also has split R-hat (NumPyro's ``split_gelman_rubin``, max over coordinates) and
ESS (``effective_sample_size``, min over coordinates of ``x`` and ``x^2``) over the draws of
the sampling phase (LAPS: its adjusted phase, whose first half still tunes the step size;
ensemble mode: its ``MCMC`` draws), and wall-clock (``time.perf_counter`` around the call,
results blocked on): total, of which compilation (JAX's own compile-time events), per chain
and per effective draw (total / min ESS). ``--host-devices N`` sets
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and lays the chains over all devices
(LAPS: its ``mesh``; ensemble mode: ``esh_kernels.numpyro.chain_keys``).

The samplers
------------
* LAPS: ``blackjax.adaptation.laps.laps`` (BlackJAX 1.7.1; API page
  https://blackjax-devs.github.io/blackjax/autoapi/blackjax/adaptation/laps/index.html, code
  https://blackjax-devs.github.io/blackjax/_modules/blackjax/adaptation/laps.html, set-up as
  in the sampling book, https://blackjax-devs.github.io/sampling-book/algorithms/laps.html,
  and ``run_bj_laps`` in ``benchmarks/run_numpyro.py``) with its defaults (``early_stop=True``,
  ``r_end=0.01``, ``steps_per_sample=15``, diagonal preconditioning, ``superchain_size=1``)
  and its bias hooks (``observables_for_bias = x^2``, ``contract`` = ``[b2_max, b2_avg]``, the
  form of ``laps.bias(model)``). ``num_steps1`` is a cap (``--laps-steps1``); phase 1 costs 1
  gradient per step, phase 2 ``15 x 2`` per draw (McLachlan; ``15 x 3``, Omelyan, above 200
  dimensions). The positions of the chains (phase 2; both phases for ``--protocol mmd``) are
  recorded with its ``all_chains_info`` hook. BlackJAX 1.7.1's phase-2 step-size search is corrected to keep the
  step whose acceptance met the target (``benchmarks/laps_setup.py`` says why; rows made
  before 2026-12-05 08:00 UTC ran without it).
* Ensemble mode: ``run_ensemble`` with its defaults except that sampling runs a fixed
  ``--draws`` draws in one chunk (no early stop), so the whole curve is seen; its warm start
  records no positions, so its curves start at the first sampling draw (its gradient counts
  are upper bounds).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from compile_clock import CompileClock  # noqa: E402

THRESHOLD = 0.01
MMD_BUDGETS = (25, 50, 100, 200, 400, 800, 1600)  # gradients per chain
MMD_REFERENCE_SIZE = 2048  # reference draws the ensemble is compared with
MMD_NULL_REPEATS = 20  # independent draws of C reference points for the noise level


def crossings(values, grads, threshold=THRESHOLD):
    """Gradients at the first entry of ``values`` below ``threshold``, and at the first
    entry after which it stays below (None where it never gets there)."""
    below = np.asarray(values) < threshold
    first = float(grads[int(np.argmax(below))]) if below.any() else None
    above = np.flatnonzero(~below)
    stays = None if (above.size and above[-1] == below.size - 1) else float(
        grads[0 if not above.size else above[-1] + 1])
    return first, stays


class Timer:
    def __init__(self, clock):
        self.clock = clock

    def __enter__(self):
        self.t0, self.p0 = time.time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.t1, self.p1 = time.time(), time.perf_counter()
        return False

    def result(self):
        wall = self.p1 - self.p0
        comp = min(self.clock.overlap(self.t0, self.t1), wall)
        return {"wall_s": wall, "compile_s": comp, "run_s": wall - comp}


# -- targets and their truth ------------------------------------------------------------


def load_target(name, targets):
    """``(target, truth, reference)``: ``truth = (E[x^2], Var[x^2])`` per unconstrained
    coordinate, ``reference`` unconstrained reference draws ``(n, d)`` or None."""
    from targets import posteriordb_target, second_moment_truth, truth_from_draws

    if name in targets:
        target = targets[name]
        truth = second_moment_truth(target)
        if truth is None:
            raise SystemExit(f"{name}: no second-moment truth (benchmarks/reference/{name}.json)")
        reference = None
        if target.true_sd is not None:  # exact draws of the (zero-mean, diagonal) Gaussians
            rng = np.random.default_rng(12345)
            reference = rng.standard_normal((10000, target.dim)) * np.asarray(target.true_sd)
        return target, truth[:2], reference
    target = posteriordb_target(name)
    reference = target.notes["reference_unconstrained"]
    return target, truth_from_draws(reference)[:2], reference


class MMD:
    """The squared MMD of an ensemble against ``MMD_REFERENCE_SIZE`` reference draws, and
    the noise level of that statistic for ``num_chains`` independent reference draws."""

    def __init__(self, reference, num_chains, seed=0):
        from targets import median_bandwidth, mmd2, mmd2_reference_term, standardizer

        rng = np.random.default_rng(seed)
        perm = rng.permutation(reference.shape[0])
        self.mean, self.sd = standardizer(reference)
        ref = self._std(reference[perm[:MMD_REFERENCE_SIZE]])
        rest = self._std(reference[perm[MMD_REFERENCE_SIZE:]])
        self.ref, self.bandwidth = ref, median_bandwidth(ref)
        self.ref_term = mmd2_reference_term(ref, self.bandwidth)
        self._mmd2 = mmd2
        null = [mmd2(rest[rng.choice(rest.shape[0], num_chains, replace=False)], ref,
                     self.bandwidth, self.ref_term) for _ in range(MMD_NULL_REPEATS)]
        self.null_q95 = float(np.quantile(null, 0.95))
        self.null_median = float(np.median(null))

    def _std(self, x):
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.sd

    def __call__(self, ensemble):
        return self._mmd2(self._std(ensemble), self.ref, self.bandwidth, self.ref_term)


def sampling_diagnostics(draws):
    """Split R-hat (max over coordinates of ``x`` and ``x^2``) and ESS (min over them) of
    ``draws`` ``(C, N, d)``, NumPyro's estimators."""
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    draws = np.asarray(draws, dtype=np.float64)
    both = np.concatenate([draws, draws**2], axis=-1)
    return {"rhat_max": float(np.max(split_gelman_rubin(both))) if draws.shape[1] >= 4 else None,
            "ess_min": float(np.min(effective_sample_size(both))),
            "ess_x_min": float(np.min(effective_sample_size(draws))),
            "sampling_draws": int(draws.shape[1]), "chains_recorded": int(draws.shape[0])}


# -- the samplers -----------------------------------------------------------------------


def run_laps(target, truth, num_chains, key, steps1, draws2, record_phase1, clock):
    """LAPS (module docstring). Returns ``(b2 per iteration (n, 2): [max, avg], gradients
    per chain at each, positions per iteration (n, C, d) or None for phase 1, phase-2
    draws (C, draws, d), info)``."""
    import jax
    import jax.numpy as jnp
    from jax import random
    from jax.flatten_util import ravel_pytree
    from laps_setup import laps_corrected
    from numpyro.infer.util import initialize_model

    ex2, var_x2 = (jnp.asarray(a) for a in truth)
    info = initialize_model(random.PRNGKey(0), target.model)
    _, unravel = ravel_pytree(info.param_info.z)
    pe = info.potential_fn
    d = target.dim

    def contract(e_x2):
        b2 = jnp.square(e_x2 - ex2) / var_x2
        return jnp.array([jnp.max(b2), jnp.mean(b2)])

    # laps_setup: the per-chain record's replication check off, and BlackJAX 1.7.1's
    # phase-2 step-size search corrected to keep the step it measured. laps() calls run_eca
    # once per phase, passing all_chains_info 9th; phase 1's record (up to num_steps1 x C x
    # d numbers) is kept only when asked. On a mesh of several devices the replicated
    # history holds only the first device's chains (C / devices): the row's R-hat, ESS and
    # MMD are then those of that share ("chains_recorded").
    calls = []

    def run_eca(*a, **k):
        calls.append(None)
        if len(calls) == 1 and not record_phase1:
            a = a[:8] + (None,) + a[9:]
        return orig_run_eca(*a, **k)

    mesh = jax.sharding.Mesh(jax.devices(), "chains")
    grads_per_step = 3 if d > 200 else 2
    with laps_corrected() as bj_laps:
        orig_run_eca = bj_laps.run_eca
        bj_laps.run_eca = run_eca
        try:
            with Timer(clock) as timer:
                out, g_per_step, _, final = bj_laps.laps(
                    logdensity_fn=lambda x: -pe(unravel(x)),
                    sample_init=lambda k: random.uniform(k, (d,), minval=-2.0, maxval=2.0),
                    ndims=d, num_steps1=steps1, num_steps2=draws2 * 15 * grads_per_step,
                    num_chains=num_chains, mesh=mesh, rng_key=key,
                    observables_for_bias=jnp.square, contract=contract, superchain_size=1,
                    all_chains_info=lambda position: position,
                )
                jax.block_until_ready((out, final))
        finally:
            bj_laps.run_eca = orig_run_eca
    if len(calls) != 2:
        raise RuntimeError(f"laps() called run_eca {len(calls)} times, expected 2 (one per phase)")
    if int(g_per_step) != grads_per_step:
        raise RuntimeError(f"LAPS used {g_per_step} gradients per step, expected {grads_per_step}")
    b1 = np.asarray(out["phase_1"]["bias"], dtype=np.float64)
    b2 = np.asarray(out["phase_2"]["bias"], dtype=np.float64)
    n1, n2 = b1.shape[0], b2.shape[0]
    grads = np.concatenate([np.arange(1, n1 + 1), n1 + 15 * grads_per_step * np.arange(1, n2 + 1)])
    pos2 = np.asarray(out["phase_2"]["all_chains_info"], dtype=np.float64)  # (n2, C, d)
    pos1 = np.asarray(out["phase_1"]["all_chains_info"], dtype=np.float64) if record_phase1 else None
    return np.concatenate([b1, b2]), grads.astype(float), pos1, pos2, {
        "phase1_steps": n1, "phase2_draws": n2, "b2_max_end_phase1": float(b1[-1, 0]),
        "b2_avg_end_phase1": float(b1[-1, 1]),
        "phase2_step_size_final": float(np.asarray(out["phase_2"]["step_size"])[-1]),
        "phase2_accept_mean": float(np.mean(np.asarray(out["phase_2"]["acc_prob"]))),
        "grads_total": float(grads[-1]), **timer.result()}


def unconstrained_draws(target, mcmc):
    """The draws as flat unconstrained vectors ``(C, draws, d)``, in the order of
    ``ravel_pytree`` of the latent sites (the order of the reference moments)."""
    import jax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import unconstrain_fn

    samples = mcmc.get_samples(group_by_chain=True)
    latent = {name: samples[name] for name in mcmc.last_state.z}

    def flat(z):
        return ravel_pytree(unconstrain_fn(target.model, (), {}, z))[0]

    return np.asarray(jax.vmap(jax.vmap(flat))(latent), dtype=np.float64)


def run_ours(target, num_chains, key, draws, clock):
    """``run_ensemble`` with a fixed number of sampling draws. Returns ``(draws (C, N, d),
    gradients per chain at each draw, info)``."""
    import jax
    from numpyro.infer.initialization import init_to_uniform

    from esh_kernels.numpyro import chain_keys, run_ensemble

    keys = chain_keys(key, num_chains) if len(jax.devices()) > 1 else key
    with Timer(clock) as timer:
        mcmc = run_ensemble(target.model, keys, num_chains=num_chains, num_samples=draws,
                            chunk=draws, ess_target=1e12, init_strategy=init_to_uniform)
        jax.block_until_ready(mcmc.get_samples())
    x = unconstrained_draws(target, mcmc)
    info = mcmc.ensemble_info
    steps = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["n_steps"], dtype=np.float64)
    before = info["gradients"]["warm"] + info["gradients"]["tune"]
    grads = before + np.cumsum(np.mean(steps, axis=0))
    return x, grads, {"warm_steps": info["warm_steps"], "tune_grads": info["gradients"]["tune"],
                      "step_size": info["step_size"], "trajectory_length": info["trajectory_length"],
                      "grads_per_draw": float(np.mean(steps)), "grads_total": float(grads[-1]),
                      **timer.result()}


# -- one target -------------------------------------------------------------------------


def b2_of_draws(x, truth):
    """``(n, 2)``: ``[b2_max, b2_avg]`` of the ensemble at each draw of ``x`` ``(C, n, d)``."""
    from targets import second_moment_bias

    rows = [second_moment_bias(x[:, t], *truth)[0] for t in range(x.shape[1])]
    return np.array([[np.max(b), np.mean(b)] for b in rows])


def mmd_curve(mmd, positions, grads, every_from=0, max_points=80):
    """The squared MMD at (at most ``max_points``, log-spaced) iterations before
    ``every_from`` and at every iteration from there on (LAPS: its adjusted draws):
    ``(grads, mmd2)``; ``positions`` ``(n, C, d)``."""
    n = positions.shape[0]
    idx = np.round(np.geomspace(1, max(every_from, 1), min(max(every_from, 1), max_points))).astype(int) - 1
    idx = np.unique(np.concatenate([idx[idx < every_from], np.arange(every_from, n)]))
    return grads[idx], np.array([mmd(positions[i]) for i in idx])


def at_budgets(grads, values):
    """The value at the last recorded iteration within each budget of ``MMD_BUDGETS``
    (None before the first record)."""
    out = {}
    for b in MMD_BUDGETS:
        k = np.flatnonzero(grads <= b)
        out[str(b)] = float(values[k[-1]]) if k.size else None
    return out


def summarize(label, b2, grads, diag, info, num_chains, mmd=None, mmd_points=None):
    first, stays = crossings(b2[:, 0], grads)
    first_avg, stays_avg = crossings(b2[:, 1], grads)
    row = {"sampler": label, "chains": num_chains,
           "b2max_first": first, "b2max_stays": stays, "b2max_min": float(np.min(b2[:, 0])),
           "b2avg_first": first_avg, "b2avg_stays": stays_avg, "b2avg_min": float(np.min(b2[:, 1])),
           **diag, **info}
    idx = np.unique(np.round(np.geomspace(1, len(grads), min(len(grads), 80))).astype(int) - 1)
    row["b2_curve"] = [[float(grads[i]), float(b2[i, 0]), float(b2[i, 1])] for i in idx]
    row["wall_per_chain_ms"] = 1e3 * info["wall_s"] / num_chains
    row["wall_per_ess_ms"] = 1e3 * info["wall_s"] / diag["ess_min"]
    if mmd_points is not None:
        g, v = mmd_points
        row["mmd2_at_budget"] = at_budgets(g, v)
        row["mmd2_first_below_null_q95"], row["mmd2_stays_below_null_q95"] = crossings(v, g, mmd.null_q95)
        row["mmd2_min"] = float(np.min(v))
        row["mmd2_curve"] = [[float(a), float(b)] for a, b in zip(g, v)]
    return row


def run_target(name, targets, args, seed, clock):
    from jax import random

    target, truth, reference = load_target(name, targets)
    mmd = None
    if args.protocol == "mmd":
        if reference is None:
            raise SystemExit(f"{name}: --protocol mmd needs reference draws (Gaussians, posteriordb)")
        mmd = MMD(reference, args.chains, seed)
    k_laps, k_ours = random.split(random.PRNGKey(seed))
    rows = []

    if "laps" in args.samplers:
        b2, grads, pos1, pos2, info = run_laps(target, truth, args.chains, k_laps, args.laps_steps1,
                                               args.laps_draws, mmd is not None, clock)
        draws2 = np.swapaxes(pos2, 0, 1)
        points = None
        if mmd is not None:
            points = mmd_curve(mmd, np.concatenate([pos1, pos2]), grads, every_from=pos1.shape[0])
        info["laps_steps1_cap"] = args.laps_steps1
        rows.append(summarize("LAPS", b2, grads, sampling_diagnostics(draws2), info, args.chains, mmd, points))
        del pos1, pos2, draws2

    if "ensemble" in args.samplers:
        x, grads, info = run_ours(target, args.chains, k_ours, args.draws, clock)
        b2 = b2_of_draws(x, truth)
        points = None if mmd is None else mmd_curve(mmd, np.swapaxes(x, 0, 1), grads)
        rows.append(summarize("ensemble mode", b2, grads, sampling_diagnostics(x), info, args.chains, mmd, points))
    for row in rows:
        row.update(target=name, dim=target.dim, seed=seed, protocol=args.protocol,
                   mmd_null_q95=None if mmd is None else mmd.null_q95,
                   mmd_null_median=None if mmd is None else mmd.null_median)
    return rows


def print_row(r):
    keys = ("b2max_first", "b2max_stays", "b2max_min", "b2avg_first", "b2avg_stays", "b2avg_min",
            "rhat_max", "ess_min", "wall_s", "compile_s", "run_s", "wall_per_chain_ms", "wall_per_ess_ms")
    fmt = {k: (f"{r[k]:.4g}" if isinstance(r[k], float) else r[k]) for k in keys}
    print(f"{r['target']:22s} seed {r['seed']} {r['sampler']:13s} C={r['chains']}: "
          + ", ".join(f"{k} {v}" for k, v in fmt.items()), flush=True)
    extra = {k: v for k, v in r.items() if k not in keys and k not in ("mmd2_curve", "b2_curve")}
    print("    " + json.dumps(extra, default=str), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", default=["std_gauss", "ill_gauss"])
    parser.add_argument("--protocol", choices=("b2", "mmd"), default="b2")
    parser.add_argument("--chains", type=int, default=None, help="default 2048 (b2), 256 (mmd)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samplers", nargs="+", choices=("laps", "ensemble"), default=["laps", "ensemble"])
    parser.add_argument("--draws", type=int, default=40, help="ensemble mode: sampling draws")
    parser.add_argument("--laps-steps1", type=int, default=2000, help="LAPS: cap on phase-1 steps")
    parser.add_argument("--laps-draws", type=int, default=40, help="LAPS: phase-2 draws")
    parser.add_argument("--host-devices", type=int, default=None,
                        help="CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count)")
    parser.add_argument("--x32", action="store_true", help="float32 instead of float64")
    parser.add_argument("--out", default=None, help="write the rows (and MMD curves) as JSON")
    args = parser.parse_args()
    if args.chains is None:
        args.chains = 256 if args.protocol == "mmd" else 2048
    if args.host_devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.host_devices}")
    import jax

    jax.config.update("jax_enable_x64", not args.x32)
    jax.config.update("jax_cpu_enable_async_dispatch", False)  # wall time = work done
    from targets import make_targets

    clock = CompileClock()
    targets = make_targets()
    print(f"devices: {len(jax.devices())} ({jax.devices()[0].platform}), "
          f"{'float32' if args.x32 else 'float64'}", flush=True)
    rows = []
    for name in args.targets:
        for seed in args.seeds:
            for row in run_target(name, targets, args, seed, clock):
                row.update(devices=len(jax.devices()), x32=args.x32)
                print_row(row)
                rows.append(row)
            if args.out:
                with open(args.out, "w") as f:
                    json.dump({"argv": sys.argv, "rows": rows}, f, indent=1, default=float)


if __name__ == "__main__":
    main()
