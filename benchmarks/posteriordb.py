"""The posteriordb development suite: eleven real posteriors with reference draws.

Data and reference draws live in ``shared/data/posteriordb_dev/<posterior>/`` (see its
README: posteriordb commit 28f8d3d6e975, BSD 3-Clause). The models are ours, written from
the Stan programs, one module per posterior in ``benchmarks/pdb_models/`` (each defines
``numpyro_model(data)`` and, where Pyro can express it, ``pyro_model(data)``, returning a
model that takes no arguments).

Naming contract between a model and its reference: every Stan parameter is a sample or
``deterministic`` site of the same name and shape (constrained scale), so that the
reference's flat names (``"beta[2]"``, ``"theta1[1]"``, ``"sigma"``: Stan's 1-based
indices) are found by :func:`flat_draws`.
"""

import importlib
import json
import re

import numpy as np
from shared_data import shared_path

POSTERIORS = (
    "arma-arma11",
    "bball_drive_event_0-hmm_drive_0",
    "earnings-earn_height",
    "hmm_example-hmm_example",
    "hudson_lynx_hare-lotka_volterra",
    "kidiq_with_mom_work-kidscore_interaction_c",
    "kilpisjarvi_mod-kilpisjarvi",
    "mesquite-logmesquite",
    "mesquite-logmesquite_logvas",
    "one_comp_mm_elim_abs-one_comp_mm_elim_abs",
    "sblrc-blr",
)


def posterior_dir(name):
    if name not in POSTERIORS:
        raise ValueError(f"unknown posterior {name!r}; known: {', '.join(POSTERIORS)}")
    return shared_path("data", "posteriordb_dev", name)


def _read_json(name, filename):
    with open(shared_path("data", "posteriordb_dev", name, filename)) as f:
        return json.load(f)


def load_data(name):
    """The posterior's data: ``{field: numpy array}`` (integers stay integers)."""
    posterior_dir(name)
    return {k: np.asarray(v) for k, v in _read_json(name, "data.json").items()}


def load_info(name):
    return _read_json(name, "info.json")


def load_summary(name):
    """``reference_summary.json``: per-parameter mean, sd, q05/q50/q95 and posteriordb's
    own MCSE, plus the geometry."""
    return _read_json(name, "reference_summary.json")


def load_reference(name):
    """``{flat parameter name: (10, 1000) array}``: posteriordb's reference draws
    (10 chains of 1000), constrained scale, in the summary's parameter order."""
    posterior_dir(name)
    with np.load(shared_path("data", "posteriordb_dev", name, "reference_draws.npz")) as z:
        draws = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
    order = load_summary(name).get("parameter_names") or list(draws)
    return {k: draws[k] for k in order}


def model_module(name):
    """The module of ``benchmarks/pdb_models`` that holds the posterior's models."""
    posterior_dir(name)
    return importlib.import_module("pdb_models." + name.split("-", 1)[1])


_FLAT = re.compile(r"^(?P<site>[^\[\]]+)(\[(?P<idx>[0-9,]+)\])?$")


def split_flat_name(flat):
    """``"beta[2,1]"`` -> ``("beta", (1, 0))`` (0-based); ``"sigma"`` -> ``("sigma", ())``."""
    m = _FLAT.match(flat)
    if m is None:
        raise ValueError(f"not a Stan-style flat parameter name: {flat!r}")
    idx = () if m.group("idx") is None else tuple(int(i) - 1 for i in m.group("idx").split(","))
    return m.group("site"), idx


def flat_draws(samples, names, batch_ndims=2):
    """``{flat name: array of shape samples[site].shape[:batch_ndims]}`` for every name in
    ``names``, read from ``samples = {site: array (chains, draws, *site shape)}`` (NumPyro's
    ``get_samples(group_by_chain=True)``). A missing site raises a ``KeyError`` naming it."""
    out = {}
    for flat in names:
        site, idx = split_flat_name(flat)
        if site not in samples:
            raise KeyError(f"the model has no site {site!r} (needed for reference parameter "
                           f"{flat!r}); sites: {sorted(samples)}")
        a = np.asarray(samples[site], dtype=np.float64)
        out[flat] = a[(slice(None),) * batch_ndims + idx]
    return out
