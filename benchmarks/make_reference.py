#!/usr/bin/env python
"""Long NumPyro NUTS reference runs: the "known truth" of the second moments of the
non-Gaussian benchmark targets, written to ``benchmarks/reference/<target>.json``.

    nice python benchmarks/make_reference.py                       # all four targets
    nice python benchmarks/make_reference.py --targets hier_500 --num-samples 10000

For every unconstrained coordinate ``x_i`` (the order of ``run_numpyro._flatten_draws``:
``ravel_pytree`` of the unconstrained sample dict, sites sorted by name) the file holds
the mean, sd, ``E[x_i^2]``, ``E[x_i^4]``, ``Var[x_i^2] = E[x_i^4] - E[x_i^2]^2``, the Monte
Carlo standard error of ``E[x_i^2]`` (``sd(x_i^2) / sqrt(ESS(x_i^2))``, ArviZ
``mcse(method="mean")`` of the squared draws), the ESS of ``x_i^2`` (ArviZ ``method="mean"``),
the bulk / tail ESS and split R-hat of ``x_i``, and ``b2_floor_i = MCSE^2 / Var[x_i^2]
= 1 / ESS(x_i^2)``: how large the benchmark's ``b2_i`` can be from the reference's own
Monte Carlo error alone. Plus the run's settings (chains, draws, ``target_accept_prob``,
seed), divergences, the command, date, machine and versions.

eight_schools_centered: NUTS is itself biased on the centred funnel (it cannot enter the
neck at small ``tau``; divergences), so its reference comes from the *non-centred* model
(``eight_schools``), whose posterior is the same distribution: the draws
``(mu, log tau, theta_tilde)`` are mapped to the centred unconstrained coordinates
``(mu, log tau, theta = mu + tau * theta_tilde)``. The two eight-schools files therefore
come from one NUTS run (made once when both are requested).
"""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import random  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import results_io  # noqa: E402
from targets import REFERENCE_DIR, REFERENCE_TARGETS, coordinate_names, make_targets  # noqa: E402

# target -> how its reference is made. ``source``: the model NUTS runs on; ``transform``:
# maps the source's unconstrained sample dict (leading axes: chains, draws) to the
# target's; ``num_samples``: draws per chain (4 chains).
SPECS = {
    "eight_schools": {"source": "eight_schools", "target_accept_prob": 0.99,
                      "num_warmup": 2000, "num_samples": 100000},
    "eight_schools_centered": {"source": "eight_schools", "target_accept_prob": 0.99,
                               "num_warmup": 2000, "num_samples": 100000,
                               "transform": "noncentred_to_centred"},
    "logreg": {"source": "logreg", "target_accept_prob": 0.9,
               "num_warmup": 2000, "num_samples": 25000},
    "hier_500": {"source": "hier_500", "target_accept_prob": 0.9,
                 "num_warmup": 2000, "num_samples": 40000},
}
TRANSFORM_DOC = {
    "noncentred_to_centred": "draws of the non-centred model (mu, log tau, theta_tilde) mapped to "
                             "(mu, log tau, theta = mu + exp(log tau) * theta_tilde)",
}


def noncentred_to_centred(z):
    return {"mu": z["mu"], "tau": z["tau"],
            "theta": z["mu"][..., None] + jnp.exp(z["tau"])[..., None] * z["theta_tilde"]}


TRANSFORMS = {"noncentred_to_centred": noncentred_to_centred}


def _identity(z):
    return z


def run_nuts(model, num_warmup, num_samples, num_chains, target_accept_prob, key):
    """NUTS (NumPyro defaults otherwise: diagonal mass matrix, max tree depth 10),
    ``sequential`` chains; returns the unconstrained draws ``{site: (C, N, ...)}`` and
    a dict of run statistics."""
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(model, target_accept_prob=target_accept_prob), num_warmup=num_warmup,
                num_samples=num_samples, num_chains=num_chains, chain_method="sequential",
                progress_bar=False, postprocess_fn=_identity)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(key, extra_fields=("num_steps", "diverging", "accept_prob"))
    samples = jax.tree.map(np.asarray, mcmc.get_samples(group_by_chain=True))
    ef = mcmc.get_extra_fields(group_by_chain=True)
    stats = {
        "seconds": time.perf_counter() - t0,
        "divergences": int(np.sum(ef["diverging"])),
        "divergences_per_chain": np.sum(ef["diverging"], axis=1).tolist(),
        "accept_mean": float(np.mean(ef["accept_prob"])),
        "leapfrog_steps_per_draw": float(np.mean(ef["num_steps"])),
        "max_leapfrog_steps": int(np.max(ef["num_steps"])),
        "step_size_per_chain": np.atleast_1d(np.asarray(mcmc.last_state.adapt_state.step_size)).tolist(),
    }
    return samples, stats


def flatten(samples):
    """``{site: (C, N, ...)}`` -> ``(C, N, D)`` in ``ravel_pytree`` order (as
    ``run_numpyro._flatten_draws``), plus the coordinate names."""
    flat = jax.vmap(jax.vmap(lambda z: ravel_pytree(z)[0]))(samples)
    shapes = {k: np.shape(v)[2:] for k, v in samples.items()}
    return np.asarray(flat, dtype=np.float64), coordinate_names(shapes)


def moment_summary(draws):
    """Per-coordinate moments and diagnostics of ``draws`` ``(C, N, D)``."""
    import arviz as az

    C, N, D = draws.shape
    flat = draws.reshape(-1, D)
    x2 = draws**2
    ex2 = np.mean(flat**2, axis=0)
    ex4 = np.mean(flat**4, axis=0)
    var_x2 = ex4 - ex2**2
    ds = az.convert_to_dataset({"x": draws})
    ds2 = az.convert_to_dataset({"x2": x2})
    ess_x2 = np.asarray(az.ess(ds2, method="mean")["x2"].values)
    mcse_x2 = np.asarray(az.mcse(ds2, method="mean")["x2"].values)
    out = {
        "mean": np.mean(flat, axis=0),
        "sd": np.std(flat, axis=0),
        "ex2": ex2,
        "ex4": ex4,
        "var_x2": var_x2,
        "ex2_mcse": mcse_x2,
        "ess_x2": ess_x2,
        "b2_floor": mcse_x2**2 / var_x2,
        "ess_bulk": np.asarray(az.ess(ds, method="bulk")["x"].values),
        "ess_tail": np.asarray(az.ess(ds, method="tail")["x"].values),
        "rhat": np.asarray(az.rhat(ds)["x"].values),
        "rhat_x2": np.asarray(az.rhat(ds2)["x2"].values),
    }
    summary = {
        "ess_bulk_min": float(out["ess_bulk"].min()),
        "ess_tail_min": float(out["ess_tail"].min()),
        "ess_x2_min": float(out["ess_x2"].min()),
        "rhat_max": float(out["rhat"].max()),
        "rhat_x2_max": float(out["rhat_x2"].max()),
        "b2_floor_max": float(out["b2_floor"].max()),
        "b2_floor_mean": float(out["b2_floor"].mean()),
    }
    return out, summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", nargs="+", choices=REFERENCE_TARGETS, default=list(REFERENCE_TARGETS))
    p.add_argument("--num-samples", type=int, default=None, help="draws per chain (default: per target, see SPECS)")
    p.add_argument("--num-warmup", type=int, default=None, help="warmup per chain (default 2000)")
    p.add_argument("--num-chains", type=int, default=4)
    p.add_argument("--target-accept", type=float, default=None, help="override target_accept_prob")
    p.add_argument("--seed", type=int, default=20240607)
    p.add_argument("--out-dir", default=REFERENCE_DIR)
    args = p.parse_args(argv)

    targets = make_targets()
    machine = results_io.machine_info(("jax", "jaxlib", "numpyro", "arviz", "numpy", "scipy", "scikit-learn"))
    command = "python " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), REPO)]
                                   + (sys.argv[1:] if argv is None else list(argv)))
    os.makedirs(args.out_dir, exist_ok=True)
    runs = {}  # (source, settings) -> (samples, stats): one run feeds both eight-schools files
    for name in args.targets:
        spec = dict(SPECS[name])
        for k, v in (("num_samples", args.num_samples), ("num_warmup", args.num_warmup),
                     ("target_accept_prob", args.target_accept)):
            if v is not None:
                spec[k] = v
        source = spec["source"]
        settings = (source, spec["num_warmup"], spec["num_samples"], args.num_chains, spec["target_accept_prob"])
        if settings not in runs:
            # the key depends on the source model only, so the eight-schools files share a run
            key = random.fold_in(random.PRNGKey(args.seed), list(targets).index(source))
            print(f"[make_reference] NUTS on {source}: {args.num_chains} chains x "
                  f"({spec['num_warmup']} warmup + {spec['num_samples']} draws), "
                  f"target_accept_prob {spec['target_accept_prob']}", flush=True)
            runs[settings] = run_nuts(targets[source].model, spec["num_warmup"], spec["num_samples"],
                                      args.num_chains, spec["target_accept_prob"], key)
            print(f"[make_reference]   {runs[settings][1]['seconds']:.0f} s, "
                  f"{runs[settings][1]['divergences']} divergences", flush=True)
        samples, stats = runs[settings]
        if "transform" in spec:
            samples = jax.tree.map(np.asarray, TRANSFORMS[spec["transform"]](samples))
        draws, coords = flatten(samples)
        if draws.shape[-1] != targets[name].dim:
            raise RuntimeError(f"{name}: reference has {draws.shape[-1]} coordinates, target has {targets[name].dim}")
        t0 = time.perf_counter()
        per_coord, summary = moment_summary(draws)
        rec = {
            "target": name,
            "target_description": targets[name].description,
            "dim": int(draws.shape[-1]),
            "coords": coords,
            "source_model": source,
            "transform": TRANSFORM_DOC.get(spec.get("transform")),
            "sampler": "numpyro.infer.NUTS (diagonal mass matrix, max_tree_depth 10), chain_method='sequential', "
                       "init_to_uniform",
            "target_accept_prob": spec["target_accept_prob"],
            "num_chains": args.num_chains,
            "num_warmup": spec["num_warmup"],
            "num_samples_per_chain": spec["num_samples"],
            "num_draws": int(draws.shape[0] * draws.shape[1]),
            "seed": args.seed,
            "key": f"fold_in(PRNGKey({args.seed}), {list(targets).index(source)})",
            "run": stats,
            "summary": summary,
            "target_notes": targets[name].notes,
            "command": command,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine,
            "definitions": {
                "ex2": "mean of x_i^2 over all chains and draws",
                "var_x2": "mean of x_i^4 - ex2^2",
                "ex2_mcse": "arviz.mcse(method='mean') of x_i^2 = sd(x_i^2) / sqrt(ess_x2)",
                "ess_x2": "arviz.ess(method='mean') of x_i^2",
                "b2_floor": "ex2_mcse^2 / var_x2 = 1 / ess_x2: the b2 the reference's own MC error produces",
                "ess_bulk, ess_tail, rhat": "arviz rank-normalised bulk/tail ESS and split R-hat of x_i",
            },
        }
        rec.update(per_coord)
        path = os.path.join(args.out_dir, f"{name}.json")
        with open(path, "w") as f:
            json.dump(results_io.jsonable(rec), f, indent=1)
        print(f"[make_reference] {name}: dim {rec['dim']}, {rec['num_draws']} draws, "
              f"min bulk ESS {summary['ess_bulk_min']:.0f}, min ESS(x^2) {summary['ess_x2_min']:.0f}, "
              f"max R-hat {summary['rhat_max']:.4f}, b2 floor max {summary['b2_floor_max']:.1e} "
              f"[{time.perf_counter() - t0:.0f} s diagnostics] -> {os.path.relpath(path, REPO)}", flush=True)


if __name__ == "__main__":
    main()
