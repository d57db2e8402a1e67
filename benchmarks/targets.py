"""Benchmark targets as NumPyro models (used by ``benchmarks/run_numpyro.py``).

Every model takes no arguments: the data are closed over. That keeps NumPyro's
``MCMC`` cache keys hashable and lets every sampler (NumPyro kernels and BlackJAX)
see exactly the same potential, built once by ``numpyro.infer.util.initialize_model``.

Targets
-------
``ill_gauss``    100-D diagonal Gaussian, standard deviations ``logspace(-2, 0, 100)``.
``std_gauss``    100-D standard Gaussian.
``eight_schools`` eight schools, non-centred: ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``,
                 ``theta_tilde ~ N(0, 1)``, ``theta = mu + tau * theta_tilde``,
                 ``y ~ N(theta, sigma)``.  10 unconstrained parameters (``tau`` on the
                 log scale).
``logreg``       Bayesian logistic regression on scikit-learn's breast-cancer data
                 (569 rows, 30 features standardised to mean 0 / sd 1, plus an intercept
                 column of ones): ``w ~ N(0, 1)`` for all 31 coefficients,
                 ``y ~ Bernoulli(logits = X w)``.
``eight_schools_centered``  eight schools, centred (posteriordb
                 ``eight_schools-eight_schools_centered``): ``mu ~ N(0, 5)``,
                 ``tau ~ HalfCauchy(5)``, ``theta ~ N(mu, tau)`` (8 schools),
                 ``y ~ N(theta, sigma)``.  10 unconstrained parameters (``mu``, ``log tau``,
                 ``theta``).  The funnel: small ``tau`` pinches ``theta`` around ``mu``;
                 divergences are expected.
``hier_500``     504-D non-centred varying-intercept regression on synthetic data:
                 ``J = 500`` groups with 2-6 observations each (1992 rows), drawn once
                 from ``numpy.random.default_rng(HIER_500_SEED)`` with ``mu = 1``,
                 ``beta = 0.5``, ``tau = 1``, ``sigma = 2``, ``x ~ N(0, 1)``.  Model:
                 ``mu ~ N(0, 5)``, ``beta ~ N(0, 2)``, ``tau ~ HalfNormal(2)``,
                 ``sigma ~ HalfNormal(2)``, ``z_j ~ N(0, 1)``,
                 ``y_ij ~ N(mu + tau z_j + beta x_ij, sigma)``.  Unconstrained order
                 (``ravel_pytree`` sorts the site names): ``beta``, ``mu``, ``log sigma``,
                 ``log tau``, ``z[0..499]``.  The posterior is benign (``log tau`` about
                 0 +- 0.07), but the data's pull on ``log tau`` is proportional to ``tau``:
                 at small ``tau`` only the log-Jacobian's constant +1 pushes back (a nearly
                 flat region), so a chain that drifts to ``log tau < -2`` early in warmup
                 can take hundreds of iterations to come back.

Known truth for the second-moment bias ``b2``
--------------------------------------------
For every unconstrained coordinate ``i`` the benchmark needs ``E[x_i^2]`` and
``Var[x_i^2] = E[x_i^4] - E[x_i^2]^2``: analytic for the two Gaussians (``sd_i^2`` and
``2 sd_i^4``), otherwise from a long NumPyro NUTS reference run stored in
``benchmarks/reference/<target>.json`` (written by ``benchmarks/make_reference.py``).
``second_moment_bias`` computes, per coordinate,

    b2_i = (mean over all chains and draws of x_i^2 - E[x_i^2])^2 / Var[x_i^2]

(for an unbiased sampler about ``1 / ESS(x_i^2)``), and ``b2_floor_i =
MCSE_ref(E[x_i^2])^2 / Var[x_i^2] = 1 / ESS_ref(x_i^2)``: the part of ``b2_i`` that the
reference's own Monte Carlo error can produce (0 for the analytic Gaussians).
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from paper_metrics import squared_distances
from shared_data import shared_path

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE_DIR = os.path.join(HERE, "reference")
EIGHT_SCHOOLS_DATA = ("data", "posteriordb", "eight_schools-eight_schools_noncentered", "data.json")
EIGHT_SCHOOLS_CENTERED_DATA = ("data", "posteriordb", "eight_schools-eight_schools_centered", "data.json")
EIGHT_SCHOOLS_Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
EIGHT_SCHOOLS_SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


@dataclass
class Target:
    name: str
    description: str
    model: Callable
    dim: int  # unconstrained dimension
    true_sd: Optional[np.ndarray] = None  # per-coordinate sd for the Gaussians (mean 0)
    notes: dict = field(default_factory=dict)


def eight_schools_data(parts=EIGHT_SCHOOLS_DATA):
    """The numbers above, checked against the posteriordb data file in ``shared/`` when
    that file is there (the numbers are built in, so the benchmark runs without it)."""
    y, sigma = EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SIGMA
    path = shared_path(*parts, required=False)
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
        if [float(v) for v in data["y"]] != y or [float(v) for v in data["sigma"]] != sigma:
            raise ValueError(f"{path} disagrees with the built-in eight-schools data")
    return np.asarray(y), np.asarray(sigma)


HIER_500_SEED = 20240607
HIER_500_GROUPS = 500
HIER_500_TRUTH = {"mu": 1.0, "beta": 0.5, "tau": 1.0, "sigma": 2.0}


def hier_500_data(num_groups=HIER_500_GROUPS, seed=HIER_500_SEED):
    """Synthetic data of ``hier_500``: ``(group index, x, y)``, deterministic in ``seed``
    (numpy ``PCG64``; the SHA-256 of the arrays is recorded in the reference file)."""
    rng = np.random.default_rng(seed)
    n_per = rng.integers(2, 7, size=num_groups)  # 2..6 observations per group
    g = np.repeat(np.arange(num_groups), n_per)
    z = rng.standard_normal(num_groups)
    x = rng.standard_normal(g.size)
    t = HIER_500_TRUTH
    y = t["mu"] + t["tau"] * z[g] + t["beta"] * x + t["sigma"] * rng.standard_normal(g.size)
    return g.astype(np.int64), x.astype(np.float64), y.astype(np.float64)


def data_sha256(*arrays):
    """SHA-256 of the little-endian float64 bytes of ``arrays`` (to check that a reference
    file was made from the data the targets generate now)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype="<f8")).tobytes())
    return h.hexdigest()


def breast_cancer_data():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    X = np.concatenate([np.ones((X.shape[0], 1)), X], axis=1)
    return X.astype(np.float64), y.astype(np.float64)


def make_targets():
    """``{name: Target}`` in the benchmark's order. Import after enabling float64."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    d = 100
    sd_ill = np.logspace(-2, 0, d)
    sd_ill_j = jnp.asarray(sd_ill)

    def ill_gauss():
        numpyro.sample("x", dist.Normal(0.0, sd_ill_j))

    ones = jnp.ones(d)

    def std_gauss():
        numpyro.sample("x", dist.Normal(0.0, ones))

    y8, s8 = eight_schools_data()
    y8_j, s8_j = jnp.asarray(y8), jnp.asarray(s8)

    def eight_schools():
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("school", 8):
            theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
            numpyro.sample("y", dist.Normal(theta, s8_j), obs=y8_j)

    X, yb = breast_cancer_data()
    X_j, yb_j = jnp.asarray(X), jnp.asarray(yb)
    p = X.shape[1]

    def logreg():
        w = numpyro.sample("w", dist.Normal(jnp.zeros(p), 1.0).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=X_j @ w).to_event(1), obs=yb_j)

    yc, sc = eight_schools_data(EIGHT_SCHOOLS_CENTERED_DATA)
    yc_j, sc_j = jnp.asarray(yc), jnp.asarray(sc)

    def eight_schools_centered():
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("school", 8):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
            numpyro.sample("y", dist.Normal(theta, sc_j), obs=yc_j)

    g, xh, yh = hier_500_data()
    J = HIER_500_GROUPS
    g_j, xh_j, yh_j = jnp.asarray(g), jnp.asarray(xh), jnp.asarray(yh)

    def hier_500():
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        beta = numpyro.sample("beta", dist.Normal(0.0, 2.0))
        tau = numpyro.sample("tau", dist.HalfNormal(2.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        z = numpyro.sample("z", dist.Normal(jnp.zeros(J), 1.0).to_event(1))
        loc = mu + tau * z[g_j] + beta * xh_j
        numpyro.sample("y", dist.Normal(loc, sigma).to_event(1), obs=yh_j)

    return {
        "ill_gauss": Target(
            "ill_gauss", "100-D Gaussian, sd = logspace(-2, 0, 100)", ill_gauss, d, sd_ill
        ),
        "std_gauss": Target("std_gauss", "100-D standard Gaussian", std_gauss, d, np.ones(d)),
        "eight_schools": Target(
            "eight_schools", "eight schools, non-centred (10-D)", eight_schools, 10
        ),
        "logreg": Target(
            "logreg",
            f"logistic regression, breast cancer ({X.shape[0]} x {p}, w ~ N(0, 1))",
            logreg,
            p,
            notes={"n_obs": int(X.shape[0]), "n_coef": int(p)},
        ),
        "eight_schools_centered": Target(
            "eight_schools_centered",
            "eight schools, centred: the funnel (10-D)",
            eight_schools_centered,
            10,
        ),
        "hier_500": Target(
            "hier_500",
            f"non-centred varying-intercept regression, {J} groups, {g.size} rows (504-D)",
            hier_500,
            J + 4,
            notes={"n_obs": int(g.size), "n_groups": J, "seed": HIER_500_SEED,
                   "data_sha256": data_sha256(g, xh, yh)},
        ),
    }


TARGET_NAMES = ("ill_gauss", "std_gauss", "eight_schools", "logreg", "eight_schools_centered", "hier_500")
GAUSSIAN_TARGETS = ("ill_gauss", "std_gauss")
REFERENCE_TARGETS = tuple(t for t in TARGET_NAMES if t not in GAUSSIAN_TARGETS)
"""Targets whose second-moment truth comes from ``benchmarks/reference/<target>.json``."""


# -- known truth and the second-moment bias ---------------------------------------------


def coordinate_names(shapes):
    """Names of the flat unconstrained coordinates in ``ravel_pytree`` order for a dict
    ``{site: shape}`` of unconstrained sample sites (sites sorted by name, each site
    ravelled in C order): ``"mu"``, ``"theta[3]"``, ... ."""
    names = []
    for site in sorted(shapes):
        shape = tuple(shapes[site])
        if shape == ():
            names.append(site)
        else:
            names.extend(f"{site}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape))
    return names


def reference_path(name):
    return os.path.join(REFERENCE_DIR, f"{name}.json")


def load_reference(name):
    """The reference record of target ``name`` (a dict, see ``make_reference.py``), or
    ``None`` if the file does not exist."""
    path = reference_path(name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def second_moment_truth(target):
    """``(E[x^2], Var[x^2], MCSE of E[x^2], source)`` per unconstrained coordinate, or
    ``None`` when no truth is known (no reference file, or a file of another dimension)."""
    if target.true_sd is not None:
        sd2 = np.asarray(target.true_sd, dtype=np.float64) ** 2
        return sd2, 2.0 * sd2**2, np.zeros_like(sd2), "analytic"
    ref = load_reference(target.name)
    if ref is None or ref["dim"] != target.dim:
        return None
    ex2 = np.asarray(ref["ex2"], dtype=np.float64)
    var_x2 = np.asarray(ref["var_x2"], dtype=np.float64)
    mcse = np.asarray(ref["ex2_mcse"], dtype=np.float64)
    return ex2, var_x2, mcse, f"reference: benchmarks/reference/{target.name}.json"


def second_moment_bias(draws, ex2, var_x2, ex2_mcse=None):
    """Per-coordinate ``b2_i = (mean(x_i^2) - E[x_i^2])^2 / Var[x_i^2]`` of ``draws``
    (``(..., D)``: the mean runs over all leading axes, i.e. all chains and draws), and
    ``b2_floor_i = ex2_mcse_i^2 / Var[x_i^2]`` (zeros when ``ex2_mcse`` is None).
    Returns ``(b2, b2_floor)``, two arrays of length ``D``."""
    draws = np.asarray(draws, dtype=np.float64)
    d = draws.shape[-1]
    m2 = np.mean(draws.reshape(-1, d) ** 2, axis=0)
    ex2, var_x2 = np.asarray(ex2, dtype=np.float64), np.asarray(var_x2, dtype=np.float64)
    b2 = (m2 - ex2) ** 2 / var_x2
    floor = np.zeros(d) if ex2_mcse is None else np.asarray(ex2_mcse, dtype=np.float64) ** 2 / var_x2
    return b2, floor



# -- distribution distance and posteriordb truth for the ensemble benchmark -------------
#
# ``benchmarks/ensemble_vs_laps.py`` compares the ensemble of chains at one iteration with
# reference draws: by ``b2`` (above) and by the maximum mean discrepancy (MMD, Gretton et
# al. 2012, JMLR 13, "A kernel two-sample test") with a Gaussian kernel on coordinates
# standardised by the reference's mean and sd, its bandwidth set by the median heuristic.


def standardizer(reference):
    """``(mean, sd)`` per coordinate of ``reference`` (``(n, d)``): the MMD compares
    ``(x - mean) / sd`` so that every coordinate counts on the posterior's own scale."""
    reference = np.asarray(reference, dtype=np.float64)
    return reference.mean(axis=0), reference.std(axis=0)


def median_bandwidth(y, max_points=1000, seed=0):
    """Median of the pairwise Euclidean distances between (at most ``max_points``) rows of
    ``y``: the median heuristic for the Gaussian kernel's bandwidth. (The ESH paper's MMD,
    ``paper_metrics.MMD``, takes the median of the squared distances with the diagonal and
    a normalised kernel; this one is the LAPS benchmark's, whose tables were made with it.)"""
    y = np.asarray(y, dtype=np.float64)
    if y.shape[0] > max_points:
        y = y[np.random.default_rng(seed).choice(y.shape[0], max_points, replace=False)]
    d2 = squared_distances(y, y)
    return float(np.sqrt(np.median(d2[np.triu_indices(y.shape[0], k=1)])))


def _offdiag_kernel_mean(x, bandwidth):
    k = np.exp(-squared_distances(x, x) / (2.0 * bandwidth**2))
    n = x.shape[0]
    return (np.sum(k) - np.trace(k)) / (n * (n - 1))


def mmd2(x, y, bandwidth, y_term=None):
    """Unbiased (U-statistic) squared MMD between the rows of ``x`` (``(n, d)``) and of
    ``y`` (``(m, d)``) with the kernel ``exp(-|a - b|^2 / (2 bandwidth^2))``:
    ``mean_{i!=j} k(x_i, x_j) + mean_{i!=j} k(y_i, y_j) - 2 mean k(x_i, y_j)``. Its mean is
    0 when both samples are independent draws of one distribution (single values scatter
    around 0, negative ones included) and the squared MMD of the two distributions
    otherwise. ``y_term`` is the ``y`` part, precomputed by :func:`mmd2_reference_term`
    when many ``x`` meet one ``y``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y_term is None:
        y_term = mmd2_reference_term(y, bandwidth)
    kxy = np.mean(np.exp(-squared_distances(x, y) / (2.0 * bandwidth**2)))
    return float(_offdiag_kernel_mean(x, bandwidth) + y_term - 2.0 * kxy)


def mmd2_reference_term(y, bandwidth):
    """``mean_{i!=j} k(y_i, y_j)``, the part of :func:`mmd2` that depends on ``y`` only."""
    return float(_offdiag_kernel_mean(np.asarray(y, dtype=np.float64), bandwidth))


def site_shapes(model, model_args=()):
    """``{site: shape}`` of the model's latent sample sites (constrained values): the sites
    NumPyro's ``initialize_model`` finds (so improper priors work), mapped to the
    constrained scale by ``constrain_fn``."""
    from jax import random
    from numpyro.infer.util import constrain_fn, initialize_model

    z = initialize_model(random.PRNGKey(0), model, model_args=model_args).param_info.z
    return {name: tuple(np.shape(v)) for name, v in constrain_fn(model, model_args, {}, z).items()
            if name in z}


def unconstrained_chains(model, mcmc, model_args=()):
    """A finished ``MCMC`` run's draws of ``model``'s latent sites on the scale the samplers
    move in, ``(chains, draws, d)``: NumPyro's ``unconstrain_fn``, flattened in
    ``ravel_pytree`` order (the potential's flat vector), as :func:`reference_unconstrained`
    maps reference draws."""
    import jax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import unconstrain_fn

    grouped = mcmc.get_samples(group_by_chain=True)
    latent = {k: v for k, v in grouped.items() if k in mcmc.last_state.z}

    def flat(z):
        return ravel_pytree(unconstrain_fn(model, model_args, {}, z))[0]

    return np.asarray(jax.vmap(jax.vmap(flat))(latent), dtype=np.float64)


def reference_unconstrained(model, flat_draws, model_args=()):
    """Reference draws on the scale the samplers move in: ``flat_draws`` maps Stan-style
    flat names (``"beta[2]"``, 1-based; ``"sigma"``) to arrays of draws (any common shape,
    e.g. posteriordb's ``(10, 1000)``) on the constrained scale. Every latent site of
    ``model`` must be covered. Each draw is mapped by NumPyro's ``unconstrain_fn`` (the
    sites' ``biject_to`` inverses, as ``initialize_model`` builds the potential) and
    flattened by ``ravel_pytree``, the layout of the potential's flat vector. Returns
    ``(n, d)``."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import unconstrain_fn

    from posteriordb import split_flat_name

    shapes = site_shapes(model, model_args)
    n = None
    params = {}
    by_site = {}
    for flat, a in flat_draws.items():
        site, idx = split_flat_name(flat)
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        n = a.size if n is None else n
        if a.size != n:
            raise ValueError(f"reference parameter {flat!r} has {a.size} draws, others {n}")
        by_site.setdefault(site, {})[idx] = a
    for site, shape in shapes.items():
        if site not in by_site:
            raise KeyError(f"the reference draws have no parameter for the latent site {site!r}")
        values = np.full((n,) + shape, np.nan)
        for idx in np.ndindex(*shape) if shape else [()]:
            if idx not in by_site[site]:
                raise KeyError(f"the reference draws lack {site}{list(idx)} (0-based)")
            values[(slice(None),) + idx] = by_site[site][idx]
        params[site] = jnp.asarray(values)

    def flat(z):
        return ravel_pytree(unconstrain_fn(model, model_args, {}, z))[0]

    return np.asarray(jax.vmap(flat)(params), dtype=np.float64)


def posteriordb_target(name):
    """A :class:`Target` for posteriordb_dev posterior ``name`` (its full name or the part
    after the ``-``): our NumPyro model (``benchmarks/pdb_models``) and, in ``notes``, its
    reference draws on the unconstrained flat scale (``"reference_unconstrained"``,
    ``(10000, d)``)."""
    import posteriordb as pdb

    full = name if name in pdb.POSTERIORS else next(
        (p for p in pdb.POSTERIORS if p.split("-", 1)[1] == name), None)
    if full is None:
        raise ValueError(f"unknown posterior {name!r}; known: {', '.join(pdb.POSTERIORS)}")
    model = pdb.model_module(full).numpyro_model(pdb.load_data(full))
    ref = reference_unconstrained(model, pdb.load_reference(full))
    short = full.split("-", 1)[1]
    return Target(short, f"posteriordb {full} ({ref.shape[1]}-D)", model, ref.shape[1],
                  notes={"posterior": full, "reference_unconstrained": ref})


def truth_from_draws(reference):
    """``(E[x^2], Var[x^2], MCSE of E[x^2])`` per coordinate of reference draws ``(n, d)``
    (the MCSE as if the draws were independent)."""
    x2 = np.asarray(reference, dtype=np.float64) ** 2
    return x2.mean(axis=0), x2.var(axis=0), x2.std(axis=0) / np.sqrt(x2.shape[0])
