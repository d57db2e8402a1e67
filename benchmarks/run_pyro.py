#!/usr/bin/env python
"""ESS per gradient / per second: Pyro NUTS and HMC against the esh_kernels Pyro kernels
(``pyro.infer.MCMC`` one chain, and ``BatchedMCMC`` many chains as one batch), on eight
schools (non-centred) and a logistic regression, in one process.

    python benchmarks/run_pyro.py [--quick] [--targets ...] [--samplers ...] [--seed 0]

Writes ``benchmarks/results/pyro.json`` (``pyro_quick.json`` with ``--quick``) and the
section "Pyro" at the end of ``docs/benchmarks.md`` (between ``<!-- BEGIN run_pyro:MODE -->``
and ``<!-- END run_pyro:MODE -->``; the rest of the file is left alone). Same structure
and metrics as ``benchmarks/run_numpyro.py``; the differences:

* torch float64, ``torch.set_num_threads(1)``; every sampler sees the same Pyro model
  (constrained sites through Pyro's transforms; chains start from ``init_to_uniform``).
* ESS: min over the unconstrained coordinates (``tau`` on the log scale) of ArviZ's bulk
  ESS over all chains of a run.
* Times are wall clock of everything a user waits for in ``MCMC.run`` (model set-up,
  tracing/compilation with ``jit_compile=True``, warmup, sampling): "ESS/s (+warmup)"
  divides by all of it. Once per process, before any timing, each sampler kind runs a
  tiny untimed problem, so lazy imports (the first ``make_fx`` call pulls in sympy and
  friends: about 3 s) are not charged to whichever sampler happens to run first; the
  tracing of each benchmarked model is charged to its run.
* Gradients: the esh_kernels kernels report them (``diagnostics()``); Pyro's NUTS/HMC
  are counted by wrapping their potential function (one call = one gradient evaluation
  in the leapfrog; the handful of step-size probes are counted too).
"""

import argparse
import contextlib
import os
import sys
import time
import warnings

import numpy as np
import torch

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import pyro.ops.integrator  # noqa: E402
from pyro.infer import HMC, MCMC, NUTS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import esh_kernels.pyro as ekp  # noqa: E402
import esh_kernels.pyro._model as ekp_model  # noqa: E402
import results_io  # noqa: E402
import runner  # noqa: E402
from yardstick import (  # noqa: E402
    ess_by_groups, ess_x_and_x2, median_not_reached, per_1k_grad, second_moments_by_chain,
)

from targets import breast_cancer_data, coordinate_names, eight_schools_data, load_reference  # noqa: E402

# The eight-schools data and the breast-cancer design matrix are the ones run_numpyro.py
# uses (benchmarks/targets.py).
TARGET_NAMES = ("eight_schools", "logreg")
SAMPLER_ORDER = (
    "nuts", "nuts_jit", "hmc",
    "adjusted_esh", "esh", "tuned_hmc",
    "adjusted_esh_batched", "esh_batched", "tuned_hmc_batched",
)
SAMPLER_LABELS = {
    "nuts": "Pyro NUTS (defaults)",
    "nuts_jit": "Pyro NUTS (jit_compile=True)",
    "hmc": "Pyro HMC (defaults)",
    "adjusted_esh": "AdjustedESH, MCMC, defaults",
    "esh": "ESH, MCMC, defaults",
    "tuned_hmc": "TunedHMC, MCMC, defaults",
    "adjusted_esh_batched": "AdjustedESH, BatchedMCMC, jit",
    "esh_batched": "ESH, BatchedMCMC, jit",
    "tuned_hmc_batched": "TunedHMC, BatchedMCMC, jit",
}
KERNEL_CLASS = {"adjusted_esh": "AdjustedESH", "esh": "ESH", "tuned_hmc": "TunedHMC"}
BASELINE = "nuts"


# -- targets -------------------------------------------------------------------------------


class Target:
    def __init__(self, name, description, model, dim):
        self.name, self.description, self.model, self.dim = name, description, model, dim


def _eight_schools_data():
    y, sigma = eight_schools_data()
    return torch.tensor(y), torch.tensor(sigma)


def _breast_cancer():
    X, y = breast_cancer_data()
    dtype = torch.get_default_dtype()  # numpy's float64 would otherwise stay float64
    return torch.tensor(X, dtype=dtype), torch.tensor(y, dtype=dtype)


def make_targets():
    y8, s8 = _eight_schools_data()

    def eight_schools():
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("school", 8):
            theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(mu + tau * theta_tilde, s8), obs=y8)

    X, yb = _breast_cancer()
    p = X.shape[1]

    XT = X.T.contiguous()

    def logreg():
        w = pyro.sample("w", dist.Normal(torch.zeros(p), 1.0).to_event(1))
        # w @ X.T rather than X @ w: the same for one chain, and batch-friendly (a leading
        # chain axis on w) for BatchedMCMC
        pyro.sample("y", dist.Bernoulli(logits=w @ XT).to_event(1), obs=yb)

    return {
        "eight_schools": Target("eight_schools", "eight schools, non-centred (10-D)", eight_schools, 10),
        "logreg": Target(
            "logreg", f"logistic regression, breast cancer ({X.shape[0]} x {p}, w ~ N(0, 1))", logreg, p
        ),
    }


# -- running -------------------------------------------------------------------------------


class _Counter:
    """Wraps a potential function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def _counting(cls):
    class Counting(cls):
        def _initialize_model_properties(self, model_args, model_kwargs):
            super()._initialize_model_properties(model_args, model_kwargs)
            self.potential_fn = self.counter = _Counter(self.potential_fn)

    Counting.__name__ = cls.__name__
    return Counting


def _unconstrained(samples, transforms):
    """``{site: (C, N, ...)}`` constrained -> ``(C, N, D)`` unconstrained, sites sorted, and
    the coordinates' names (``targets.coordinate_names``, as ``benchmarks/reference/*.json``
    name them)."""
    parts, shapes = [], {}
    for name in sorted(samples):
        z = samples[name]
        if name in transforms:
            z = transforms[name](z)
        shapes[name] = tuple(z.shape[2:])
        parts.append(z.reshape(z.shape[0], z.shape[1], -1))
    return torch.cat(parts, dim=-1).detach().cpu().numpy().astype(np.float64), coordinate_names(shapes)


class _Clock:
    """``hook_fn`` for ``MCMC`` that notes when sampling starts."""

    def __init__(self):
        self.t_sample = None

    def __call__(self, kernel, params, stage, i):
        if self.t_sample is None and stage.startswith("Sample"):
            self.t_sample = time.perf_counter()


class _Timed:
    """Wraps a function; adds up the wall time and the number of its calls."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t
            self.calls += 1


@contextlib.contextmanager
def _timed_gradients():
    """Times every gradient evaluation while the block runs: Pyro's ``potential_grad``
    (NUTS/HMC leapfrog steps) and the esh_kernels per-step graphs (``Compiled``: one call
    is one leapfrog step, potential energy, gradient and the kernel's update included)."""
    integrator, compiled = pyro.ops.integrator, ekp_model.Compiled
    original_grad, original_call = integrator.potential_grad, compiled.__call__
    timer = _Timed(original_grad)

    def timed_call(self, *args):
        t = time.perf_counter()
        try:
            return original_call(self, *args)
        finally:
            timer.seconds += time.perf_counter() - t
            timer.calls += 1

    integrator.potential_grad, compiled.__call__ = timer, timed_call
    try:
        yield timer
    finally:
        integrator.potential_grad, compiled.__call__ = original_grad, original_call


def run_mcmc_sampler(name, target, cfg, seed):
    pyro.set_rng_seed(seed)
    if name in ("nuts", "nuts_jit", "hmc"):
        cls = _counting(HMC if name == "hmc" else NUTS)
        kw = {"jit_compile": True, "ignore_jit_warnings": True} if name == "nuts_jit" else {}
        kernel = cls(target.model, **kw)
    else:
        cls = getattr(ekp, KERNEL_CLASS[name], None)
        if cls is None:
            return {"status": "skipped", "note": f"esh_kernels.pyro.{KERNEL_CLASS[name]} is not available yet"}
        kernel = cls(target.model)  # the one-word swap: the kernel's defaults
    kernel.setup = setup_timer = _Timed(kernel.setup)
    kernel.sample = sample_timer = _Timed(kernel.sample)
    clock = _Clock()
    grads = {}

    def hook(kernel_, params, stage, i):
        if stage.startswith("Sample") and "warmup" not in grads and hasattr(kernel_, "counter"):
            grads["warmup"] = kernel_.counter.calls
        clock(kernel_, params, stage, i)

    mcmc = MCMC(kernel, num_samples=cfg.num_samples, warmup_steps=cfg.num_warmup,
                num_chains=1, disable_progbar=True, hook_fn=hook)
    with warnings.catch_warnings(), _timed_gradients() as grad_timer:
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        mcmc.run()
        t1 = time.perf_counter()
    t_sample = clock.t_sample or t1
    draws, coords = _unconstrained(mcmc.get_samples(group_by_chain=True), mcmc.transforms)
    diag = mcmc.diagnostics()
    info = {"num_chains": 1, "time_breakdown": {
        "setup_s": setup_timer.seconds,
        "gradient_s": grad_timer.seconds,
        "gradient_calls": grad_timer.calls,
        "kernel_other_s": sample_timer.seconds - grad_timer.seconds,
        "mcmc_loop_s": (t1 - t0) - setup_timer.seconds - sample_timer.seconds,
    }}
    if hasattr(kernel, "counter"):
        gw, gs = float(grads.get("warmup", 0)), float(kernel.counter.calls - grads.get("warmup", 0))
        info["step_size_mean"] = float(kernel.step_size)
        info["accept_mean"] = float(diag["acceptance rate"]["chain 0"])
    else:
        gw = float(diag["gradient evaluations (warmup)"]["chain 0"])
        gs = float(diag["gradient evaluations (sampling)"]["chain 0"])
        info["step_size_mean"] = float(diag["step size"]["chain 0"])
        if "acceptance rate" in diag:
            info["accept_mean"] = float(diag["acceptance rate"]["chain 0"])
        if "trajectory length" in diag:
            info["trajectory_length_mean"] = float(diag["trajectory length"]["chain 0"])
        info["compiled"] = dict(kernel.compiled_modes)
    info["divergences"] = int(sum(len(v) for v in diag["divergences"].values()))
    return {
        "status": "ok", "draws": draws, "coords": coords, "grads_warmup": gw, "grads_sample": gs,
        "grads_warmup_per_chain": [gw], "grads_sample_per_chain": [gs],
        "time_warmup": t_sample - t0, "time_sample": t1 - t_sample, "info": info,
    }


def run_batched_sampler(name, target, cfg, seed):
    base = name[: -len("_batched")]
    cls = getattr(ekp, KERNEL_CLASS[base], None)
    if cls is None:
        return {"status": "skipped", "note": f"esh_kernels.pyro.{KERNEL_CLASS[base]} is not available yet"}
    pyro.set_rng_seed(seed)
    kernel = cls(target.model, jit_compile=True, ignore_jit_warnings=True)
    mcmc = ekp.BatchedMCMC(kernel, num_samples=cfg.num_samples, warmup_steps=cfg.num_warmup,
                           num_chains=cfg.batched_chains, disable_progbar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        mcmc.run()
        t1 = time.perf_counter()
    draws, coords = _unconstrained(mcmc.get_samples(group_by_chain=True), mcmc.transforms)
    diag = mcmc.diagnostics()
    C = cfg.batched_chains
    per = lambda key: [diag[key][f"chain {c}"] for c in range(C)]  # noqa: E731
    gw, gs = float(sum(per("gradient evaluations (warmup)"))), float(sum(per("gradient evaluations (sampling)")))
    info = {
        "num_chains": C,
        "step_size_mean": float(np.mean(per("step size"))),
        "divergences": int(sum(len(v) for v in per("divergences"))),
        "timings": mcmc.timings,
        "compiled": dict(kernel.compiled_modes),
    }
    if "acceptance rate" in diag:
        info["accept_mean"] = float(np.mean(per("acceptance rate")))
    if "trajectory length" in diag:
        info["trajectory_length_mean"] = float(np.mean(per("trajectory length")))
    t_sample = t1 - mcmc.timings["sampling"]
    return {
        "status": "ok", "draws": draws, "coords": coords, "grads_warmup": gw, "grads_sample": gs,
        "grads_warmup_per_chain": per("gradient evaluations (warmup)"),
        "grads_sample_per_chain": per("gradient evaluations (sampling)"),
        "time_warmup": t_sample - t0, "time_sample": t1 - t_sample, "info": info,
    }


def prime(samplers):
    """Untimed tiny runs: lazy imports and first-call costs of each sampler kind."""

    def tiny():
        pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    t = Target("prime", "", tiny, 2)
    cfg = Config(num_warmup=3, num_samples=2, batched_chains=2, seed=0)
    done = set()
    for s in samplers:
        kind = s.replace("_batched", "") + ("_b" if s.endswith("_batched") else "")
        if kind in done:
            continue
        done.add(kind)
        try:
            (run_batched_sampler if s.endswith("_batched") else run_mcmc_sampler)(s, t, cfg, 0)
        except Exception:  # noqa: BLE001 - reported when the real run fails
            pass


# -- metrics ---------------------------------------------------------------------------------


class Config:
    def __init__(self, num_warmup, num_samples, batched_chains, seed):
        self.num_warmup, self.num_samples = num_warmup, num_samples
        self.batched_chains, self.seed = batched_chains, seed

    def as_dict(self):
        return dict(self.__dict__)


#: the chains of the rows BatchedMCMC is compared with (Pyro's MCMC, one chain): its many
#: chains are read in groups of this many (``yardstick.ess_by_groups`` says why)
ONE_CHAIN = 1


def second_moments(draws, coords, grads_warmup_per_chain, grads_sample_per_chain, target_name):
    """The second-moment columns (``yardstick.second_moments_by_chain``: each chain read
    alone, as the ESS of a ``BatchedMCMC`` row is) against the target's reference
    (``benchmarks/reference/<target>.json``, the long NumPyro NUTS run of
    ``make_reference.py``: the same model, the same unconstrained coordinates). ``{}`` where
    the target has no reference or names its coordinates differently."""
    ref = load_reference(target_name)
    if ref is None or list(ref.get("coords", [])) != list(coords):
        return {}
    ex2, var_x2, mcse = (np.asarray(ref[k], dtype=np.float64) for k in ("ex2", "var_x2", "ex2_mcse"))
    return second_moments_by_chain(draws, grads_warmup_per_chain, grads_sample_per_chain, ex2, var_x2, mcse)


def compute_metrics(raw, target_name):
    import arviz as az

    draws = raw["draws"]
    C, N, D = draws.shape
    y = ess_x_and_x2(draws)  # the headline: min bulk ESS over x and x^2
    ess = y["ess"]
    ess_tail = np.asarray(az.ess(az.convert_to_dataset({"x": draws}), method="tail")["x"].values)
    rhat = np.maximum(y["rhat_x"], y["rhat_x2"])
    gw, gs = raw["grads_warmup"], raw["grads_sample"]
    tw, ts = raw["time_warmup"], raw["time_sample"]
    pooled = {}
    ess_x_min = float(np.min(y["ess_x"]))
    per_1k, per_1k_warm, per_1k_x = per_1k_grad(ess, gs), per_1k_grad(ess, gs + gw), per_1k_grad(ess_x_min, gs)
    if C > ONE_CHAIN:  # BatchedMCMC: each chain read alone, as the one-chain rows are
        g = ess_by_groups(draws, raw["grads_sample_per_chain"], raw["grads_warmup_per_chain"], ONE_CHAIN)
        pooled = {"ess_bulk_min_pooled": ess, "ess_per_1k_grad_pooled": per_1k, "ess_groups": len(g["ess"])}
        ess, ess_x_min = float(np.sum(g["ess"])), float(np.sum(g["ess_x"]))
        per_1k, per_1k_warm = float(np.median(g["per_1k"])), float(np.median(g["per_1k_with_warmup"]))
        per_1k_x = float(np.median(g["per_1k_x"]))
    out = {
        "num_chains": C,
        "num_draws_per_chain": N,
        "dim": D,
        "ess_bulk_min": ess,
        "ess_bulk_min_stat": y["stat"],
        "ess_bulk_min_coord": y["coord"],
        "ess_x_min": ess_x_min,
        "ess_x_per_1k_grad": per_1k_x,
        "ess_tail_min": float(np.min(ess_tail)),
        "rhat_max": float(np.nanmax(rhat)) if C > 1 else None,
        "grads_warmup": gw,
        "grads_sample": gs,
        "grads_per_draw": gs / (C * N),
        "ess_per_1k_grad": per_1k,
        "ess_per_1k_grad_with_warmup": per_1k_warm,
        "time_warmup_s": tw,
        "time_sample_s": ts,
        "time_total_s": tw + ts,
        "ess_per_s": ess / ts if ts > 0 else float("nan"),
        "ess_per_s_with_warmup": ess / (tw + ts),
        **pooled,
        **second_moments(draws, raw["coords"], raw["grads_warmup_per_chain"],
                         raw["grads_sample_per_chain"], target_name),
    }
    out.update(raw["info"])
    return out


def median_record(reps):
    """Per-repeat metrics -> one record: medians of the numbers, ``None`` ("not reached")
    counting as larger than any (``yardstick.median_not_reached``); the rest from the first."""
    out = dict(reps[0])
    for key, value in reps[0].items():
        vals = [r.get(key) for r in reps]
        if results_io.is_number_or_none(vals):
            out[key] = median_not_reached(vals)
    out["num_repeats"] = len(reps)
    return out


# -- output ----------------------------------------------------------------------------------


def machine_info():
    info = results_io.machine_info(("torch", "pyro-ppl", "arviz", "numpy", "scikit-learn",
                                    "esh-kernels"))
    info["torch_threads"] = torch.get_num_threads()
    return info


def _fmt(v, digits=3):
    return results_io.fmt(v, digits, small_digits=2)


COLUMNS = [
    ("chains", "num_chains"),
    ("min ESS", "ess_bulk_min"),
    ("grads/draw", "grads_per_draw"),
    ("ESS/1k grad", "ess_per_1k_grad"),
    ("ESS/1k grad (+warmup)", "ess_per_1k_grad_with_warmup"),
    ("ESS/s", "ess_per_s"),
    ("ESS/s (+warmup)", "ess_per_s_with_warmup"),
    ("x NUTS (ESS/s +warmup)", "speedup"),
    ("warmup+setup s", "time_warmup_s"),
    ("sample s", "time_sample_s"),
    ("grads to b2<0.01", "grads_to_b2"),
    ("b2 max", "b2_max"),
    ("b2 mean / unbiased", "b2_excess"),
    ("R-hat max", "rhat_max"),
    ("accept", "accept_mean"),
    ("step size", "step_size_mean"),
    ("div.", "divergences"),
]


def markdown_section(payload):
    meta, results = payload["meta"], payload["results"]
    m, cfg = meta["machine"], meta["config"]
    lines = [
        "## Pyro",
        "",
        "Generated by `benchmarks/run_pyro.py`; do not edit this section by hand (it is "
        "replaced on the next run of the same mode).",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}",
        f"- Machine: {m['nproc']} CPUs (`nproc`), {m['cpu_model']}, torch threads "
        f"{m['torch_threads']}, load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])} "
        "(a shared machine: timings are noisy, gradient counts are not)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- Repository commit: {m['git_commit']}",
        f"- Budget: {cfg['num_warmup']} warmup + {cfg['num_samples']} draws per chain; "
        f"`pyro.infer.MCMC` samplers 1 chain, `BatchedMCMC` {cfg['batched_chains']} chains; "
        f"seed {cfg['seed']}; {cfg.get('repeats', 1)} runs per cell with different seeds, "
        "medians shown (each run's numbers are in the JSON); float64",
    ]
    if meta.get("merged_from_earlier"):
        dates = sorted({r.get("date", "") for r in results})
        lines.append("- Rows from several invocations of the same configuration are merged "
                     f"(dates {', '.join(dates)}; each row's date is in the JSON)")
    lines.append("")
    tnames = [t for t in TARGET_NAMES if any(r["target"] == t for r in results)]
    lines.append("### Summary: min bulk ESS per second, warmup and set-up included (x Pyro NUTS)")
    lines.append("")
    lines.extend(results_io.sampler_table(
        results, TARGET_NAMES, SAMPLER_ORDER, SAMPLER_LABELS,
        lambda r: f"{_fmt(r['ess_per_s_with_warmup'])}"
        + (f" ({_fmt(r['speedup'])}x)" if r.get("speedup") else "")))
    lines.append("")
    lines.append("### Gradients per chain, warmup included, until b2_max < 0.01 (and stays below), "
                 "each chain alone; n.r. = not reached within the run")
    lines.append("")
    lines.extend(results_io.sampler_table(results, TARGET_NAMES, SAMPLER_ORDER, SAMPLER_LABELS, _to_b2_cell))
    lines.append("")
    for t in tnames:
        desc = next(r["target_description"] for r in results if r["target"] == t)
        lines.append(f"### {t}: {desc}")
        lines.append("")
        lines.extend(results_io.target_table(
            results, t, SAMPLER_ORDER, SAMPLER_LABELS, COLUMNS,
            lambda r, key: _to_b2_cell(r) if key == "grads_to_b2" else _fmt(r.get(key))))
        lines.append("")
    lines.extend(time_breakdown_table(results))
    lines.append(COLUMN_DOC)
    return "\n".join(lines)


def _to_b2_cell(r):
    """Gradients to ``b2_max < 0.01``: the number, or n.r. with the end-of-run ``b2_max``;
    for ``BatchedMCMC``, how many of its chains reached it; blank for rows without it."""
    if "b2_max" not in r:
        return ""
    if r.get("grads_to_b2") is None:
        cell = f"n.r. in {_fmt(r['grads_per_chain_total'])} (b2 {_fmt(r['b2_max'])})"
    else:
        cell = _fmt(r["grads_to_b2"])
    if r["num_chains"] > 1:
        cell += f" ({r['b2_reached_chains']:.0f} of {r['num_chains']:.0f} chains)"
    return cell


def time_breakdown_table(results):
    """Where the wall clock of the one-chain ``pyro.infer.MCMC`` runs goes (medians)."""
    rows = [r for r in results if r["status"] == "ok" and "time_breakdown" in r]
    if not rows:
        return []
    lines = [
        "### Where the time goes: one chain, `pyro.infer.MCMC` (median run)",
        "",
        "| target | sampler | total s | set-up s | gradient steps s | steps | ms/step "
        "| kernel's other work s | MCMC loop s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reps = r.get("repeats") or [r]
        b = {k: float(np.median([x["time_breakdown"][k] for x in reps]))
             for k in reps[0]["time_breakdown"]}
        ms = 1e3 * b["gradient_s"] / b["gradient_calls"] if b["gradient_calls"] else None
        lines.append(
            f"| {r['target']} | {SAMPLER_LABELS[r['sampler']]} | {_fmt(r['time_total_s'])} "
            f"| {_fmt(b['setup_s'])} | {_fmt(b['gradient_s'])} | {int(b['gradient_calls'])} "
            f"| {_fmt(ms)} | {_fmt(b['kernel_other_s'])} | {_fmt(b['mcmc_loop_s'])} |")
    lines += [
        "",
        "Set-up: `kernel.setup` (model tracing, initial point, and for esh_kernels the "
        "recording of the step graph). Gradient steps: Pyro NUTS's `potential_grad` calls "
        "(potential energy and autograd gradient, eager), or the esh_kernels compiled step "
        "calls (one leapfrog step: potential energy, gradient and the kernel's position and "
        "velocity update, one TorchScript graph). Kernel's other work: the rest of "
        "`kernel.sample` (random numbers, accept/reject, warmup adaptation, self-check, "
        "statistics). MCMC loop: the rest of `MCMC.run` (Pyro's sampling loop, hooks, "
        "collecting draws).",
        "",
    ]
    return lines


COLUMN_DOC = """### What the columns mean

- **min ESS**: minimum over the unconstrained coordinates (eight schools: `mu`, `log tau`,
  `theta_tilde`; logistic regression: the 31 coefficients) of ArviZ's rank-normalised bulk
  ESS of `x` and of `x^2` (the slower of the two counts), over the run's draws. A
  `BatchedMCMC` run is read chain by chain, as the one-chain rows are
  (`yardstick.ess_by_groups`): its **min ESS** is the sum of its chains' and its **ESS/1k
  grad** the median over its chains (a minimum over coordinates of estimates from 32 times
  more draws reads higher; the JSON keeps the pooled value, `ess_per_1k_grad_pooled`). Rows
  dated before 2026-12-05 are pooled.
- **grads/draw**: gradient evaluations per post-warmup draw per chain (esh_kernels: the
  kernels' own count; Pyro NUTS/HMC: calls of the potential function).
- **ESS/1k grad**: 1000 x min ESS / post-warmup gradient evaluations summed over chains;
  **(+warmup)** adds the warmup gradients.
- **ESS/s**: min ESS / seconds of the sampling phase; **ESS/s (+warmup)** divides by the
  whole `run()`: model set-up (incl. `jit_compile` tracing), warmup and sampling.
  **x NUTS** is that number over Pyro NUTS's (defaults, `jit_compile=False`, one chain,
  the same budget) on the same target in the same run of the script.
- **grads to b2<0.01**, **b2 max**, **b2 mean / unbiased**: the second-moment yardstick of the
  NumPyro tables, each chain read alone (`yardstick.second_moments_by_chain`), against the long NumPyro
  NUTS reference of the same model (`benchmarks/reference/<target>.json`, same unconstrained
  coordinates). `b2_i = (mean of x_i^2 - E[x_i^2])^2 / Var[x_i^2]`; **b2 max** is its maximum
  over coordinates at the end of the run; **b2 mean / unbiased** is its mean over
  coordinates divided by what an unbiased chain's own Monte Carlo error gives on average
  (`1 / ESS(x_i^2)` plus the reference's floor): about 1 without bias, higher with it.
  **grads to b2<0.01** counts the chain's gradients, warmup included, until `b2_max` falls
  below 0.01 and stays there (its sampling gradients spread evenly over its draws). A
  `BatchedMCMC` row gives the medians over its chains and how many reached it; a one-chain
  row the median over its runs (n.r. where most did not reach it). One chain of 1000 draws
  often does not reach it without any bias: with an ESS of `x_i^2` of 300-600 each
  coordinate's `b2_i` is about `1/ESS` times a chi-square variable of one degree of freedom,
  and the maximum of 10-31 of those is about 5-9 times `1/ESS`.
- **R-hat max**: ArviZ rank-normalised split R-hat over chains (batched runs only).
- **accept**: mean acceptance probability after warmup (not defined for ESH).
- **step size**: tuned step size (mean over chains; each sampler's own units).
- **div.**: divergent post-warmup transitions summed over chains.
- A `BatchedMCMC` transition lasts as long as its slowest chain's (chains that are done
  wait, masked), so its gradient count (each chain's own steps) understates the work
  done; its ESS/s is the honest number.
"""


def measure(sname, target, cfg, seed, repeats):
    """``repeats`` runs of one sampler on one target, seeds ``seed + 7919 * r``: the median
    record with every run's metrics under ``repeats``, or why it did not run."""
    run_sampler = run_batched_sampler if sname.endswith("_batched") else run_mcmc_sampler
    reps = []
    for r in range(repeats):
        raw = run_sampler(sname, target, cfg, seed + 7919 * r)
        if raw["status"] != "ok":
            break
        reps.append(compute_metrics(raw, target.name))
    if not reps:
        return raw
    return {"status": "ok", **median_record(reps), "repeats": reps}


def add_speedups(merged):
    """``speedup``: each finished record's ESS/s (+warmup) over Pyro NUTS's on its target."""
    for t in TARGET_NAMES:
        base = next((r for r in merged if r["target"] == t and r["sampler"] == BASELINE
                     and r["status"] == "ok"), None)
        for r in merged:
            if r["target"] == t and r["status"] == "ok" and base is not None:
                r["speedup"] = r["ess_per_s_with_warmup"] / base["ess_per_s_with_warmup"]


def print_row(rec):
    """One line per attempt on the console (the traceback too when it failed)."""
    tname, sname = rec["target"], rec["sampler"]
    if rec["status"] == "ok":
        print(
            f"  {tname:14s} {sname:22s} minESS {rec['ess_bulk_min']:8.1f}  "
            f"ESS/1kgrad {rec['ess_per_1k_grad']:7.1f} (+warmup {rec['ess_per_1k_grad_with_warmup']:6.1f})  "
            f"grads/draw {rec['grads_per_draw']:6.1f}  ESS/s {rec['ess_per_s']:8.1f} "
            f"(+warmup {rec['ess_per_s_with_warmup']:8.1f})  [{rec['time_total_s']:.1f}s]",
            flush=True,
        )
    else:
        print(f"  {tname:14s} {sname:22s} {rec['status'].upper()}: {rec.get('note') or rec.get('error')}", flush=True)
        if rec["status"] == "error":
            print(rec["traceback"], flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small budgets (100 warmup + 100 draws)")
    p.add_argument("--targets", nargs="+", choices=TARGET_NAMES, default=list(TARGET_NAMES))
    p.add_argument("--samplers", nargs="+", choices=SAMPLER_ORDER, default=list(SAMPLER_ORDER))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-warmup", type=int, default=None, help="default 300 (100 with --quick)")
    p.add_argument("--num-samples", type=int, default=None, help="default 500 (100 with --quick)")
    p.add_argument("--batched-chains", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per (target, sampler) with different seeds; the tables show medians")
    runner.add_output_options(
        p,
        out_help="JSON path (default benchmarks/results/pyro[_quick].json)",
        md_default=os.path.join(REPO, "docs", "benchmarks.md"),
        fresh_help="do not merge with earlier results in --out",
        merge_from_help="also merge the rows of these result files (same configuration)",
        render_help="run nothing: rewrite --out (merged with --merge-from) and its markdown section",
    )
    args = p.parse_args(argv)

    mode = "quick" if args.quick else "full"
    cfg = Config(
        num_warmup=args.num_warmup or (100 if args.quick else 300),
        num_samples=args.num_samples or (100 if args.quick else 500),
        batched_chains=args.batched_chains,
        seed=args.seed,
    )
    cfg.repeats = args.repeats
    if args.num_warmup or args.num_samples:
        mode = f"{mode}-w{cfg.num_warmup}-s{cfg.num_samples}"
    out = args.out or os.path.join(HERE, "results", "pyro_quick.json" if args.quick else "pyro.json")
    cfg_dict = cfg.as_dict()
    run = runner.BenchmarkRun(
        "run_pyro", args, argv, out=out, mode=mode, config=cfg_dict, machine=machine_info(),
        target_order=TARGET_NAMES, sampler_order=SAMPLER_ORDER, markdown=markdown_section,
        derive=add_speedups, note_load=True,
        meta={"conventions": {
            "ess": "min over unconstrained coordinates of arviz bulk ESS over all chains",
            "grads": "summed over chains",
            "times": "wall clock of MCMC.run / BatchedMCMC.run, set-up and jit tracing included",
        }},
    )
    if args.render:
        run.render()
        return
    targets = make_targets()
    print(f"[run_pyro] {mode}: {cfg_dict}; {run.machine['nproc']} CPUs, load {run.machine['loadavg_at_start']}",
          flush=True)
    prime(args.samplers)
    for ti, tname in runner.selected(TARGET_NAMES, args.targets):
        for si, sname in runner.selected(SAMPLER_ORDER, args.samplers):
            rec = run.attempt(
                {"target": tname, "target_description": targets[tname].description, "sampler": sname,
                 "sampler_label": SAMPLER_LABELS[sname], "date": run.date},
                measure, sname, targets[tname], cfg, args.seed * 1000 + ti * 100 + si, args.repeats)
            print_row(rec)
    run.finish()


if __name__ == "__main__":
    main()
