"""Pyro model plumbing for the torch kernels: which discrete sites are summed out, which
sites have a non-finite log density, flat parameter vectors, potential energy and gradient
on flat vectors (one chain, or a batch of chains through a chain plate), and compilation
of the per-step functions.

Nothing here is ESH math: the kernels get that from :mod:`esh_kernels.core`.
"""

import contextlib
import warnings
from collections import OrderedDict

import numpy as np
import pyro
import torch
from opt_einsum import shared_intermediates
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.enum import config_enumerate
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.subsample_messenger import _Subsample

from esh_kernels.core.auxiliary import auxiliary_dims, auxiliary_energy

_CHAIN_PLATE = "_esh_kernels_chains"


# ---------------------------------------------------------------------------------------
# Model inspection


def model_trace(model, model_args, model_kwargs):
    """One prior trace of ``model``, blocked from outer handlers and with validation off."""
    with poutine.block(), pyro.validation_enabled(False):
        return poutine.trace(model).get_trace(*model_args, **model_kwargs)


def enumerated_sites(trace, kernel_name):
    """Names of the discrete latent sites of ``trace`` that the potential sums out by
    parallel enumeration, as ``pyro.infer.HMC`` / ``NUTS`` do: ``initialize_model`` wraps the
    model in ``config_enumerate``, so a site with finite support is enumerated unless it is
    marked otherwise. ``ValueError`` naming a discrete latent site that cannot be summed
    out (no finite support, e.g. Poisson; or marked for another kind of enumeration)."""
    names = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or isinstance(site["fn"], _Subsample):
            continue
        fn = site["fn"]
        enumerable = getattr(fn, "has_enumerate_support", False)
        if not (enumerable or getattr(getattr(fn, "support", None), "is_discrete", False)):
            continue
        mark = site["infer"].get("enumerate", "parallel")
        if enumerable and mark == "parallel":
            names.append(name)
            continue
        if enumerable:
            why = (
                f"is marked infer={{'enumerate': {mark!r}}}; the kernels, like pyro.infer.NUTS, "
                "sum discrete sites out only by parallel enumeration: mark it "
                "infer={'enumerate': 'parallel'} (or leave it unmarked, or wrap the model in "
                "pyro.infer.config_enumerate) and pass max_plate_nesting (the number of "
                "nested pyro.plate contexts) if Pyro's guess is wrong"
            )
        else:
            why = (
                "has no finite support to enumerate (neither has pyro.infer.NUTS): "
                "marginalise it out in the model"
            )
        raise ValueError(
            f"{kernel_name} samples continuous latent variables and sums discrete ones out, "
            f"but discrete site '{name}' ({type(fn).__name__}) {why}."
        )
    return names


def nonfinite_sites(model, model_args, model_kwargs, depth, handler):
    """Names of the sample sites (latent, observed, ``pyro.factor``) whose log density has
    a non-finite entry when ``handler(model)`` runs, discrete sites enumerated in parallel
    left of ``depth`` plate dimensions (``handler`` sets the continuous latent values:
    ``poutine.condition`` or an ``InitMessenger``). ``None`` if the model raises there.
    With enumeration a listed site may be finite for some discrete values."""
    enum_model = poutine.enum(config_enumerate(model), first_available_dim=-1 - depth)
    try:
        with poutine.block(), pyro.validation_enabled(False), torch.no_grad():
            tr = poutine.trace(handler(enum_model)).get_trace(*model_args, **model_kwargs)
            names = []
            for name, site in tr.nodes.items():
                if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                    continue
                lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
                if not bool(torch.isfinite(scale_and_mask(lp, site["scale"], site["mask"])).all()):
                    names.append(name)
    except Exception:  # noqa: BLE001 - only an explanation is lost
        return None
    return names


def plate_depth(trace, max_plate_nesting):
    """Number of batch dimensions to the right of the chain dimension: at least
    ``max_plate_nesting`` (Pyro's guess or the user's) and at least the batch rank of every
    sample site, so the chain plate never collides with a batch dimension."""
    depth = 0 if max_plate_nesting is None else int(max_plate_nesting)
    for site in trace.nodes.values():
        if site["type"] == "sample" and not isinstance(site["fn"], _Subsample):
            depth = max(depth, len(getattr(site["fn"], "batch_shape", ())))
            for frame in site["cond_indep_stack"]:
                if frame.vectorized and frame.dim is not None:
                    depth = max(depth, -frame.dim)
    return depth


# ---------------------------------------------------------------------------------------
# Flat vectors


class FlatLayout:
    """Unconstrained sites (sorted by name, the order ``pyro.infer.MCMC`` flattens them in)
    laid end to end in one vector of size ``data_dim``, followed by the auxiliary standard
    normal coordinates a kernel whose dynamics need ``min_dim`` dimensions adds to a smaller
    model (:mod:`esh_kernels.core.auxiliary`): ``dim`` in all."""

    def __init__(self, params, batch_dims=0, min_dim=1):
        self.names = sorted(params)
        self.shapes = OrderedDict((k, tuple(params[k].shape[batch_dims:])) for k in self.names)
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes.values()]
        self.data_dim = sum(self.sizes)
        self.dim = self.data_dim + auxiliary_dims(self.data_dim, min_dim)

    def flatten(self, params, batch_dims=0, auxiliary=None):
        """``{site: (*batch, *shape)}`` -> ``(*batch, dim)``; the auxiliary coordinates are
        ``auxiliary`` (``(*batch, dim - data_dim)``), or a draw of their standard normal law
        (torch's global generator, as everything random in Pyro)."""
        parts = []
        for k in self.names:
            v = params[k]
            parts.append(v.reshape(tuple(v.shape[:batch_dims]) + (-1,)))
        x = torch.cat(parts, dim=-1)
        if self.dim == self.data_dim:
            return x
        if auxiliary is None:
            auxiliary = torch.randn(x.shape[:-1] + (self.dim - self.data_dim,), dtype=x.dtype, device=x.device)
        return torch.cat([x, auxiliary.to(x)], dim=-1)

    def site_indices(self):
        """``{site: flat indices}`` (``core.mass_matrix``)."""
        starts = np.cumsum([0] + self.sizes[:-1])
        return {k: np.arange(a, a + n) for k, a, n in zip(self.names, starts, self.sizes)}

    def unravel(self, x):
        """``(*batch, dim)`` -> ``{site: (*batch, *shape)}`` (views of ``x``; the auxiliary
        coordinates dropped)."""
        batch = tuple(x.shape[:-1])
        out = {}
        for k, part in zip(self.names, x[..., : self.data_dim].split(self.sizes, dim=-1)):
            out[k] = part.reshape(batch + self.shapes[k])
        return out


# ---------------------------------------------------------------------------------------
# Potential energy and gradient on flat vectors


def _handled_exception(e):
    from pyro.ops.integrator import _EXCEPTION_HANDLERS

    return any(h(e) for h in _EXCEPTION_HANDLERS.values())


class SingleChainPotential:
    """``x (1, d) -> (E (1,), dE/dx (1, d))`` from a Pyro potential on unconstrained dicts
    (``initialize_model``'s, or a user's ``potential_fn``). Errors that Pyro's HMC treats as
    a rejection (e.g. a singular matrix, ``pyro.ops.integrator``'s registry) give ``E = nan``."""

    def __init__(self, potential_fn, layout):
        self.potential_fn = potential_fn
        self.layout = layout

    def energy(self, x):
        return self.potential_fn(self.layout.unravel(x[0])).reshape(1).to(x.dtype)

    def __call__(self, x):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            try:
                energy = self.energy(x) + auxiliary_energy(x, self.layout.data_dim)
                (grad,) = torch.autograd.grad(energy.sum(), x)
            except Exception as e:
                if not _handled_exception(e):
                    raise
                return x.new_full((1,), float("nan")), torch.zeros_like(x).detach()
        return energy.detach(), grad.detach()


class BatchedPotential(SingleChainPotential):
    """``x (C, d) -> (E (C,), dE/dx (C, d))`` for a batch of chains.

    With a model: the model runs once under ``pyro.plate`` over the chains, placed left of
    every batch dimension (pyro issue #2902), conditioned on the constrained values of
    shape ``(C, 1, ..., 1, *site_shape)``; each site's log density (scaled and masked as
    Pyro does) and each transform's log-Jacobian are summed over every dimension but the
    chain's. The gradient of the sum over chains is the per-chain gradient.

    With ``enumerated=True`` (discrete latent sites, :func:`enumerated_sites`) the model runs
    under ``poutine.enum`` with the enumeration dimensions left of the chain plate, and the
    log densities are contracted as Pyro's ``TraceEinsumEvaluator`` does, but down to the
    chain plate instead of a scalar: every site is inside the chain plate, so the chains
    are independent copies and each keeps its own marginal log density.

    With a ``potential_fn``: it is called on ``{site: (C, *shape)}`` and must return ``(C,)``.
    """

    def __init__(self, layout, num_chains, model=None, model_args=(), model_kwargs=None,
                 transforms=None, trace=None, depth=0, potential_fn=None, enumerated=False):
        self.layout = layout
        self.num_chains = num_chains
        self.model = model
        self.model_args = model_args
        self.model_kwargs = model_kwargs or {}
        self.transforms = transforms or {}
        self.potential_fn = potential_fn
        self.depth = depth
        self.enumerated = enumerated
        self.pad = {}
        if model is not None:
            for name in layout.names:
                batch_rank = len(trace.nodes[name]["fn"].batch_shape)
                self.pad[name] = depth - batch_rank

    def _chained_model(self, *args, **kwargs):
        with pyro.plate(_CHAIN_PLATE, self.num_chains, dim=-(self.depth + 1)):
            return self.model(*args, **kwargs)

    def _per_chain_sum(self, value, name):
        C = self.num_chains
        dim = value.dim() - (self.depth + 1)
        if value.dim() > self.depth + 1:
            raise ValueError(
                f"site '{name}' has a log density of shape {tuple(value.shape)}: more batch "
                f"dimensions than the {self.depth} plates left of the chain plate, so the "
                "chains cannot be told apart."
            )
        if dim < 0 or value.shape[dim] == 1:  # the same for every chain
            return value.sum().expand(C)
        if value.shape[dim] != C:
            raise ValueError(
                f"site '{name}' has a log density of shape {tuple(value.shape)}; expected "
                f"{C} chains along dimension {dim - value.dim()}."
            )
        return value.movedim(dim, 0).reshape(C, -1).sum(-1)

    def energy(self, x):
        C = self.num_chains
        unconstrained = self.layout.unravel(x)
        if self.model is None:
            energy = self.potential_fn(unconstrained)
            if not torch.is_tensor(energy) or tuple(energy.shape) != (C,):
                raise ValueError(
                    "In batched mode `potential_fn` is called with a batch of chains "
                    f"({{site: ({C}, *shape)}}) and must return one energy per chain, shape "
                    f"({C},); it returned {getattr(energy, 'shape', type(energy))}."
                )
            return energy.to(x.dtype)
        values, log_det = {}, 0.0
        for name, v in unconstrained.items():
            v = v.reshape((C,) + (1,) * self.pad[name] + self.layout.shapes[name])
            t = self.transforms[name]  # constrained -> unconstrained
            c = t.inv(v)
            values[name] = c
            # the Jacobian keeps v's leading chain axis (and drops event dimensions)
            log_det = log_det + t.log_abs_det_jacobian(c, v).reshape(C, -1).sum(-1)
        if self.enumerated:
            return (log_det - self._enumerated_log_joint(values)).to(x.dtype)
        tr = poutine.trace(poutine.condition(self._chained_model, values)).get_trace(
            *self.model_args, **self.model_kwargs
        )
        log_joint = 0.0
        for name, site in tr.nodes.items():
            if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                continue
            lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            lp = scale_and_mask(lp, site["scale"], site["mask"])
            log_joint = log_joint + self._per_chain_sum(lp, name)
        return (log_det - log_joint).to(x.dtype)

    def _enumerated_log_joint(self, values):
        """``(C,)`` log joint densities with the enumerated sites summed out."""
        model = poutine.enum(config_enumerate(self._chained_model),
                             first_available_dim=-(self.depth + 2))
        tr = poutine.trace(poutine.condition(model, values)).get_trace(
            *self.model_args, **self.model_kwargs
        )
        tr.compute_log_prob()  # scaled and masked
        tr.pack_tensors()
        log_probs = OrderedDict()
        for site in tr.nodes.values():
            if site["type"] == "sample" and not isinstance(site["fn"], _Subsample):
                ordinal = frozenset(tr.plate_to_symbol[f.name]
                                    for f in site["cond_indep_stack"] if f.vectorized)
                log_probs.setdefault(ordinal, []).append(site["packed"]["log_prob"])
        enum_dims = set(tr.symbol_to_dim) - set(tr.plate_to_symbol.values())
        chains = frozenset({tr.plate_to_symbol[_CHAIN_PLATE]})
        with shared_intermediates() as cache:
            log_joint = contract_to_tensor(log_probs, enum_dims, target_ordinal=chains, cache=cache)
        return log_joint.reshape(-1).expand(self.num_chains)


BATCHING_HELP = (
    "The batched mode runs the model once for all chains, inside "
    "pyro.plate('{plate}', num_chains, dim={dim}) (pyro issue #2902): latent sites get "
    "the extra leading dimensions (num_chains, 1, ..., 1, *site_shape). Models that index, "
    "reshape, stack or multiply latent sites along their leading dimensions break under "
    "it: write theta[..., idx] instead of theta[idx] (pyro.ops.indexing.Vindex(theta)[..., "
    "idx] when idx is an enumerated discrete site), torch.stack([a, b], -1) instead of "
    "torch.stack([a, b]), w @ X.T (or (X @ w[..., None])[..., 0]) instead of X @ w, "
    "x.shape[-1] instead of x.shape[0]. Or sample one chain at a time with "
    "pyro.infer.MCMC(kernel, num_chains=...)."
)


def check_batched_potential(batched, single, x, kernel_name):
    """Compare the batched potential with a loop of single-chain potentials at ``x``
    (``(C, d)``); a ``ValueError`` explains why a model cannot be batched."""
    help_text = BATCHING_HELP.format(plate=_CHAIN_PLATE, dim=-(batched.depth + 1))
    try:
        with torch.no_grad():
            got = batched.energy(x)
    except Exception as e:
        raise ValueError(
            f"{kernel_name}: the model cannot be evaluated for a batch of "
            f"{batched.num_chains} chains ({type(e).__name__}: {e}). {help_text}"
        ) from e
    with torch.no_grad():
        want = torch.cat([single.energy(x[c:c + 1]) for c in range(x.shape[0])])
    finite = torch.isfinite(want)
    tol = 1e-4 if x.dtype == torch.float32 else 1e-8
    ok = bool(torch.equal(torch.isfinite(got), finite)) and bool(
        torch.allclose(got[finite], want[finite], rtol=tol, atol=tol * 10)
    )
    if not ok:
        raise ValueError(
            f"{kernel_name}: the model gives different potential energies when its chains "
            f"are batched (batched {got.tolist()}, one at a time {want.tolist()}). "
            + help_text
        )


# ---------------------------------------------------------------------------------------
# Compilation of per-step functions


class Compiled:
    """A function of tensors to tuples of tensors, run eagerly or as a compiled graph.

    ``mode`` is ``"eager"``, or ``"trace"``: ``make_fx`` records the function with its
    autograd calls as one graph of ATen ops (forward and backward of the potential
    included), which ``torch.jit.trace`` turns into a TorchScript function (or, with
    ``jit_options={"backend": "inductor"}``, ``torch.compile`` compiles: much faster steps,
    but a compilation of tens of seconds on a small CPU); the result is checked against
    the eager function at the example inputs. If recording fails (e.g. Python control
    flow on tensor values in the model), it falls back to eager with a warning that says
    why. Other ``jit_options`` go to ``torch.jit.trace`` (or ``torch.compile``).
    """

    def __init__(self, fn, example_args, mode="eager", name="step", jit_options=None,
                 ignore_jit_warnings=False):
        self.fn = fn
        self.name = name
        self.mode = "eager"
        self.graph = None
        if mode == "eager":
            return
        try:
            self.graph = _trace(fn, example_args, jit_options or {}, ignore_jit_warnings)
            backend = (jit_options or {}).get("backend", "torchscript")
            self.mode = mode if backend == "torchscript" else f"compile:{backend}"
        except Exception as e:  # noqa: BLE001 - any tracing failure falls back
            warnings.warn(
                f"jit_compile: could not compile the {name} function ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); running it eagerly (several "
                "times slower per step). Python control flow on tensor values in the model "
                "is the usual cause; pass jit_compile=False to run eagerly without this "
                "warning.",
                RuntimeWarning,
                stacklevel=3,
            )

    def __call__(self, *args):
        if self.graph is not None:
            try:
                with torch.no_grad():
                    return self.graph(*args)
            except RuntimeError as e:
                # an error Pyro's HMC treats as a rejection (a singular matrix, the
                # registry of ``pyro.ops.integrator``) raised inside the graph: this call
                # runs eagerly, where the potential turns it into E = nan
                if not _handled_exception(e):
                    raise
        return self.fn(*args)


def _drop_identity_views(gm):
    """Remove the view operations of a recorded graph that return their input's shape
    (``expand``/``view``/``reshape`` to the same shape, ``alias``), which ``make_fx`` records
    around matrix products and broadcasts: each is one more operation the TorchScript
    interpreter dispatches at every call (about 1 us; 20-30 of the 300-450 operations of a
    kernel's step on the benchmark models), for a result that aliases its input anyway."""
    aten = torch.ops.aten
    identity = (aten.expand.default, aten.view.default, aten._unsafe_view.default,
                aten.reshape.default, aten.alias.default)
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in identity:
            continue
        src = node.args[0]
        before, after = getattr(src, "meta", {}).get("val"), node.meta.get("val")
        if torch.is_tensor(before) and torch.is_tensor(after) and before.shape == after.shape:
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


def _fold_trivial(gm):
    """Remove the operations of a recorded graph whose result is known without running them,
    where dropping them leaves every output bitwise the same: ``neg(neg(a))`` is ``a``, and
    ``a - s`` is ``a`` where ``s`` is a sum of ``zeros_like`` (Pyro's log-determinant of an
    identity transform, one per unconstrained real site, recorded into the potential's
    value and gradient). Each is one operation fewer per call of the TorchScript graph;
    ``a + 0`` is kept (it turns ``-0.0`` into ``0.0``)."""
    aten = torch.ops.aten
    sums = (aten.sum.default, aten.sum.dim_IntList)
    zero = set()

    def shape(n):
        val = getattr(n, "meta", {}).get("val")
        return (tuple(val.shape), val.dtype) if torch.is_tensor(val) else None

    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target == aten.zeros_like.default or (node.target in sums and node.args[0] in zero):
            zero.add(node)
        elif node.target == aten.neg.default and getattr(node.args[0], "target", None) == aten.neg.default:
            node.replace_all_uses_with(node.args[0].args[0])
        elif (node.target == aten.sub.Tensor and len(node.args) == 2 and node.args[1] in zero
              and node.kwargs.get("alpha", 1) == 1 and shape(node) == shape(node.args[0])):
            node.replace_all_uses_with(node.args[0])
    for node in reversed(list(gm.graph.nodes)):  # what no longer has a user
        if node.op == "call_function" and not node.users and (
            node.target in (aten.neg.default, aten.sub.Tensor, aten.zeros_like.default) or node in zero
        ):
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


def _one_fake_mode():
    """A context in which ``make_fx`` records its graph with one fake-tensor mode. In its
    real-tensor mode it notes each recorded operation's output shape through a fake tensor,
    and without an ambient fake mode it makes a new one per operation, each capturing a
    Python stack trace: about a third of the time of recording ESH's two steps (0.25-0.45 s
    on eight schools). Private torch API (``torch._guards``): where it is missing or takes
    other arguments, record as before."""
    try:
        from torch._guards import TracingContext, tracing
        from torch._subclasses.fake_tensor import FakeTensorMode

        return tracing(TracingContext(FakeTensorMode()))
    except Exception:  # noqa: BLE001 - any other torch: record without it
        return contextlib.nullcontext()


def _trace(fn, example_args, jit_options, ignore_jit_warnings):
    from torch.fx.experimental.proxy_tensor import make_fx

    # distinct tensors: make_fx merges arguments that are the same tensor object
    example_args = tuple(a.clone() for a in example_args)

    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.(trace|freeze).* is deprecated")
        if ignore_jit_warnings:
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        def flat(*args):  # make_fx needs a plain function of positional tensors
            return tuple(fn(*args))

        with _one_fake_mode():
            gm = make_fx(flat)(*example_args)
        gm = _fold_trivial(_drop_identity_views(gm))
        options = dict(jit_options)
        backend = options.pop("backend", "torchscript")
        with torch.no_grad():
            if backend == "torchscript":
                options.setdefault("check_trace", False)
                # freezing inlines the recorded constants (the model's data): about 20%
                # fewer interpreted operations per call on small models
                traced = torch.jit.freeze(torch.jit.trace(gm, tuple(example_args), **options).eval())
            else:
                options.setdefault("fullgraph", True)
                options.setdefault("dynamic", False)
                traced = torch.compile(gm, backend=backend, **options)
            want = fn(*example_args)
            got = traced(*example_args)
    want = tuple(want) if isinstance(want, (tuple, list)) else (want,)
    got = tuple(got) if isinstance(got, (tuple, list)) else (got,)
    if len(want) != len(got):
        raise RuntimeError("compiled function returns a different number of outputs")
    for a, b in zip(want, got):
        same_nan = torch.equal(torch.isnan(a), torch.isnan(b)) if a.is_floating_point() else True
        if a.shape != b.shape or not same_nan or not torch.allclose(
            torch.nan_to_num(a.double()), torch.nan_to_num(b.double()), rtol=1e-6, atol=1e-9
        ):
            raise RuntimeError("compiled function disagrees with the eager one at the example inputs")
    return traced
