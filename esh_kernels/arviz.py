"""ArviZ conversion for NumPyro and Pyro MCMC runs: :func:`to_arviz`.

``to_arviz(mcmc)`` takes a finished ``numpyro.infer.MCMC``, ``pyro.infer.MCMC`` or
:class:`esh_kernels.pyro.BatchedMCMC` and returns the ArviZ object of the installed
ArviZ generation: ``arviz.InferenceData`` with ArviZ 0.x, ``xarray.DataTree`` with
ArviZ 1.x. The groups are

* ``posterior``: the constrained draws, ``(chain, draw, ...)`` (NumPyro deterministic
  sites included);
* ``sample_stats``: per-draw statistics under the names ArviZ reads (``diverging``,
  ``acceptance_rate``, ``step_size``, ``lp``, ``n_steps``, ``energy_error``, ``energy``)
  plus the kernel's own statistics under their own names. There is never a
  ``tree_depth`` (these kernels build no trees). When the kernel's self-check
  (``esh_kernels/core/self_check.py``) found a problem, its messages are in
  ``sample_stats.attrs["self_check"]``;
* ``observed_data``: the observed sites of the model, found by running the model once
  with the MCMC's arguments;
* ``log_likelihood`` (only with ``log_likelihood=True``): pointwise log-likelihood of the
  observed sites, for ``az.loo`` / ``az.waic``.

Dimensions of sites inside plates are named after the plates (as ``az.from_numpyro``
does); ``coords`` and ``dims`` given by the user are passed to ArviZ and take precedence.

NumPyro: the statistics are the MCMC's *extra fields*. The ``esh_kernels.numpyro``
kernels collect them by default (their ``default_fields``); for other kernels (NumPyro's
``NUTS``) collect them when running::

    mcmc.run(key, data, extra_fields=esh_kernels.sample_stats_fields(mcmc))

Renames (the same as ``az.from_numpyro``): ``potential_energy -> lp`` (negated),
``accept_prob -> acceptance_rate``, ``adapt_state.step_size -> step_size``,
``num_steps -> n_steps`` (without the ``tree_depth`` ArviZ would derive from it); other
``adapt_state.X`` fields become ``X``, other dots become underscores.

Pyro: the statistics come from each chain's ``kernel.diagnostics()``. ``divergences``
(post-warmup draw indices) becomes the boolean ``diverging``; per-draw lists of length
``num_samples`` (the ``esh_kernels.pyro`` kernels record ``diverging``, ``accept_prob``,
``n_steps``, ``energy_error``, ``potential_energy``) become per-draw statistics, with the
same renames; the tuned ``step size`` and ``trajectory length`` (fixed after warmup) are
repeated for every draw; other per-chain numbers (e.g. gradient evaluations) are stored as
per-chain lists in the attributes of ``sample_stats``. Chains are matched by their number,
so runs with 11 or more chains are right (``az.from_pyro`` in ArviZ 0.23 sorts the
``"chain 10"`` key before ``"chain 2"``).

Importing this module imports neither ArviZ, JAX nor torch; :func:`to_arviz` imports
ArviZ and the PPL of the MCMC object it is given.
"""

import math
import numbers
import re
import sys
import warnings

import numpy as np

__all__ = ["to_arviz", "sample_stats_fields", "arviz_generation"]

#: NumPyro extra fields, in the order they are offered by :func:`sample_stats_fields`.
_NUMPYRO_CANDIDATE_FIELDS = (
    "diverging",
    "potential_energy",
    "accept_prob",
    "mean_accept_prob",
    "adapt_state.step_size",
    "n_steps",
    "num_steps",
    "energy",
    "energy_error",
)

#: NumPyro states whose ``adapt_state`` has a ``step_size``
_KNOWN_ADAPT_STEP_SIZE = ("HMCState", "BarkerMHState")

#: per-draw statistic -> ArviZ name (``potential_energy`` is also negated into ``lp``)
_RENAMES = {
    "potential_energy": "lp",
    "accept_prob": "acceptance_rate",
    "adapt_state.step_size": "step_size",
    "num_steps": "n_steps",
    "step size": "step_size",
    "trajectory length": "trajectory_length",
}

#: per-chain numbers of the Pyro kernels that hold for every post-warmup draw
_PYRO_PER_CHAIN_CONSTANTS = ("step size", "trajectory length")

#: per-chain summaries that duplicate a per-draw statistic when that one is present
_PYRO_REDUNDANT = {"acceptance rate": "accept_prob", "divergences": "diverging"}


# -- public API -----------------------------------------------------------------------------


def arviz_generation():
    """The major version of the installed ArviZ: ``0`` (``InferenceData`` API) or ``1``
    (``DataTree`` API, Python >= 3.12). Imports ArviZ."""
    import arviz as az

    return _major(az.__version__)


def sample_stats_fields(kernel):
    """The NumPyro extra fields worth collecting for ArviZ from ``kernel``.

    Pass the result to ``MCMC.run(..., extra_fields=...)``; :func:`to_arviz` turns them
    into ``sample_stats``. ``kernel`` may be the kernel or the ``numpyro.infer.MCMC``
    holding it. For the ``esh_kernels.numpyro`` kernels:

    * ``ESH``: ``diverging``, ``potential_energy``, ``adapt_state.step_size``,
      ``n_steps``, ``energy_error``;
    * ``AdjustedESH``: the same plus ``accept_prob`` and ``mean_accept_prob``;
    * ``TunedHMC``: the same as ``AdjustedESH`` plus ``energy`` (the Hamiltonian).

    They are the ``default_fields`` of these kernels, so NumPyro collects them without
    ``extra_fields``; ``to_arviz`` adds ``energy`` for ``ESH`` and ``AdjustedESH``
    (their potential energy, ``docs/arviz.md`` says why).

    NumPyro's own ``HMC``/``NUTS`` get ``diverging``, ``potential_energy``,
    ``accept_prob``, ``adapt_state.step_size``, ``num_steps`` and ``energy``. A kernel
    whose state type cannot be found gets ``()``.
    """
    kernel = getattr(kernel, "sampler", kernel)  # an MCMC: its kernel
    state_cls = _numpyro_state_class(kernel)
    if state_cls is None:
        return ()
    fields = set(state_cls._fields)
    # nested fields only where the adaptation state is known to carry them
    nested_ok = state_cls.__module__.startswith("esh_kernels.") or state_cls.__name__ in _KNOWN_ADAPT_STEP_SIZE
    out = []
    for name in _NUMPYRO_CANDIDATE_FIELDS:
        head = name.split(".")[0]
        if head in fields and ("." not in name or nested_ok):
            out.append(name)
    return tuple(out)


def to_arviz(
    mcmc,
    *,
    coords=None,
    dims=None,
    observed_data=True,
    log_likelihood=False,
    infer_dims=True,
    index_origin=None,
):
    """Convert a finished MCMC run to ArviZ.

    :param mcmc: a ``numpyro.infer.MCMC``, a ``pyro.infer.MCMC`` or an
        :class:`esh_kernels.pyro.BatchedMCMC`, after ``run``.
    :param dict coords: ``{dim name: coordinate values}``, passed to ArviZ.
    :param dict dims: ``{variable name: [dim names]}`` for the non-sample dimensions,
        passed to ArviZ; they override the dimension names found from plates.
    :param bool observed_data: add the ``observed_data`` group (observed sites of the
        model, from one run of the model with the MCMC's arguments).
    :param bool log_likelihood: add the ``log_likelihood`` group (pointwise
        log-likelihood of the observed sites at every draw; one vectorised run of the
        model over all draws).
    :param bool infer_dims: name the dimensions of sites inside plates after the plates.
    :param int index_origin: first index of default integer coordinates (ArviZ's
        ``data.index_origin`` when None).
    :returns: ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x).
    """
    import arviz as az  # noqa: F401  (a clear ImportError before any work)

    kind = _which_ppl(mcmc)
    if kind == "numpyro":
        groups, site_dims, attrs = _from_numpyro(mcmc, observed_data, log_likelihood)
    else:
        groups, site_dims, attrs = _from_pyro(mcmc, observed_data, log_likelihood)
    all_dims = dict(site_dims) if infer_dims else {}
    all_dims.update(dims or {})
    all_dims = _valid_dims(groups, all_dims, user=set(dims or {}))
    return _build(groups, coords, all_dims, attrs, index_origin)


# -- ArviZ generations ----------------------------------------------------------------------


def _major(version):
    match = re.match(r"(\d+)", str(version))
    return int(match.group(1)) if match else 0


def _build(groups, coords, dims, attrs, index_origin):
    """``az.from_dict`` in the calling convention of the installed generation."""
    import arviz as az

    groups = {k: v for k, v in groups.items() if v}
    attrs = {k: v for k, v in attrs.items() if k in groups and v}
    if _major(az.__version__) >= 1:
        kwargs = {"coords": coords, "dims": dims or None, "attrs": attrs or None}
        if index_origin is not None:
            kwargs["index_origin"] = index_origin
        return az.from_dict(groups, **kwargs)
    kwargs = {f"{group}_attrs": value for group, value in attrs.items()}
    return az.from_dict(
        **groups, coords=coords, dims=dims or None, index_origin=index_origin, **kwargs
    )


def _valid_dims(groups, dims, user):
    """Keep inferred dim names only where their count fits the variable (user-given dims
    are passed as they are, so that ArviZ reports a mistake)."""
    out = {}
    for name, names in dims.items():
        if name in user:
            out[name] = list(names)
            continue
        for group, data in groups.items():
            if data and name in data:
                ndim = np.ndim(data[name]) - (0 if group == "observed_data" else 2)
                if len(names) == ndim:
                    out[name] = list(names)
                break
    return out


def _library_attrs(module, sampler):
    return {
        "inference_library": module.__name__,
        "inference_library_version": str(getattr(module, "__version__", "unknown")),
        "sampler": type(sampler).__name__,
    }


# -- which PPL ------------------------------------------------------------------------------


def _which_ppl(mcmc):
    modules = [cls.__module__ or "" for cls in type(mcmc).__mro__]
    if any(m == "numpyro" or m.startswith("numpyro.") for m in modules):
        return "numpyro"
    if any(m == "pyro" or m.startswith("pyro.") or m.startswith("esh_kernels.pyro") for m in modules):
        return "pyro"
    if hasattr(mcmc, "get_extra_fields") and hasattr(mcmc, "sampler"):
        return "numpyro"
    if hasattr(mcmc, "kernel") and hasattr(mcmc, "get_samples"):
        return "pyro"
    raise TypeError(
        "to_arviz expects a numpyro.infer.MCMC, a pyro.infer.MCMC or an "
        f"esh_kernels.pyro.BatchedMCMC after run(), got {type(mcmc).__name__}"
    )


# -- NumPyro --------------------------------------------------------------------------------


def _numpyro_state_class(kernel):
    for cls in type(kernel).__mro__:
        module = sys.modules.get(cls.__module__)
        state = getattr(module, cls.__name__ + "State", None)
        if isinstance(state, type) and hasattr(state, "_fields"):
            return state
    return None


def _from_numpyro(mcmc, want_observed, want_log_likelihood):
    import jax
    import numpyro

    if getattr(mcmc, "_states", None) is None and getattr(mcmc, "_states_flat", None) is None:
        raise ValueError("to_arviz: the NumPyro MCMC has no draws; call mcmc.run(...) first")
    samples = jax.device_get(mcmc.get_samples(group_by_chain=True))
    if hasattr(samples, "_asdict"):
        samples = samples._asdict()
    if not isinstance(samples, dict):  # potential_fn on a non-dict pytree (as ArviZ does)
        leaves = jax.tree_util.tree_leaves(samples)
        samples = {f"Param:{i}": v for i, v in enumerate(leaves)}
    posterior = {k: np.asarray(v) for k, v in samples.items()}

    sample_stats = {}
    for field, value in mcmc.get_extra_fields(group_by_chain=True).items():
        if isinstance(value, (dict, tuple)):
            continue
        value = np.asarray(jax.device_get(value))
        name = _stat_name(field)
        if name in sample_stats:  # e.g. both num_steps and n_steps collected
            continue
        sample_stats[name] = -value if field == "potential_energy" else value
    if "diverging" in sample_stats:
        sample_stats["diverging"] = sample_stats["diverging"].astype(bool)
    _add_isokinetic_energy(sample_stats, mcmc.sampler)

    model = getattr(mcmc.sampler, "model", None)
    args, kwargs = getattr(mcmc, "_args", ()), getattr(mcmc, "_kwargs", {})
    observed, site_dims = {}, {}
    if model is not None:
        try:
            trace = _numpyro_trace(model, args, kwargs)
        except Exception as err:  # the model cannot run outside inference
            warnings.warn(
                f"to_arviz: could not run the model to find observed sites ({err!r}); "
                "no observed_data and no plate dims.",
                stacklevel=3,
            )
            trace = {}
        for name, site in trace.items():
            if site["type"] not in ("sample", "deterministic"):
                continue
            value = site.get("value")
            if value is None:
                continue
            event_dim = getattr(site.get("fn"), "event_dim", 0) or 0
            frames = [(f.name, f.dim, f.size) for f in site.get("cond_indep_stack", ())]
            if site["type"] == "sample" and site.get("is_observed"):
                observed[name] = np.asarray(jax.device_get(value))
            site_dims[name] = _plate_dims(name, np.shape(value), event_dim, frames)

    log_lik = {}
    if want_log_likelihood and model is not None and observed:
        try:
            grouped = mcmc.get_samples(group_by_chain=True)
            values = numpyro.infer.log_likelihood(model, grouped, *args, batch_ndims=2, **kwargs)
            log_lik = {k: np.asarray(jax.device_get(v)) for k, v in values.items()}
        except Exception as err:
            warnings.warn(f"to_arviz: could not compute the log-likelihood ({err!r})", stacklevel=3)

    groups = {
        "posterior": posterior,
        "sample_stats": sample_stats,
        "observed_data": observed if want_observed else {},
        "log_likelihood": log_lik,
    }
    attrs = {"posterior": _library_attrs(numpyro, mcmc.sampler), "sample_stats": {}}
    findings = getattr(mcmc.sampler, "self_check_findings", None)
    if findings:
        attrs["sample_stats"]["self_check"] = "\n".join(message for _, _, message in findings)
    return groups, site_dims, attrs


def _numpyro_trace(model, args, kwargs):
    import jax
    from numpyro import handlers
    from numpyro.infer import init_to_sample

    seeded = handlers.substitute(
        handlers.seed(model, jax.random.PRNGKey(0)), substitute_fn=init_to_sample
    )
    return handlers.trace(seeded).get_trace(*args, **kwargs)


def _stat_name(field):
    if field in _RENAMES:
        return _RENAMES[field]
    if field.startswith("adapt_state."):
        field = field[len("adapt_state."):]
    return re.sub(r"[^0-9A-Za-z_]+", "_", field).strip("_") or "stat"


def _plate_dims(name, shape, event_dim, frames):
    """Dim names of a site's value (no sample dims): plate names for the batch axes whose
    size matches the plate, ``{name}_dim_{k}`` for the others."""
    ndim = len(shape)
    batch_ndim = max(ndim - int(event_dim), 0)
    by_dim = {dim: (plate, size) for plate, dim, size in frames if dim is not None}
    out = []
    for axis in range(ndim):
        label = None
        if axis < batch_ndim:
            plate = by_dim.get(axis - batch_ndim)
            if plate is not None and (plate[1] is None or plate[1] == shape[axis]):
                label = plate[0]
        out.append(label)
    if len({x for x in out if x is not None}) < len([x for x in out if x is not None]):
        out = [None] * ndim  # a plate name twice: give up rather than mislabel
    return [label if label is not None else f"{name}_dim_{k}" for k, label in enumerate(out)]


# -- Pyro -----------------------------------------------------------------------------------


def _from_pyro(mcmc, want_observed, want_log_likelihood):
    samples = mcmc.get_samples(group_by_chain=True)
    posterior = {k: _to_numpy(v) for k, v in samples.items()}
    if not posterior:
        raise ValueError("to_arviz: the Pyro MCMC has no draws: it has not run (call "
                         "mcmc.run(...) first), or the model has no latent site to sample")
    num_chains, num_draws = next(iter(posterior.values())).shape[:2]

    per_chain = _pyro_chain_diagnostics(mcmc, num_chains)
    sample_stats, chain_attrs = _pyro_sample_stats(per_chain, num_chains, num_draws)

    kernel = getattr(mcmc, "kernel", None)
    _add_isokinetic_energy(sample_stats, kernel)
    model = getattr(kernel, "model", None)
    args, kwargs = getattr(mcmc, "_args", ()), getattr(mcmc, "_kwargs", {})
    observed, site_dims = {}, {}
    if model is not None:
        import pyro
        import torch

        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad(), pyro.poutine.block():
                trace = pyro.poutine.trace(model).get_trace(*args, **kwargs)
        except Exception as err:
            warnings.warn(
                f"to_arviz: could not run the model to find observed sites ({err!r}); "
                "no observed_data and no plate dims.",
                stacklevel=3,
            )
            trace = None
        for name, site in (trace.nodes.items() if trace is not None else ()):
            if site.get("type") != "sample":
                continue
            value = site.get("value")
            if not hasattr(value, "shape"):
                continue
            fn = site.get("fn")
            event_dim = getattr(fn, "event_dim", 0) or 0
            frames = [
                (f.name, f.dim, f.size)
                for f in site.get("cond_indep_stack", ())
                if getattr(f, "vectorized", True)
            ]
            if site.get("is_observed"):
                observed[name] = _to_numpy(value)
            site_dims[name] = _plate_dims(name, tuple(value.shape), event_dim, frames)

    log_lik = {}
    if want_log_likelihood and model is not None and observed:
        try:
            log_lik = _pyro_log_likelihood(model, samples, args, kwargs, observed, num_chains, num_draws)
        except Exception as err:
            warnings.warn(f"to_arviz: could not compute the log-likelihood ({err!r})", stacklevel=3)

    groups = {
        "posterior": posterior,
        "sample_stats": sample_stats,
        "observed_data": observed if want_observed else {},
        "log_likelihood": log_lik,
    }
    attrs = {"posterior": {}, "sample_stats": chain_attrs}
    pyro = sys.modules.get("pyro")
    if pyro is not None:
        attrs["posterior"] = _library_attrs(pyro, kernel)
    return groups, site_dims, attrs


def _add_isokinetic_energy(sample_stats, kernel):
    """``energy`` for the isokinetic kernels (``ESH``, ``AdjustedESH``), which declare
    ``energy_is_potential_energy``: the ESH Hamiltonian ``U(x) + D log|v|`` at a draw with
    its velocity refreshed to unit length, that is the potential energy ``U(x)``
    (``esh_math.md`` §2). The velocity's length carries no information (the dynamics are
    invariant under rescaling it), so there is no kinetic-energy level for a refresh to
    move, unlike HMC. ``az.bfmi`` / ``az.plot_energy`` then read
    ``E[(U_n - U_{n-1})^2] / Var(U) = 2 (1 - rho_1(U))``: how far the potential energy
    moves between draws, low when the energy level (e.g. a funnel's scale) mixes slowly."""
    if "energy" in sample_stats or "lp" not in sample_stats:
        return
    if getattr(kernel, "energy_is_potential_energy", False):
        sample_stats["energy"] = -sample_stats["lp"]


def _to_numpy(value):
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.asarray(value)


def _chain_number(key):
    match = re.fullmatch(r"\s*chain\s+(\d+)\s*", str(key))
    return int(match.group(1)) if match else None


def _pyro_chain_diagnostics(mcmc, num_chains):
    """One dict of kernel diagnostics per chain, in chain order."""
    raw = getattr(mcmc, "_diagnostics", None)
    if isinstance(raw, (list, tuple)) and len(raw) == num_chains and all(isinstance(d, dict) for d in raw):
        return [dict(d) for d in raw]
    # the public route: {stat: {"chain i": value}} (site entries hold n_eff / r_hat)
    out = [{} for _ in range(num_chains)]
    for stat, value in mcmc.diagnostics().items():
        if not isinstance(value, dict):
            continue
        numbered = {_chain_number(k): v for k, v in value.items()}
        if None in numbered or set(numbered) != set(range(num_chains)):
            continue  # a site's {n_eff, r_hat}, or not one value per chain
        for c in range(num_chains):
            out[c][stat] = numbered[c]
    return out


def _is_number(x):
    if isinstance(x, bool):
        return True
    if isinstance(x, numbers.Number):
        return True
    return hasattr(x, "shape") and np.ndim(_to_numpy(x)) == 0


def _pyro_sample_stats(per_chain, num_chains, num_draws):
    """Per-draw statistics ``{name: (C, N, ...)}`` and per-chain attributes."""
    if not per_chain or not per_chain[0]:
        return {}, {}
    keys = [k for k in per_chain[0] if all(k in d for d in per_chain)]
    stats, attrs = {}, {}
    for key in keys:
        values = [d[key] for d in per_chain]
        if key == "divergences":
            continue
        if key == "self-check":  # the kernel's self-check messages (core/self_check.py)
            messages = [m for chain in values for m in chain if isinstance(m, str)]
            if messages:
                attrs["self_check"] = "\n".join(dict.fromkeys(messages))
            continue
        if key in _PYRO_REDUNDANT and _PYRO_REDUNDANT[key] in keys:
            continue
        if all(_is_number(v) for v in values):
            numbers_ = [float(_to_numpy(v)) for v in values]
            if key in _PYRO_PER_CHAIN_CONSTANTS:
                stats[_stat_name(key)] = np.repeat(np.asarray(numbers_)[:, None], num_draws, axis=1)
            else:
                attrs[_stat_name(key)] = [_json_float(x) for x in numbers_]
            continue
        try:
            arrays = [np.asarray(_to_numpy(v) if hasattr(v, "detach") else v) for v in values]
        except (TypeError, ValueError):
            continue
        if not all(a.ndim >= 1 and a.shape[0] == num_draws and a.dtype != object for a in arrays):
            continue
        if len({a.shape for a in arrays}) != 1:
            continue
        array = np.stack(arrays)
        if array.dtype.kind == "f" and key in ("n_steps", "num_steps") and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        stats[_stat_name(key)] = -array if key == "potential_energy" else array
    if "diverging" not in stats and "divergences" in keys:
        diverging = np.zeros((num_chains, num_draws), dtype=bool)
        for c, d in enumerate(per_chain):
            idx = np.asarray(_to_numpy(d["divergences"]) if hasattr(d["divergences"], "detach") else d["divergences"], dtype=int).reshape(-1)
            idx = idx[(idx >= 0) & (idx < num_draws)]
            diverging[c, idx] = True
        stats["diverging"] = diverging
    if "diverging" in stats:
        stats["diverging"] = stats["diverging"].astype(bool)
    return stats, attrs


def _json_float(x):
    return x if math.isfinite(x) else str(x)


def _pyro_log_likelihood(model, samples, args, kwargs, observed, num_chains, num_draws):
    import torch
    from pyro.infer import Predictive

    flat = {k: v.reshape((num_chains * num_draws,) + tuple(v.shape[2:])) for k, v in samples.items()}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        trace = Predictive(model, flat, parallel=True).get_vectorized_trace(*args, **kwargs)
    out = {}
    for name in observed:
        site = trace.nodes[name]
        value = site["fn"].log_prob(site["value"])
        value = _to_numpy(value)
        value = np.broadcast_to(value, (num_chains * num_draws,) + value.shape[1:]) if value.shape[:1] == (1,) else value
        out[name] = value.reshape((num_chains, num_draws) + value.shape[1:])
    return out
