#!/usr/bin/env python
"""ESS per gradient / per second: NumPyro NUTS, the esh_kernels NumPyro kernels and
BlackJAX MCLMC / adjusted MCLMC (MAMS) / ChEES-HMC, on six targets, in one process.

    python benchmarks/run_numpyro.py [--quick | --smoke] [--targets ...] [--samplers ...] [--seeds 0 1 2]

Writes ``benchmarks/results/numpyro.json`` (``numpyro_quick.json`` with ``--quick``,
``numpyro_smoke.json`` with ``--smoke``) and a markdown section in ``docs/benchmarks.md``
(not with ``--smoke`` unless ``--md`` is given). See ``benchmarks/README.md`` and the
"What the columns mean" part of ``docs/benchmarks.md`` for the exact definitions.

Conventions (the same for every sampler):
* float64; every sampler sees the same log density: the potential that
  ``numpyro.infer.util.initialize_model`` builds from the NumPyro model, on the flat
  (ravelled) unconstrained parameters; chains start from ``init_to_uniform`` draws.
* ESS is computed on the unconstrained draws (``tau`` of eight schools on the log
  scale), min over all scalar coordinates of ArviZ's rank-normalised bulk ESS over all
  chains.
* Second-moment bias, per unconstrained coordinate ``i``:
  ``b2_i = (mean over all chains and draws of x_i^2 - E[x_i^2])^2 / Var[x_i^2]``,
  reported as ``b2_max`` / ``b2_mean`` over ``i``. Truth: analytic for the Gaussians,
  otherwise the long NUTS run in ``benchmarks/reference/<target>.json``
  (``make_reference.py``), whose own Monte Carlo error gives ``b2_floor_i =
  1 / ESS_ref(x_i^2)``; an unbiased sampler has ``b2_i ~ 1 / ESS(x_i^2) + b2_floor_i``
  on average (``b2_excess`` = ``b2_mean`` over the mean of that, ~1 when unbiased).
* Gradient evaluations are summed over chains (per-chain work, whatever the
  vectorisation does to the wall clock).
* Times are wall clock with ``block_until_ready``, minus the JAX tracing / lowering / XLA
  compilation time that happened inside the phase (measured with ``jax.monitoring``);
  the compilation time is reported separately.
"""

import os
import sys

import jax

# float64, unless ESH_BENCH_X32=1: ``run_posteriordb.py --x32`` sets it, for itself and for the
# processes it spawns, to run at NumPyro's default precision
jax.config.update("jax_enable_x64", os.environ.get("ESH_BENCH_X32") != "1")
# Synchronous CPU dispatch: otherwise a compiled sampling loop can run in the background
# while Python traces/compiles the next one (NumPyro's sequential chains do exactly that),
# and "wall minus compile time" would undercount the sampling time. Must be set before
# the CPU backend starts.
jax.config.update("jax_cpu_enable_async_dispatch", False)

import argparse  # noqa: E402
import importlib  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
import dataclasses  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax, random  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import results_io  # noqa: E402
import runner  # noqa: E402
from compile_clock import CompileClock  # noqa: E402
from yardstick import ess_by_groups, ess_x_and_x2, gradients_to_b2, per_1k_grad  # noqa: E402
from targets import (  # noqa: E402
    TARGET_NAMES,
    load_reference,
    make_targets,
    second_moment_bias,
    second_moment_truth,
)

SAMPLER_ORDER = ("nuts", "nuts_dense", "adjusted_esh", "esh", "tuned_hmc", "bj_mclmc", "bj_mams", "bj_chees",
                 "bj_laps")
SAMPLER_LABELS = {
    "nuts": "NumPyro NUTS",
    "nuts_dense": "NumPyro NUTS (dense_mass=True)",
    "adjusted_esh": "esh_kernels AdjustedESH",
    "esh": "esh_kernels ESH",
    "tuned_hmc": "esh_kernels TunedHMC",
    "bj_mclmc": "BlackJAX MCLMC",
    "bj_mams": "BlackJAX adjusted MCLMC (MAMS)",
    "bj_chees": "BlackJAX ChEES-HMC",
    "bj_laps": "BlackJAX LAPS",
}
#: ``--smoke`` (CI): every sampler on these targets with this budget per chain, chosen to
#: exercise both kinds of second-moment truth (analytic and reference file) in a couple of
#: minutes; the time is almost all XLA compilation.
SMOKE_TARGETS = ("std_gauss", "eight_schools_centered")
SMOKE_BUDGET = 100
DENSE_MAX_DIM = 200  # the NUTS dense-metric row is run on targets up to this dimension
#: Unadjusted MCLMC: ``mclmc_find_L_and_step_size`` is run this many times in a row, each
#: pass starting from the previous pass's state and parameters (its ``params=`` argument),
#: with its default fractions (0.1, 0.1 (+1/3 of it for the preconditioner re-fit), 0.1)
#: and ``num_steps = MCLMC_NUM_STEPS_FACTOR * num_warmup``, so that all passes together
#: take ``num_warmup`` integrator steps. One pass from the ``init_to_uniform`` start left
#: the diagonal preconditioner (estimated from the second 10% of the pass, in the identity
#: metric) far off on ``ill_gauss``; see ``run_bj_mclmc``.
MCLMC_TUNING_PASSES = 2
MCLMC_NUM_STEPS_FACTOR = 1.5  # 2 passes x (0.1 + 0.1 + 0.1/3 + 0.1) x 1.5 = 1.0
MAMS_TARGET_ACCEPT = 0.9  # "a target MH acceptance rate of 0.9 is a good choice" (sampling book, MCLMC page)
#: MAMS warmup split: half of ``num_warmup`` as unadjusted MCLMC tuner steps, half as
#: adjusted MH iterations of ``adjusted_mclmc_find_L_and_step_size`` (frac_tune1 +
#: frac_tune2 + frac_tune1 again = 0.3 of its ``num_steps``).
MAMS_UNADJUSTED_NUM_STEPS_FACTOR = 1.5  # (0.1 + 0.1 + 0.1/3 + 0.1) x 1.5 = 0.5
MAMS_ADJUSTED_NUM_STEPS_FACTOR = 0.5 / 0.3
#: ChEES optimiser: Adam on log T with learning rate 0.025, no momentum, beta2 = 0.95, i.e.
#: TFP's ``GradientBasedTrajectoryLengthAdaptation`` defaults (``adaptation_rate=0.025``,
#: ``averaged_sq_grad_adaptation_rate=0.05`` = 1 - beta2, no first-moment average), the ChEES
#: authors' implementation; BlackJAX's own ChEES test also uses ``b1=0, b2=0.95``.
CHEES_LEARNING_RATE = 0.025
CHEES_ADAM_B1 = 0.0
CHEES_ADAM_B2 = 0.95
CHEES_INITIAL_STEP_SIZE = 0.1  # TFP's ChEES example and BlackJAX's ChEES test
#: LAPS (sampling book, "The Late Adjusted Parallel Sampler"): an ensemble method; 128
#: chains in every mode (the book's example uses 256 on a 2-D target).
LAPS_CHAINS = 128
LAPS_STEPS_PER_SAMPLE = 15  # the book's (and the function's default) steps_per_sample


# -- timing: wall clock minus JAX compilation --------------------------------------------


CLOCK = None


class Phase:
    """``with Phase() as p: ...`` then ``p.result() -> {wall, compile, net}`` seconds."""

    def __enter__(self):
        self.t0 = time.time()
        self.p0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.p1 = time.perf_counter()
        self.t1 = time.time()
        return False

    def result(self):
        wall = self.p1 - self.p0
        comp = min(CLOCK.overlap(self.t0, self.t1), wall)
        return {"wall": wall, "compile": comp, "net": max(wall - comp, 0.0)}


# -- run configuration ------------------------------------------------------------------


@dataclass
class Config:
    num_warmup: int
    num_samples: int
    num_chains: int
    chees_chains: int
    seed: int


def _flatten_draws(samples):
    """``{site: (C, N, ...)}`` unconstrained draws -> ``(C, N, D)`` in ``ravel_pytree``
    order (the order BlackJAX sees)."""
    flat = jax.vmap(jax.vmap(lambda z: ravel_pytree(z)[0]))(samples)
    return np.asarray(flat, dtype=np.float64)


def _identity(z):
    return z


def _numpyro_kernel(name):
    """The kernel class, or a string saying why it is not available."""
    if name in ("nuts", "nuts_dense"):
        from numpyro.infer import NUTS

        return NUTS
    cls_name = {"adjusted_esh": "AdjustedESH", "esh": "ESH", "tuned_hmc": "TunedHMC"}[name]
    module = f"esh_kernels.numpyro.{name}"  # where the class is defined
    try:
        import esh_kernels.numpyro as ekn
    except ImportError as e:  # pragma: no cover
        return f"esh_kernels.numpyro not importable: {e}"
    try:
        return getattr(ekn, cls_name)
    except AttributeError:
        pass
    try:  # the class may exist in its module before it is exported
        return getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError):
        return f"esh_kernels.numpyro.{cls_name} is not available yet (ImportError)"


def run_numpyro_sampler(name, target, cfg, key, constrained=False):
    """One NumPyro ``MCMC`` run (warmup and sampling timed apart, gradient counts from the
    kernel's extra field). ``draws`` are the flat unconstrained draws ``(C, N, D)``; with
    ``constrained`` the record also has ``samples``, NumPyro's constrained draws and
    deterministic sites grouped by chain."""
    from numpyro.infer import MCMC

    cls = _numpyro_kernel(name)
    if isinstance(cls, str):
        return {"status": "skipped", "note": cls}
    if name == "nuts_dense" and getattr(target, "dim", 0) > DENSE_MAX_DIM:
        return {"status": "skipped",
                "note": f"dense metric not run above {DENSE_MAX_DIM} dimensions (cost on 2 CPU cores)"}
    nuts = name in ("nuts", "nuts_dense")
    field = "num_steps" if nuts else "n_steps"
    chain_method = "sequential" if nuts else "vectorized"
    # NUTS with a dense metric: numpyro.infer.NUTS(dense_mass=True), as NumPyro's API docs
    # show (https://num.pyro.ai/en/stable/mcmc.html#numpyro.infer.hmc.NUTS)
    kernel = cls(target.model, dense_mass=True) if name == "nuts_dense" else cls(target.model)
    mcmc = MCMC(
        kernel,
        num_warmup=cfg.num_warmup,
        num_samples=cfg.num_samples,
        num_chains=cfg.num_chains,
        chain_method=chain_method,
        progress_bar=False,
        postprocess_fn=_identity,  # keep the draws unconstrained
    )
    k_warm, k_samp = random.split(key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Phase() as pw:
            mcmc.warmup(k_warm, extra_fields=(field,), collect_warmup=True)
            jax.block_until_ready(mcmc.post_warmup_state)
        wf = mcmc.get_extra_fields(group_by_chain=True)
        grads_warmup = np.asarray(wf[field]).sum(axis=1)
        state = mcmc.post_warmup_state
        extra = [field]
        if "accept_prob" in getattr(state, "_fields", ()):
            extra.append("accept_prob")
        with Phase() as ps:
            mcmc.run(k_samp, extra_fields=tuple(extra))
            jax.block_until_ready(mcmc.last_state)
    unconstrained = mcmc.get_samples(group_by_chain=True)
    draws = _flatten_draws(unconstrained)
    ef = mcmc.get_extra_fields(group_by_chain=True)
    grads_by_draw = np.asarray(ef[field], dtype=np.float64)  # (chains, draws)
    grads_sample = grads_by_draw.sum(axis=1)
    info = {
        "chain_method": chain_method,
        "grad_field": field,
        "grads_warmup_per_chain": grads_warmup.tolist(),
        "grads_sample_per_chain": grads_sample.tolist(),
    }
    if "accept_prob" in ef:
        info["accept_mean"] = float(np.mean(ef["accept_prob"]))
    if "diverging" in ef:
        info["divergences"] = int(np.sum(ef["diverging"]))
    if hasattr(kernel, "self_check_findings"):  # esh_kernels/core/self_check.py
        info["self_check"] = [message for _, _, message in kernel.self_check_findings]
    adapt = getattr(state, "adapt_state", None)
    if adapt is not None and hasattr(adapt, "step_size"):
        info["step_size_mean"] = float(np.mean(adapt.step_size))
    if adapt is not None and hasattr(adapt, "trajectory_length"):
        info["trajectory_length_mean"] = float(np.mean(adapt.trajectory_length))
    out = {
        "status": "ok",
        "draws": draws,
        "grads_by_draw": grads_by_draw,
        "grads_warmup": float(grads_warmup.sum()),
        "grads_sample": float(grads_sample.sum()),
        "time_warmup": pw.result(),
        "time_sample": ps.result(),
        "info": info,
    }
    if constrained:  # the model's own postprocessing: constrain, add deterministic sites
        post = kernel.postprocess_fn((), {})  # the targets take no arguments
        out["samples"] = jax.vmap(jax.vmap(post))(unconstrained)
    return out


# -- BlackJAX ---------------------------------------------------------------------------


def _blackjax_setup(target, num_chains, key):
    """Log density on the flat unconstrained vector and ``init_to_uniform`` starting
    points, both from NumPyro's ``initialize_model`` (the potential NUTS uses)."""
    from numpyro.infer.initialization import init_to_uniform
    from numpyro.infer.util import initialize_model

    info = initialize_model(random.split(key, num_chains), target.model, init_strategy=init_to_uniform)
    z0 = info.param_info.z
    proto = jax.tree.map(lambda a: a[0], z0)
    _, unravel = ravel_pytree(proto)
    x0 = jax.vmap(lambda z: ravel_pytree(z)[0])(z0)
    pe = info.potential_fn

    def logdensity(x):
        return -pe(unravel(x))

    return logdensity, x0


def _have_blackjax():
    try:
        import blackjax  # noqa: F401

        return None
    except ImportError as e:
        return f"blackjax not installed: {e}"


def run_bj_mclmc(target, cfg, key):
    """Unadjusted MCLMC as the sampling book shows it
    (https://blackjax-devs.github.io/sampling-book/algorithms/mclmc.html, "How to run MCLMC
    in BlackJax"; API: https://blackjax-devs.github.io/blackjax/autoapi/blackjax/adaptation/mclmc_adaptation/index.html):
    ``blackjax.mcmc.mclmc.init`` -> ``mclmc.build_kernel`` (default isokinetic McLachlan,
    2 gradients per step) -> ``mclmc_find_L_and_step_size`` with its default fractions,
    ``desired_energy_var`` and ``diagonal_preconditioning=True`` -> run the kernel with the
    tuned ``(L, step_size, inverse_mass_matrix)`` from the tuner's final state. Each chain is
    tuned independently (vmapped), as the book's single-chain recipe.

    Deviation, stated: the book calls the tuner once with ``num_steps`` = the sampling
    length (here 333 tuning steps for 1000 draws). From ``init_to_uniform`` on
    ``ill_gauss`` that left the chains unconverged (R-hat 1.18, min ESS(x, x^2) 2 per 1k
    gradients), and a single pass with ``num_steps = 3 * num_warmup`` (1000 tuning steps)
    still gave only 24-46 per 1k gradients (R-hat 1.01-1.04): the diagonal preconditioner
    is estimated from the chain's second 10% in the identity metric, before it mixes along
    the wide directions. So the tuner runs ``MCLMC_TUNING_PASSES`` = 2 times, the second
    warm-started from the first's state and parameters through its documented ``params=``
    argument (its stages 1-2 then run in the first pass's metric: the staging BlackJAX's
    ``mclmc_lrd_adaptation`` docs describe, a cheap diagonal phase that reaches the typical
    set, then the metric from draws already there), each pass with ``num_steps = 1.5 *
    num_warmup``, i.e. ``num_warmup`` integrator steps in all (tuning gradients counted
    exactly from the tuner's returned step counts)."""
    import blackjax
    from blackjax.mcmc import mclmc
    from blackjax.mcmc.integrators import isokinetic_mclachlan

    grads_per_step = 2  # McLachlan: [b1, 1/2, 1-2b1, 1/2, b1] -> 2 new gradients per step
    C, S = cfg.num_chains, cfg.num_samples
    tune_num_steps = int(round(MCLMC_NUM_STEPS_FACTOR * cfg.num_warmup))
    k_init, k_tune, k_samp = random.split(key, 3)
    kernel = mclmc.build_kernel(integrator=isokinetic_mclachlan)
    n_tune_box = []
    with Phase() as pw:
        logdensity, x0 = _blackjax_setup(target, C, k_init)

        def tune_one(x, k):
            k1, k2 = random.split(k)
            st = mclmc.init(x, logdensity, k1)
            params, n_total = None, 0
            for i in range(MCLMC_TUNING_PASSES):
                st, params, n_tune = blackjax.mclmc_find_L_and_step_size(
                    mclmc_kernel=kernel,
                    num_steps=tune_num_steps,
                    state=st,
                    rng_key=random.fold_in(k2, i),
                    logdensity_fn=logdensity,
                    diagonal_preconditioning=True,
                    params=params,
                )
                n_total += n_tune
            n_tune_box.append(n_total)
            return st, params

        states, params = jax.jit(jax.vmap(tune_one))(x0, random.split(k_tune, C))
        jax.block_until_ready((states, params))
    n_tune = int(n_tune_box[0])  # integrator steps per chain (a static Python int)

    def sample_one(st, p, k):
        def body(s, kk):
            s, info = kernel(kk, s, logdensity, p.inverse_mass_matrix, p.L, p.step_size)
            return s, (s.position, info.energy_change, info.nonans)

        return lax.scan(body, st, random.split(k, S))

    with Phase() as ps:
        _, (pos, dE, nonans) = jax.jit(jax.vmap(sample_one))(states, params, random.split(k_samp, C))
        jax.block_until_ready(pos)
    d = x0.shape[1]
    info = {
        "grads_per_step": grads_per_step,
        "tuning_steps_per_chain": n_tune,
        "tuning_passes": MCLMC_TUNING_PASSES,
        "tuner_num_steps": tune_num_steps,
        "step_size_mean": float(np.mean(params.step_size)),
        "L_mean": float(np.mean(params.L)),
        "energy_var_per_dim": float(np.mean(np.var(np.asarray(dE), axis=1)) / d),
        "divergences": int(np.sum(~np.asarray(nonans))),
    }
    return {
        "status": "ok",
        "draws": np.asarray(pos, dtype=np.float64),
        "grads_warmup": float(grads_per_step * n_tune * C),
        "grads_sample": float(grads_per_step * S * C),
        "time_warmup": pw.result(),
        "time_sample": ps.result(),
        "info": info,
    }


def run_bj_mams(target, cfg, key):
    """Adjusted MCLMC (MAMS) as the sampling book shows it
    (https://blackjax-devs.github.io/sampling-book/algorithms/mclmc.html, "Adjusted MCLMC";
    API: https://blackjax-devs.github.io/blackjax/autoapi/blackjax/adaptation/adjusted_mclmc_adaptation/index.html):
    ``adjusted_mclmc_dynamic`` with a random trajectory length ``ceil(U * rescale(L /
    step_size))`` (``make_random_trajectory_length_fn(True)``; default isokinetic McLachlan,
    2 gradients per integration step), tuned by ``adjusted_mclmc_find_L_and_step_size(
    target=0.9, frac_tune1=0.1, frac_tune2=0.1, frac_tune3=0.0,
    diagonal_preconditioning=True)``, warm-started (``params=``, and the chain's position)
    from the unadjusted MCLMC tuner ``mclmc_find_L_and_step_size`` (diagonal
    preconditioning, default fractions), as the MAMS authors' set-up does; each chain tuned
    independently (vmapped).

    Budget: the unadjusted tuner gets ``num_steps = 1.5 * num_warmup`` (half of
    ``num_warmup`` as integrator steps), the adjusted tuner ``num_steps = num_warmup / 0.6``
    (its 0.1 + 0.1 + 0.1 = half of ``num_warmup`` as MH iterations). ``frac_tune3 = 0``:
    in BlackJAX 1.7.1 the tuner ends by setting ``L = target_num_integration_steps *
    step_size`` (default 2.0, "the robust sweet spot" in its docstring) on every path, so
    the ESS-based third stage would only spend gradients. The sampler therefore averages
    about 2 integration steps per proposal. Warmup gradients: 2 x (unadjusted steps +
    the adjusted tuner's returned integration-step count), per chain, summed."""
    import blackjax
    from blackjax.mcmc import adjusted_mclmc_dynamic as amd
    from blackjax.mcmc import mclmc

    grads_per_step = 2
    C, S = cfg.num_chains, cfg.num_samples
    unadj_num_steps = int(round(MAMS_UNADJUSTED_NUM_STEPS_FACTOR * cfg.num_warmup))
    adj_num_steps = int(round(MAMS_ADJUSTED_NUM_STEPS_FACTOR * cfg.num_warmup))
    k_init, k_tune, k_samp = random.split(key, 3)
    kernel = amd.build_kernel(integration_steps_fn=amd.make_random_trajectory_length_fn(True))
    unadj_kernel = mclmc.build_kernel()  # default isokinetic McLachlan
    n_unadj_box = []
    with Phase() as pw:
        logdensity, x0 = _blackjax_setup(target, C, k_init)

        def tune_one(x, k):
            k1, k2, k3, k4 = random.split(k, 4)
            st = mclmc.init(x, logdensity, k1)
            st, unadj_params, n_unadj = blackjax.mclmc_find_L_and_step_size(
                mclmc_kernel=unadj_kernel,
                num_steps=unadj_num_steps,
                state=st,
                rng_key=k2,
                logdensity_fn=logdensity,
                diagonal_preconditioning=True,
            )
            n_unadj_box.append(n_unadj)
            st = amd.init(st.position, logdensity, k3)
            return blackjax.adjusted_mclmc_find_L_and_step_size(
                mclmc_kernel=kernel,
                logdensity_fn=logdensity,
                num_steps=adj_num_steps,
                state=st,
                rng_key=k4,
                target=MAMS_TARGET_ACCEPT,
                frac_tune1=0.1,
                frac_tune2=0.1,
                frac_tune3=0.0,
                diagonal_preconditioning=True,
                params=unadj_params,
            )

        states, params, n_tune = jax.jit(jax.vmap(tune_one))(x0, random.split(k_tune, C))
        jax.block_until_ready((states, params, n_tune))
    n_unadj = int(n_unadj_box[0])  # unadjusted integrator steps per chain (static int)

    def sample_one(st, p, k):
        avg = p.L / p.step_size

        def body(s, kk):
            s, info = kernel(kk, s, logdensity, p.step_size, jnp.inf, p.inverse_mass_matrix, (avg,))
            return s, (s.position, info.num_integration_steps, info.acceptance_rate, info.is_divergent)

        return lax.scan(body, st, random.split(k, S))

    with Phase() as ps:
        _, (pos, nsteps, acc, div) = jax.jit(jax.vmap(sample_one))(states, params, random.split(k_samp, C))
        jax.block_until_ready(pos)
    n_tune = np.asarray(n_tune, dtype=np.float64) + n_unadj  # integration steps per chain
    nsteps = np.asarray(nsteps, dtype=np.float64)
    info = {
        "grads_per_step": grads_per_step,
        "target_accept": MAMS_TARGET_ACCEPT,
        "unadjusted_tuning_steps_per_chain": n_unadj,
        "tuning_integration_steps_per_chain": n_tune.tolist(),
        "step_size_mean": float(np.mean(params.step_size)),
        "L_mean": float(np.mean(params.L)),
        "avg_integration_steps": float(np.mean(np.asarray(params.L) / np.asarray(params.step_size))),
        "accept_mean": float(np.mean(acc)),
        "divergences": int(np.sum(div)),
    }
    return {
        "status": "ok",
        "draws": np.asarray(pos, dtype=np.float64),
        # + 1 per chain: amd.init re-evaluates the gradient at the unadjusted tuner's end
        "grads_warmup": float(grads_per_step * n_tune.sum() + C),
        "grads_sample": float(grads_per_step * nsteps.sum()),
        "time_warmup": pw.result(),
        "time_sample": ps.result(),
        "info": info,
    }


def run_bj_chees(target, cfg, key):
    """ChEES-HMC as BlackJAX's API docs show it
    (https://blackjax-devs.github.io/blackjax/autoapi/blackjax/adaptation/chees_adaptation/index.html,
    the ``chees_adaptation`` example): ``blackjax.chees_adaptation(logdensity_fn,
    num_chains)`` -> ``warmup.run(key, positions, initial_step_size, optax.adam(...),
    num_warmup)`` -> ``blackjax.dynamic_hmc(logdensity_fn, **parameters)`` vmapped over the
    chains (velocity Verlet: 1 gradient per leapfrog step, cached across steps). The docs
    leave the numbers open; taken from the ChEES authors' implementation
    (https://www.tensorflow.org/probability/api_docs/python/tfp/experimental/mcmc/GradientBasedTrajectoryLengthAdaptation:
    ``adaptation_rate=0.025``, ``averaged_sq_grad_adaptation_rate=0.05``, no momentum ->
    ``optax.adam(0.025, b1=0, b2=0.95)``; its example's initial step size 0.1, also
    BlackJAX's test's). ``mass_matrix_estimation="diagonal"`` (with the default slow-direction
    length floor), which the ``chees_adaptation`` docstring recommends for dispersed
    (per-chain uniform box) initialisations on scale-separated targets, our
    ``init_to_uniform`` starts. ``chees_chains`` (64) chains; jitter, target acceptance
    (0.651), decay rate and ``max_leapfrog_steps`` default; ``max_sampling_steps =
    num_samples``."""
    import blackjax
    import optax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    C, W, S = cfg.chees_chains, cfg.num_warmup, cfg.num_samples
    k_init, k_warm, k_samp = random.split(key, 3)
    with Phase() as pw:
        logdensity, x0 = _blackjax_setup(target, C, k_init)
        warmup = blackjax.chees_adaptation(
            logdensity,
            num_chains=C,
            mass_matrix_estimation="diagonal",
            adaptation_info_fn=get_filter_adapt_info_fn(
                set(), {"num_integration_steps", "acceptance_rate", "is_divergent"}, set()
            ),
        )
        (states, parameters), winfo = warmup.run(
            k_warm,
            x0,
            CHEES_INITIAL_STEP_SIZE,
            optax.adam(CHEES_LEARNING_RATE, b1=CHEES_ADAM_B1, b2=CHEES_ADAM_B2),
            W,
            max_sampling_steps=S,
        )
        w_steps = np.asarray(winfo.info.num_integration_steps, dtype=np.float64)
    step = blackjax.dynamic_hmc(logdensity, **parameters).step

    def sample(st, k):
        def body(s, kk):
            s, info = jax.vmap(step)(random.split(kk, C), s)
            return s, (s.position, info.num_integration_steps, info.acceptance_rate, info.is_divergent)

        return lax.scan(body, st, random.split(k, S))

    with Phase() as ps:
        _, (pos, nsteps, acc, div) = jax.jit(sample)(states, k_samp)
        jax.block_until_ready(pos)
    draws = np.swapaxes(np.asarray(pos, dtype=np.float64), 0, 1)  # (C, S, D)
    nsteps = np.asarray(nsteps, dtype=np.float64)
    info = {
        "grads_per_step": 1,
        "learning_rate": CHEES_LEARNING_RATE,
        "adam_b1": CHEES_ADAM_B1,
        "adam_b2": CHEES_ADAM_B2,
        "initial_step_size": CHEES_INITIAL_STEP_SIZE,
        "step_size_mean": float(np.asarray(parameters["step_size"])),
        "mean_leapfrog_steps_param": float(np.asarray(parameters["integration_steps_params"][0])),
        "accept_mean": float(np.mean(acc)),
        "divergences": int(np.sum(div)),
        "warmup_divergences": int(np.sum(np.asarray(winfo.info.is_divergent))),
    }
    return {
        "status": "ok",
        "draws": draws,
        "grads_warmup": float(w_steps.sum()),
        "grads_sample": float(nsteps.sum()),
        "time_warmup": pw.result(),
        "time_sample": ps.result(),
        "info": info,
        "num_chains": C,
    }


def run_bj_laps(target, cfg, key):
    """LAPS (Late Adjusted Parallel Sampler) as the sampling book shows it
    (https://blackjax-devs.github.io/sampling-book/algorithms/laps.html, "The Late Adjusted
    Parallel Sampler (LAPS)"; API: https://blackjax-devs.github.io/blackjax/autoapi/blackjax/adaptation/laps/index.html):
    ``blackjax.adaptation.laps.laps(logdensity_fn, sample_init, ndims, num_steps1,
    num_steps2, num_chains, mesh, rng_key, early_stop=False, diagonal_preconditioning=True,
    steps_per_sample=15, r_end=0.01, superchain_size=1)`` on a one-device mesh
    ``Mesh(jax.devices()[:1], "chains")``, ``LAPS_CHAINS`` (128) chains in every mode.

    Phase 1 (warmup here): ``num_steps1 = num_warmup`` unadjusted MCLMC steps with ensemble
    tuning (isokinetic velocity Verlet, 1 gradient per step). Phase 2 (the draws here):
    adjusted MCLMC (MAMS kernel, ``steps_per_sample`` = 15 integration steps per proposal,
    McLachlan with 2 gradients per step for d <= 200, Omelyan with 3 above, as ``laps``
    chooses), ``num_steps2 = num_samples * 15 * grads_per_step`` gradients, i.e.
    ``num_samples`` MH draws per chain; its step size is set by bisection on the ensemble
    acceptance (target 0.7 for d <= 200, 0.9 above) during the first draws and fixed once
    the acceptance is within 0.03 of the target (corrected to keep the step that met it:
    ``laps_setup.py``, which says why).
    LAPS itself returns only the final state of each chain; the per-chain draws are
    recorded with its documented ``all_chains_info`` hook (the flat position at every
    step; phase 1's record is dropped). ``sample_init`` draws uniform(-2, 2) on the flat
    unconstrained vector, the distribution ``init_to_uniform`` uses. Gradients: phase 1
    and phase 2 step counts from the returned per-step diagnostics (``diagnostics=True``)
    times the gradients per step, summed over chains; the one initial gradient per chain
    is not counted (as for the other samplers). Both phases run in one call: wall,
    compile and net time are split between warmup and sampling in proportion to their
    gradient counts (``info["time_split"]``)."""
    from blackjax.adaptation.laps import laps as run_laps
    from blackjax.mcmc.integrators import mclachlan_coefficients, omelyan_coefficients
    from laps_setup import laps_corrected

    C, W, S = LAPS_CHAINS, cfg.num_warmup, cfg.num_samples
    k_init, k_run = random.split(key)
    logdensity, x0 = _blackjax_setup(target, 1, k_init)  # the same potential; x0 unused
    d = x0.shape[1]
    # laps' own choice of integrator for phase 2 (omelyan above 200 dimensions)
    coeffs = omelyan_coefficients if d > 200 else mclachlan_coefficients
    grads_per_step = len(coeffs) // 2
    mesh = jax.sharding.Mesh(jax.devices()[:1], "chains")

    def sample_init(k):  # init_to_uniform: uniform(-2, 2) on the unconstrained space
        return random.uniform(k, (d,), minval=-2.0, maxval=2.0)

    # laps_setup: the per-chain record's replication check off, and BlackJAX 1.7.1's
    # phase-2 step-size search corrected to keep the step it measured
    with laps_corrected(), Phase() as pt:
        info, g_per_step, acc_target, final_state = run_laps(
            logdensity_fn=logdensity,
            sample_init=sample_init,
            ndims=d,
            num_steps1=W,
            num_steps2=S * LAPS_STEPS_PER_SAMPLE * grads_per_step,
            num_chains=C,
            mesh=mesh,
            rng_key=k_run,
            early_stop=False,
            diagonal_preconditioning=True,
            steps_per_sample=LAPS_STEPS_PER_SAMPLE,
            r_end=0.01,
            diagnostics=True,
            superchain_size=1,
            all_chains_info=lambda position: ravel_pytree(position)[0],
        )
        jax.block_until_ready(final_state)
    if int(g_per_step) != grads_per_step:
        raise RuntimeError(f"LAPS used {g_per_step} gradients per step, expected {grads_per_step}")
    n1 = int(np.asarray(info["phase_1"]["step_size"]).shape[0])  # unadjusted steps per chain
    n2 = int(np.asarray(info["phase_2"]["step_size"]).shape[0])  # adjusted draws per chain
    pos = np.asarray(info["phase_2"]["all_chains_info"], dtype=np.float64)  # (draws, chains, d)
    draws = np.ascontiguousarray(np.swapaxes(pos, 0, 1))
    del info["phase_1"]["all_chains_info"], pos
    grads_warmup = float(n1 * 1 * C)  # isokinetic velocity Verlet: 1 gradient per step
    grads_sample = float(n2 * LAPS_STEPS_PER_SAMPLE * grads_per_step * C)
    frac_w = grads_warmup / (grads_warmup + grads_sample)
    tot = pt.result()
    time_warmup = {k: v * frac_w for k, v in tot.items()}
    time_sample = {k: v * (1.0 - frac_w) for k, v in tot.items()}
    p2 = info["phase_2"]
    info_out = {
        "grads_per_step": grads_per_step,
        "steps_per_sample": LAPS_STEPS_PER_SAMPLE,
        "phase1_steps_per_chain": n1,
        "phase2_draws_per_chain": n2,
        "accept_target": float(acc_target),
        "accept_mean": float(np.mean(np.asarray(p2["acc_prob"]))),
        "step_size_mean": float(np.asarray(p2["step_size"])[-1]),
        "step_size_phase1_final": float(np.asarray(info["phase_1"]["step_size"])[-1]),
        "L_phase1_final": float(np.asarray(info["phase_1"]["L"])[-1]),
        "time_split": "one laps() call; times split by gradient share",
        "time_total": tot,
    }
    return {
        "status": "ok",
        "draws": draws,
        "grads_warmup": grads_warmup,
        "grads_sample": grads_sample,
        "time_warmup": time_warmup,
        "time_sample": time_sample,
        "info": info_out,
        "num_chains": C,
    }


# -- metrics ----------------------------------------------------------------------------


def compute_metrics(raw, target, cfg):
    """The yardstick (``docs/benchmarks.md``, "What the columns mean"): ESS of ``x`` and
    ``x^2`` per gradient, warmup cost, second-moment bias and gradients to ``b2 < 0.01``."""
    import arviz as az
    from numpyro.diagnostics import effective_sample_size

    draws = raw["draws"]  # (C, N, D) unconstrained
    C, N, D = draws.shape
    ds = az.convert_to_dataset({"x": draws, "x2": draws**2})
    y = ess_x_and_x2(draws)
    ess, ess_x, ess_x2, rhat_x, rhat_x2 = y["ess"], y["ess_x"], y["ess_x2"], y["rhat_x"], y["rhat_x2"]
    ess_tail = np.asarray(az.ess(ds, method="tail")["x"].values)
    ess_np = np.asarray(effective_sample_size(draws))
    gw, gs = raw["grads_warmup"], raw["grads_sample"]
    tw, ts = raw["time_warmup"], raw["time_sample"]
    pooled = {"ess_bulk_min_pooled": ess}
    ess_x_min, ess_x2_min = float(np.min(ess_x)), float(np.min(ess_x2))
    per_1k, per_1k_warm = per_1k_grad(ess, gs), per_1k_grad(ess, gs + gw)
    per_1k_x = per_1k_grad(ess_x_min, gs)
    if C > cfg.num_chains:  # ChEES, LAPS: read in groups of as many chains as the others run
        g = ess_by_groups(draws, raw["info"].get("grads_sample_per_chain", gs / C),
                          raw["info"].get("grads_warmup_per_chain", gw / C), cfg.num_chains)
        ess, ess_x_min, ess_x2_min = (float(np.sum(g[k])) for k in ("ess", "ess_x", "ess_x2"))
        per_1k, per_1k_warm = float(np.median(g["per_1k"])), float(np.median(g["per_1k_with_warmup"]))
        per_1k_x = float(np.median(g["per_1k_x"]))
        pooled.update(ess_groups=len(g["ess"]), ess_group_chains=cfg.num_chains,
                      ess_per_1k_grad_groups=g["per_1k"].tolist(),
                      ess_per_1k_grad_pooled=per_1k_grad(pooled["ess_bulk_min_pooled"], gs))

    out = {
        "num_chains": C,
        "num_draws_per_chain": N,
        "dim": D,
        "ess_bulk_min": ess,
        "ess_bulk_min_stat": y["stat"],
        "ess_bulk_min_coord": y["coord"],
        "ess_x_min": ess_x_min,
        "ess_x2_bulk_min": ess_x2_min,
        "ess_tail_min": float(np.min(ess_tail)),
        "ess_numpyro_min": float(np.min(ess_np)),
        "rhat_max": float(max(np.max(rhat_x), np.max(rhat_x2))),
        "rhat_x_max": float(np.max(rhat_x)),
        "grads_warmup": gw,
        "grads_sample": gs,
        "grads_per_draw": gs / (C * N),
        "ess_per_1k_grad": per_1k,
        "ess_per_1k_grad_with_warmup": per_1k_warm,
        "ess_x_per_1k_grad": per_1k_x,
        "time_warmup_s": tw["net"],
        "time_sample_s": ts["net"],
        "compile_warmup_s": tw["compile"],
        "compile_sample_s": ts["compile"],
        "wall_warmup_s": tw["wall"],
        "wall_sample_s": ts["wall"],
        "ess_per_s": ess / ts["net"] if ts["net"] > 0 else float("nan"),
        "ess_per_s_with_warmup": ess / (ts["net"] + tw["net"]) if ts["net"] + tw["net"] > 0 else float("nan"),
        **pooled,
    }
    truth = second_moment_truth(target)
    if truth is not None:
        ex2, var_x2, ex2_mcse, source = truth
        b2, floor = second_moment_bias(draws, ex2, var_x2, ex2_mcse)
        # what b2_i would be on average for an unbiased sampler: its own MC error of the
        # mean of x_i^2 (1 / ESS(x_i^2)) plus the reference's (b2_floor_i)
        ess_x2_mean = np.asarray(az.ess(ds, method="mean")["x2"].values)
        with np.errstate(divide="ignore"):
            expected = 1.0 / ess_x2_mean + floor
        out["b2_truth"] = source
        out["b2_max"] = float(np.max(b2))
        out["b2_mean"] = float(np.mean(b2))
        out["b2_max_coord"] = int(np.argmax(b2))
        out["b2_floor_max"] = float(np.max(floor))
        out["b2_floor_mean"] = float(np.mean(floor))
        out["b2_expected_mean"] = float(np.mean(expected))
        out["b2_excess"] = float(np.mean(b2) / np.mean(expected))
        out["ess_x2_min"] = float(np.min(ess_x2_mean))
        grads_by_draw = raw.get("grads_by_draw")
        if grads_by_draw is None:  # a sampler that reports totals only: spread them evenly
            grads_by_draw = gs / (C * N)
        g_b2, n_b2, _ = gradients_to_b2(draws, grads_by_draw, gw / C, ex2, var_x2,
                                              num_chains=min(C, cfg.num_chains))
        out["grads_to_b2"] = g_b2
        out["draws_to_b2"] = n_b2
        out["b2_chains"] = min(C, cfg.num_chains)
        out["grads_per_chain_total"] = (gs + gw) / C
        ref = None if target.true_sd is not None else load_reference(target.name)
        mean, sd = ((np.zeros(D), np.asarray(target.true_sd)) if ref is None
                    else (np.asarray(ref["mean"]), np.asarray(ref["sd"])))
        out["mean_err_max_sd"] = float(np.max(np.abs(np.mean(draws, axis=(0, 1)) - mean) / sd))
        if ref is not None and "coords" in ref:
            out["b2_max_coord_name"] = ref["coords"][out["b2_max_coord"]]
            out["ess_bulk_min_coord_name"] = ref["coords"][out["ess_bulk_min_coord"]]
    out.update(raw["info"])
    return out


RUNNERS = {
    "nuts": lambda t, c, k: run_numpyro_sampler("nuts", t, c, k),
    "nuts_dense": lambda t, c, k: run_numpyro_sampler("nuts_dense", t, c, k),
    "adjusted_esh": lambda t, c, k: run_numpyro_sampler("adjusted_esh", t, c, k),
    "esh": lambda t, c, k: run_numpyro_sampler("esh", t, c, k),
    "tuned_hmc": lambda t, c, k: run_numpyro_sampler("tuned_hmc", t, c, k),
    "bj_mclmc": run_bj_mclmc,
    "bj_mams": run_bj_mams,
    "bj_chees": run_bj_chees,
    "bj_laps": run_bj_laps,
}


# -- environment / output ---------------------------------------------------------------


def machine_info():
    info = results_io.machine_info(("jax", "jaxlib", "numpyro", "blackjax", "optax", "arviz",
                                    "numpy", "scipy", "scikit-learn", "esh-kernels"))
    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = [str(d) for d in jax.devices()]
    return info


def _fmt(v, digits=3):
    return results_io.fmt(v, digits, small_digits=1)


#: the R-hat from which a benchmark cell is marked unconverged (``markdown_section``)
RHAT_CONVERGED = 1.05


#: the per-target tables: (header, record key); ``None`` is the compile time of both phases
DETAIL_COLUMNS = [
    ("chains", "num_chains"),
    ("min ESS (x, x^2)", "ess_bulk_min"),
    ("min ESS x", "ess_x_min"),
    ("min ESS x^2", "ess_x2_bulk_min"),
    ("grads/draw", "grads_per_draw"),
    ("ESS/1k grad", "ess_per_1k_grad"),
    ("ESS/1k grad (+warmup)", "ess_per_1k_grad_with_warmup"),
    ("warmup grads", "grads_warmup"),
    ("ESS/s", "ess_per_s"),
    ("ESS/s (+warmup)", "ess_per_s_with_warmup"),
    ("sample s", "time_sample_s"),
    ("warmup s", "time_warmup_s"),
    ("compile s", None),
    ("b2 max", "b2_max"),
    ("grads to b2<0.01", "grads_to_b2"),
    ("b2 mean", "b2_mean"),
    ("b2 mean / unbiased", "b2_excess"),
    ("R-hat max", "rhat_max"),
    ("accept", "accept_mean"),
    ("step size", "step_size_mean"),
    ("div.", "divergences"),
]


def _detail_cell(r, key):
    """A cell of a per-target table."""
    if key is None:
        return _fmt(r["compile_warmup_s"] + r["compile_sample_s"])
    if key == "grads_warmup":
        return f"{r[key]:.3g}"
    return _fmt(r.get(key))


def markdown_section(payload):
    meta = payload["meta"]
    seeds = sorted({r["seed"] for r in payload["results"] if r.get("seed") is not None})
    results = results_io.aggregate_seeds(payload["results"])
    m = meta["machine"]
    cfg = meta["config"]
    lines = []
    mode = meta["mode"]
    lines.append(f"## NumPyro / BlackJAX comparison ({mode} run)")
    lines.append("")
    lines.append("Generated by `benchmarks/run_numpyro.py`; do not edit this section by hand "
                 "(it is replaced on the next run of the same mode).")
    lines.append("")
    lines.append(f"- Command: `{meta['command']}`")
    lines.append(f"- Date: {meta['date']}")
    lines.append(f"- Machine: {m['nproc']} CPUs (`nproc`), {m['cpu_model']}, JAX backend "
                 f"`{m['jax_backend']}`, load average at start {_fmt_load(m['loadavg_at_start'])}")
    v = m["versions"]
    lines.append("- Versions: " + ", ".join(f"{k} {v[k]}" for k in v if v[k] is not None))
    lines.append(f"- Repository commit: {m['git_commit']}")
    lines.append(f"- Budget: {cfg['num_warmup']} warmup + {cfg['num_samples']} draws per chain, "
                 f"{cfg['num_chains']} chains ({cfg['chees_chains']} for ChEES), "
                 f"seeds {', '.join(map(str, seeds))}, float64. Every cell is the median over the "
                 "seeds, with [min-max] where there are several.")
    if meta.get("merged_from_earlier"):
        lines.append("- Some rows come from earlier invocations (merged into the JSON); their "
                     "dates are in `benchmarks/results/*.json`.")
    lines.append("")
    # summary: ESS per 1k gradients, samplers x targets
    tnames = [t for t in TARGET_NAMES if any(r["target"] == t for r in results)]

    def summary_table(title, cell):
        lines.extend([title, ""])
        lines.extend(results_io.sampler_table(results, TARGET_NAMES, SAMPLER_ORDER, SAMPLER_LABELS, cell))
        lines.append("")

    def med(r, k):
        n = len(r.get("seeds", ()))
        fewer = f" ({n} of {len(seeds)} seeds)" if 0 < n < len(seeds) else ""
        lo, hi = r.get("range", {}).get(k, (None, None))
        if n < 2 or lo == hi:
            return _fmt(r.get(k)) + fewer
        return (f"{_fmt(r.get(k))} [{_fmt(lo) if lo is not None else 'n.r.'}-"
                f"{_fmt(hi) if hi is not None else 'n.r.'}]{fewer}")

    def unconverged(r):
        """`` †`` where a seed's max R-hat (of x or x^2) reached :data:`RHAT_CONVERGED`."""
        worst = r.get("range", {}).get("rhat_max", (None, r.get("rhat_max")))[1]
        return " †" if worst is not None and worst >= RHAT_CONVERGED else ""

    def to_b2(r):
        if r.get("b2_max") is None and r.get("grads_to_b2") is None:
            return ""
        if r.get("grads_to_b2") is None:
            return f"not reached in {r['grads_per_chain_total']:.3g} (b2 {_fmt(r.get('b2_max'))})"
        return med(r, "grads_to_b2")

    summary_table("### Headline: min bulk ESS of x and x^2 per 1000 gradient evaluations, after warmup",
                  lambda r: med(r, "ess_per_1k_grad") + unconverged(r))
    lines.extend([f"† not converged: max R-hat of x or x^2 at least {RHAT_CONVERGED} in at least "
                  "one seed (the target's table gives it); such a cell is not an efficiency.", ""])
    summary_table("### The same with the warmup gradients counted",
                  lambda r: med(r, "ess_per_1k_grad_with_warmup") + unconverged(r))
    summary_table("### Gradients per chain, warmup included, until b2_max < 0.01 (and stays below); "
                  "n.r. = not reached within the run; † as above",
                  lambda r: to_b2(r) + unconverged(r) if to_b2(r) else "")
    summary_table("### For reference: min bulk ESS of x alone per 1000 gradients, after warmup "
                  "(the old headline; flatters antithetic trajectories)",
                  lambda r: med(r, "ess_x_per_1k_grad"))
    summary_table("### Warmup cost: gradient evaluations per chain (warmup seconds, all chains)",
                  lambda r: f"{r['grads_warmup'] / r['num_chains']:.3g} ({_fmt(r['time_warmup_s'])} s)")
    summary_table("### Second-moment bias: b2 max (b2 mean / its value for an unbiased sampler)",
                  lambda r: "" if r.get("b2_max") is None
                  else _fmt(r["b2_max"]) + ("" if r.get("b2_excess") is None else f" ({_fmt(r['b2_excess'])})"))
    for t in tnames:
        desc = next(r["target_description"] for r in results if r["target"] == t)
        lines.append(f"### {t}: {desc}")
        lines.append("")
        lines.append(_truth_line(t, [r for r in results if r["target"] == t and r["status"] == "ok"]))
        lines.append("")
        lines.extend(results_io.target_table(results, t, SAMPLER_ORDER, SAMPLER_LABELS, DETAIL_COLUMNS, _detail_cell))
        lines.append("")
    lines.append(COLUMN_DOC)
    return "\n".join(lines)


def _truth_line(tname, rows):
    """One sentence on where the target's second-moment truth comes from."""
    row = next((r for r in rows if r.get("b2_truth")), None)
    if row is None:
        if any(r.get("b2_max") is not None for r in rows):  # rows from before b2_truth was recorded
            return "Second-moment truth: analytic (`E[x^2] = sd^2`, `Var[x^2] = 2 sd^4`)."
        return "Second-moment truth: none available (no reference file when these rows were computed), so no b2."
    if row["b2_truth"] == "analytic":
        return "Second-moment truth: analytic (`E[x^2] = sd^2`, `Var[x^2] = 2 sd^4`)."
    ref = load_reference(tname) or {}
    run = (f"NumPyro NUTS, {ref.get('num_chains')} chains x {ref.get('num_samples_per_chain')} draws, "
           f"`target_accept_prob` {ref.get('target_accept_prob')}"
           + (f", run on `{ref['source_model']}` and transformed" if ref.get("source_model") != tname else "")
           + f"; min ESS(x^2) {_fmt(ref.get('summary', {}).get('ess_x2_min'))}, "
             f"max R-hat {_fmt(ref.get('summary', {}).get('rhat_max'))}") if ref else "file missing now"
    return (f"Second-moment truth: `benchmarks/reference/{tname}.json` ({run}). Reference noise floor "
            f"of b2: max {_fmt(row.get('b2_floor_max'))}, mean {_fmt(row.get('b2_floor_mean'))}.")


def _fmt_load(load):
    return "n/a" if not load else ", ".join(f"{x:.2f}" for x in load)


COLUMN_DOC = """### What the columns mean

- **min ESS (x, x^2)**, the headline: minimum over all scalar unconstrained coordinates
  (eight schools: `mu`, `log tau`, `theta_tilde`; centred eight schools: `mu`, `log tau`,
  `theta`; hier_500: `beta`, `mu`, `log sigma`, `log tau`, `z`) of ArviZ's rank-normalised
  bulk ESS (`arviz.ess(method="bulk")`) of `x` **and** of `x^2`, computed over all
  chains' post-warmup draws together (4 chains) (`benchmarks/yardstick.py`). ChEES (64
  chains) and LAPS (128) are read in groups of 4 chains (`yardstick.ess_by_groups`): the
  minimum over coordinates of noisy estimates is lower with fewer draws, so one pooled
  64-chain estimate credited the same sampler with about 23% more on the 100-D Gaussians
  (TunedHMC at fixed settings, 4 against 64 chains: 134 against 165 per 1000 gradients).
  **min ESS** columns then give the sum over groups; **ESS/1k grad** (both) the median over
  groups of a group's ESS per 1000 of its gradients; the JSON keeps the pooled value
  (`ess_per_1k_grad_pooled`). Rows of ChEES and LAPS dated before 2026-12-05 are pooled.
  The ESS of `x` alone (**min ESS x**, and the "for
  reference" summary table) rewards a trajectory that makes `x` antithetic while `x^2`
  hardly moves (about half a period on a Gaussian): NUTS and fixed-length kernels get an
  ESS of `x` above the number of draws there. The JSON also has the min tail ESS of `x`,
  the min of NumPyro's (non-rank-normalised) ESS and the max split R-hat of `x` and `x^2`.
- **Seeds**: every (target, sampler) is run once per seed (default 0, 1, 2; the key of a
  run is folded from the seed, the target and the sampler); every table shows the median
  over seeds, and the summary tables the [min-max] range too.
- **Gradients to b2 < 0.01**: the MCLMC and MAMS papers' yardstick. After each
  post-warmup draw `n`, `b2_max(n)` is computed from the running mean of `x_i^2` over the
  first `n` draws of the first 4 chains pooled (4 for every sampler, so that a 64-chain
  ensemble is not credited with its extra chains); the cell is the gradient evaluations per
  chain, warmup included, up to the first draw after which `b2_max` stays below 0.01 until
  the end of the run. **n.r.**: still at or above 0.01 at the end (the cell then gives the
  run's gradients per chain and the final `b2_max`); a median over seeds with a majority
  of n.r. is n.r. Truth as for **b2** below.
- **grads/draw**: gradient evaluations per post-warmup draw, per chain. NUTS: the
  `num_steps` extra field (leapfrog steps of the tree). esh_kernels: the `n_steps` extra
  field. BlackJAX MCLMC: 2 per step (isokinetic McLachlan). MAMS: 2 per integration step
  (`info.num_integration_steps`). ChEES: 1 per leapfrog step (velocity Verlet).
- **ESS/1k grad**: 1000 x min ESS / post-warmup gradient evaluations summed over chains.
  **(+warmup)** adds the warmup gradients (NumPyro kernels: the same extra field collected
  in `MCMC.warmup(collect_warmup=True)`; MCLMC: 2 x the tuner's step count; MAMS: 2 x the
  tuner's integration-step count; ChEES: the warmup's `num_integration_steps`). Not
  counted: the one gradient at initialisation. These counts were checked against a
  potential that counts its own calls (`jax.debug.callback`): they agree to within that
  initial gradient for NUTS, AdjustedESH, ESH, TunedHMC, MCLMC (tuning and sampling),
  MAMS (tuning and sampling) and ChEES (warmup and sampling).
- **warmup grads**: warmup gradient evaluations summed over chains.
- **ESS/s**: min ESS / wall-clock seconds of the sampling phase; **(+warmup)** divides by
  sampling + warmup seconds. Wall clock is measured with `block_until_ready` (and
  synchronous CPU dispatch, `jax_cpu_enable_async_dispatch=False`), minus the JAX
  tracing + lowering + XLA compilation time spent inside the phase (recorded through
  `jax.monitoring` event spans); **compile s** is that compilation time (warmup + sampling
  phases). NumPyro re-traces and re-compiles its sampling loop on every `warmup`/`run`
  call and, with `chain_method="sequential"`, once per chain, so the wall time including
  compilation is dominated by compilation on small problems; it is in the JSON
  (`wall_*_s`). NUTS runs its 4 chains one after another (`sequential`), the other
  samplers run all chains at once (vmapped / `vectorized`), where every transition lasts
  as long as the slowest chain's. Timings on a shared machine are noisy; the gradient
  counts are not.
- **b2** (second-moment bias), per unconstrained coordinate i:
  `b2_i = (E_hat[x_i^2] - E[x_i^2])^2 / Var[x_i^2]`, with `E_hat` the average over all
  chains' post-warmup draws; **b2 max** and **b2 mean** are the max and mean over i. The
  truth `E[x_i^2]`, `Var[x_i^2] = E[x_i^4] - E[x_i^2]^2` is analytic for the Gaussians
  (`sd_i^2`, `2 sd_i^4`: a squared relative error of the variance) and otherwise comes
  from a long NUTS run in `benchmarks/reference/<target>.json` (`make_reference.py`; for
  `eight_schools_centered` the non-centred model's draws mapped to the centred coordinates,
  since NUTS is biased on the centred funnel). An unbiased sampler has on average
  `b2_i ~ 1/ESS(x_i^2) + b2_floor_i`, where `b2_floor_i = MCSE_ref(E[x_i^2])^2 / Var[x_i^2]
  = 1/ESS_ref(x_i^2)` is the reference's own Monte Carlo error (stated under each target's
  heading; 0 for the Gaussians). **b2 mean / unbiased** divides b2 mean by the mean of that
  expectation (the sampler's `1/ESS(x_i^2)` from ArviZ `ess(method="mean")` of its squared
  draws, plus the floor): about 1 for an unbiased sampler, well above 1 (say > 3) when the
  sampler's second moments are biased (MCLMC and ESH are unadjusted and also carry the
  discretisation bias; divergences on the funnel show up here). It is as noisy as the ESS
  estimates of the squared draws, which are poor for short, badly mixed runs.
- **Warmup cost** (summary table): warmup gradient evaluations per chain (the total in
  **warmup grads** divided by the number of chains, 64 for ChEES) and the warmup wall clock
  (`warmup s`, all chains, compilation excluded).
- **R-hat max**: max over coordinates of ArviZ's rank-normalised split R-hat.
- **accept**: mean acceptance probability of the post-warmup transitions (not defined for
  MCLMC and ESH, which are unadjusted).
- **step size**: adapted step size, averaged over chains (each sampler's own units: NUTS
  and ChEES in the metric's whitened frame, MCLMC/MAMS/ESH kernels in their
  preconditioned frame).
- **div.**: divergent post-warmup transitions summed over chains (MCLMC: steps reverted
  because of a non-finite state).
"""


def measure(sname, target, cfg, key):
    """One sampler on one target: its metrics with ``status="ok"``, or why it did not run."""
    if sname.startswith("bj_") and _have_blackjax():
        return {"status": "skipped", "note": _have_blackjax()}
    raw = RUNNERS[sname](target, cfg, key)
    return {"status": "ok", **compute_metrics(raw, target, cfg)} if raw["status"] == "ok" else raw


def print_row(rec):
    """One line per attempt on the console (the traceback too when it failed)."""
    if rec["status"] == "ok":
        print(
            f"  s{rec['seed']} {rec['target']:14s} {rec['sampler']:13s} minESS {rec['ess_bulk_min']:8.1f}  "
            f"ESS/1kgrad {rec['ess_per_1k_grad']:7.1f} (+warmup {rec['ess_per_1k_grad_with_warmup']:6.1f})  "
            f"grads/draw {rec['grads_per_draw']:6.1f}  ESS/s {rec['ess_per_s']:8.1f}  "
            f"rhat {rec['rhat_max']:.3f}  b2 {_fmt(rec.get('b2_max'))}  "
            f"[{rec['script_seconds']:.0f}s, compile {rec['compile_warmup_s'] + rec['compile_sample_s']:.0f}s]"
            f"  self-check: {len(rec.get('info', {}).get('self_check', []))}",
            flush=True,
        )
    else:
        msg = rec.get("note") or rec.get("error")
        print(f"  s{rec['seed']} {rec['target']:14s} {rec['sampler']:13s} {rec['status'].upper()}: {msg}",
              flush=True)
        if rec["status"] == "error":
            print(rec["traceback"], flush=True)


def main(argv=None):
    global CLOCK
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small budgets (200 warmup + 200 draws)")
    size.add_argument("--smoke", action="store_true",
                      help=f"CI smoke run: {SMOKE_BUDGET} warmup + {SMOKE_BUDGET} draws on "
                           f"{' and '.join(SMOKE_TARGETS)} only (unless --targets), no markdown "
                           "unless --md is given")
    p.add_argument("--targets", nargs="+", choices=TARGET_NAMES, default=None,
                   help="default: all (--smoke: " + " ".join(SMOKE_TARGETS) + ")")
    p.add_argument("--samplers", nargs="+", choices=SAMPLER_ORDER, default=list(SAMPLER_ORDER))
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="seeds to run, one full pass each (default 0 1 2; --quick and --smoke: 0); "
                        "the tables give the median over seeds with the min-max range")
    p.add_argument("--num-warmup", type=int, default=None,
                   help=f"override (default 1000; 200 with --quick, {SMOKE_BUDGET} with --smoke)")
    p.add_argument("--num-samples", type=int, default=None,
                   help=f"override (default 1000; 200 with --quick, {SMOKE_BUDGET} with --smoke)")
    p.add_argument("--num-chains", type=int, default=4)
    p.add_argument("--chees-chains", type=int, default=64)
    runner.add_output_options(
        p,
        out_help="JSON path (default benchmarks/results/numpyro[_quick|_smoke].json)",
        md_help="markdown file whose run_numpyro section is (re)written (default "
                "docs/benchmarks.md; none with --smoke)",
        no_md_help="do not touch the markdown file",
        fresh_help="do not merge with earlier results of the same configuration in --out",
        merge_from_help="also merge the rows of these result files (same configuration; e.g. peers "
                        "run in another process) and, with --render, only that",
        render_help="run nothing: rewrite --out (merged with --merge-from) and its markdown section",
        compile_cache_help="JAX persistent compilation cache directory ('' to disable); only saves "
                           "wall time of the script, compile time is excluded from the timings anyway",
    )
    args = p.parse_args(argv)

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    default_budget = {"smoke": SMOKE_BUDGET, "quick": 200, "full": 1000}[mode]
    if args.targets is None:
        args.targets = list(SMOKE_TARGETS if args.smoke else TARGET_NAMES)
    if args.md is None and not args.smoke:
        args.md = os.path.join(REPO, "docs", "benchmarks.md")
    cfg = Config(
        num_warmup=args.num_warmup or default_budget,
        num_samples=args.num_samples or default_budget,
        num_chains=args.num_chains,
        chees_chains=args.chees_chains,
        seed=0,
    )
    if args.seeds is None:
        args.seeds = [0] if args.quick or args.smoke else [0, 1, 2]
    if args.num_warmup or args.num_samples:
        mode = f"{mode}-w{cfg.num_warmup}-s{cfg.num_samples}"
    suffix = "_smoke" if args.smoke else "_quick" if args.quick else ""
    runner.use_compile_cache(args.compile_cache)
    CLOCK = CompileClock()

    cfg_dict = {k: v for k, v in cfg.__dict__.items() if k != "seed"}  # seeds are per record
    run = runner.BenchmarkRun(
        "run_numpyro", args, argv, out=args.out or os.path.join(HERE, "results", f"numpyro{suffix}.json"),
        mode=mode, config=cfg_dict, machine=machine_info(), target_order=TARGET_NAMES,
        sampler_order=SAMPLER_ORDER, markdown=markdown_section, clear_jax_caches=True,
        meta={"conventions": {
            "ess": "min over unconstrained coordinates of arviz bulk ESS over all chains",
            "grads": "summed over chains",
            "times": "wall clock minus JAX trace/lower/compile spans inside the phase",
        }},
    )
    targets = make_targets()
    print(f"[run_numpyro] {mode}: {cfg_dict}; {run.machine['nproc']} CPUs, {run.machine['cpu_model']}", flush=True)
    if args.render:
        run.render()
        return
    for seed in args.seeds:
        for ti, tname in runner.selected(TARGET_NAMES, args.targets):
            for si, sname in runner.selected(SAMPLER_ORDER, args.samplers):
                key = random.fold_in(random.fold_in(random.PRNGKey(seed), ti), si)
                rec = run.attempt(
                    {"target": tname, "target_description": targets[tname].description, "sampler": sname,
                     "sampler_label": SAMPLER_LABELS[sname], "seed": seed, "date": run.date},
                    measure, sname, targets[tname], dataclasses.replace(cfg, seed=seed), key)
                print_row(rec)
    run.finish()


if __name__ == "__main__":
    main()
