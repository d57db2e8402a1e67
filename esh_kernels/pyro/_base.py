"""What every Pyro kernel of this package shares (``docs/api_notes.md`` §2).

A kernel works on a batch of chains: positions are ``(C, d)`` tensors (``C = 1`` under
``pyro.infer.MCMC``, which runs chains one after another or in separate processes;
``C = num_chains`` under :class:`esh_kernels.pyro.BatchedMCMC`). A subclass implements

* ``_init_state(x, energy, grad) -> state`` (a namedtuple of tensors with a leading chain
  axis), and
* ``_transition(state, i) -> state``: one draw at iteration ``i`` (warmup adaptation when
  ``i < num_warmup``), with the potential from ``self._value_and_grad``,

and may override ``_resync(state, x, energy, grad)``, ``_iteration_stats(state)`` and
``_final_parameters()`` (defaults below: the statistics are the state fields named in
``iteration_stats``). States are the ``core`` kernels' NamedTuples, whose ``z`` is the draw.
The math comes from :mod:`esh_kernels.core`, the functions the NumPyro kernels use.

Device and dtype follow the initial parameters: every tensor is made with ``new_*``,
``*_like`` or ``dtype=/device=`` from them. Random numbers come from torch's global
generator (``pyro.set_rng_seed``), drawn through ``self._rng`` so that tests can inject
them.
"""

import warnings
from collections import OrderedDict

import numpy as np
import torch
from pyro import poutine
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.infer.mcmc.util import initialize_model
from pyro.infer.autoguide.initialization import InitMessenger, init_to_uniform

from esh_kernels.core.options import KernelArguments, from_arguments
from esh_kernels.core import self_check
from esh_kernels.core.metropolis import DIVERGENCE_THRESHOLD
from esh_kernels.core.checks import check_bool, check_int, check_model_arguments, non_finite_sites_text
from esh_kernels.core.adaptation import AUTO_METRIC
from esh_kernels.core.auxiliary import model_energy
from esh_kernels.core.mass_matrix import (
    block_mask,
    check_dense_mass,
    initial_scale,
    metric_layout,
)
from esh_kernels.core.mass_matrix import inverse_mass_matrix as metric_inverse
from esh_kernels.core.preconditioning import scale_diagonal
from esh_kernels.core.state_fields import SiteLayout
from esh_kernels.pyro._model import (
    BatchedPotential,
    FlatLayout,
    SingleChainPotential,
    check_batched_potential,
    enumerated_sites,
    model_trace,
    nonfinite_sites,
    plate_depth,
)


class TorchRandom:
    """Standard normals and uniforms in ``[0, 1)`` like a tensor, from torch's global
    generator (on the tensor's device)."""

    def normal(self, like, shape):
        return torch.randn(shape, dtype=like.dtype, device=like.device)

    def uniform(self, like, shape):
        return torch.rand(shape, dtype=like.dtype, device=like.device)


def bcast(cond, a):
    """``cond`` (shape ``(C,)``) with trailing axes to broadcast against ``a``."""
    return cond.reshape(tuple(cond.shape) + (1,) * (a.dim() - cond.dim()))


def where(cond, a, b):
    """Per-chain ``a if cond else b`` for tensors or namedtuples of tensors (``cond`` has
    shape ``(C,)``; leaves have a leading chain axis)."""
    if a is b:  # also the adapt states' ``sites`` (None in Pyro)
        return a
    if isinstance(a, tuple):
        return type(a)(*[where(cond, x, y) for x, y in zip(a, b)])
    if not torch.is_tensor(a):
        a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
    if not torch.is_tensor(b):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    return torch.where(bcast(cond, a), a, b)


def finite_rows(x):
    """``(C, ...) -> (C,)``: True where every entry of the chain is finite."""
    return torch.isfinite(x).reshape(x.shape[0], -1).all(-1)


class FlatKernel(KernelArguments, MCMCKernel):
    """Base class: see the module docstring."""

    #: smallest dimension the dynamics support (ESH is singular in 1-D); a model with
    #: fewer gets auxiliary standard normal coordinates (``core/auxiliary.py``)
    min_dim = 1
    divergence_threshold = DIVERGENCE_THRESHOLD
    #: the kernel's own advice per self-check symptom (``core/self_check.py``), put
    #: before the generic remedy in its warnings
    self_check_remedies = {}
    #: the state fields Pyro's ``MCMC`` collects per draw (its ``diagnostics()``)
    iteration_stats = ("diverging", "accept_prob", "n_steps", "energy_error", "step_curvature",
                       "potential_energy")

    @property
    def host_check_every(self):
        """Steps between two checks whether any chain still runs, in the loops whose length
        is not known in advance: 1 on CPU, where the check costs nothing; 4 on other
        devices, where it is a synchronisation and up to 3 masked steps may be wasted."""
        if self._state is None or self._state.integrator.x.device.type == "cpu":
            return 1
        return 4

    def _model_energy(self, x, energy):
        """The model's potential energy at flat vectors ``x`` ``(C, dim)`` from the dynamics'
        ``energy`` there: the state's ``potential_energy`` (``core/auxiliary.py``)."""
        return model_energy(x, energy, self._layout.data_dim)

    def _draw(self, state):
        """The draw, flat ``(C, d)``."""
        return state.z

    def _resync(self, state, x, energy, grad):
        """``state`` moved to ``x`` (a new start)."""
        integ = state.integrator._replace(x=x, energy=energy, grad=grad)
        return state._replace(z=x, integrator=integ, potential_energy=self._model_energy(x, energy))

    def _refresh(self, state):
        """``state`` with the potential energy and gradient recomputed where the dynamics
        are (after ``clear_cache``: the potential may have changed); nothing moves. The
        draw's own energy is the integrator's here (ESH overrides this: its draw is a point
        picked inside the trajectory)."""
        energy, grad = self._value_and_grad(state.integrator.x)
        integ = state.integrator._replace(energy=energy, grad=grad)
        return state._replace(integrator=integ, potential_energy=self._model_energy(integ.x, energy))

    def _iteration_stats(self, state):
        return {name: getattr(state, name) for name in self.iteration_stats}

    def _final_parameters(self):
        a = self._state.adapt_state
        return {"step size": a.step_size, "trajectory length": a.trajectory_length}

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        dense_mass="auto",
        full_mass=None,
        inverse_mass_matrix=None,
        init_strategy=init_to_uniform,
        transforms=None,
        max_plate_nesting=None,
        jit_compile=True,
        jit_options=None,
        ignore_jit_warnings=False,
        **options,
    ):
        check_model_arguments(model, potential_fn, init_strategy, "Pyro")
        self._options = from_arguments(self.options_type, type(self).__name__, options)
        if full_mass is not None:  # Pyro's NUTS calls it full_mass
            if dense_mass != "auto":
                raise ValueError("Pass `full_mass` (Pyro's name) or `dense_mass`, not both.")
            dense_mass = full_mass
        #: the user's choice; ``_dense_mass`` is the layout it gives the model (``_start``)
        self._dense_choice, self._dense_blocks = check_dense_mass(dense_mass)
        self._dense_mass = self._dense_choice is True
        #: the user's initial metric (as NumPyro's kernels take it) and its preconditioner,
        #: set by ``_start`` for the model's layout
        self._initial_metric = _on_host(inverse_mass_matrix)
        self._scale0 = None
        if max_plate_nesting is not None:
            check_int("max_plate_nesting", max_plate_nesting, 0)
        if jit_options is not None and not isinstance(jit_options, dict):
            raise ValueError(f"`jit_options` must be a dict of torch.jit.trace options, got {jit_options!r}")
        self.model = model
        self._user_potential_fn = potential_fn
        self.potential_fn = potential_fn
        self._user_transforms = transforms
        self.transforms = transforms
        self._metric_mask = None
        self._final_scale = None
        self._initial_trace = None
        self._init_strategy = init_strategy
        self._max_plate_nesting = max_plate_nesting
        self._jit_compile = check_bool("jit_compile", jit_compile)
        self._jit_options = jit_options
        self._ignore_jit_warnings = check_bool("ignore_jit_warnings", ignore_jit_warnings)
        self._rng = TorchRandom()
        self._initial_params = None
        self.compiled_modes = {}
        self._chains_started = 0
        #: what the self-check found in the latest run: ``(chain, symptom, message)``
        self.self_check_findings = []
        self._reset()

    # -- per-run bookkeeping ---------------------------------------------------------------

    def _reset(self):
        self._t = 0
        self._num_warmup = 0
        self._cache_cleared = False
        self._state = None
        self._layout = None
        self._value_and_grad = None
        self._last_params = None
        self._stats = []
        self._grads_warmup = None
        self._grads_sample = None
        self._log_values = {}
        self._num_chains = 1
        self._compiled = {}
        self._isokinetic = None
        self._monitor = None
        self._early_checks = ()  # core/self_check.py early_checkpoints, set with the monitor

    @property
    def initial_params(self):
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params):
        self._initial_params = params

    @property
    def num_warmup(self):
        return self._num_warmup

    # -- MCMCKernel API ------------------------------------------------------------------

    def setup(self, warmup_steps, *args, **kwargs):
        """Called by ``pyro.infer.MCMC`` once per chain: find the initial parameters (or
        take ``initial_params``), build the flat potential and the initial state."""
        self._reset()
        self._num_warmup = check_int("warmup_steps", warmup_steps, 0)
        given = self._initial_params is not None
        if self.model is not None:
            init, _, _ = self._initialize_model(args, kwargs, 1, self._initial_params)
        else:
            if not given:
                raise ValueError(
                    "Valid `initial_params` (a dict of unconstrained tensors) must be given "
                    "with `potential_fn`: MCMC(kernel, ..., initial_params=...)."
                )
            init = self._initial_params
            if self.transforms is None:
                self.transforms = {}
        init = {k: v.detach() for k, v in init.items()}
        self._initial_params = init
        self._layout = FlatLayout(init, min_dim=self.min_dim)
        if self._nothing_to_sample:
            return
        x = self._layout.flatten(init)[None]
        self._value_and_grad = SingleChainPotential(self.potential_fn, self._layout)
        self._start(x, warmup_steps, given, args, kwargs)

    def sample(self, params):
        if self._nothing_to_sample:
            return params.copy()
        if params is not self._last_params or self._cache_cleared:
            current = self._draw(self._state)
            x = self._layout.flatten({k: v.detach() for k, v in params.items()},
                                     auxiliary=current[0, self._layout.data_dim:])[None]
            if not torch.equal(x, current):  # someone else moved the chain (e.g. Gibbs)
                energy, grad = self._value_and_grad(x)
                self._state = self._resync(self._state, x, energy, grad)
            elif self._cache_cleared:  # the potential may have changed (e.g. new data)
                self._state = self._refresh(self._state)
            self._cache_cleared = False
        self._step_once()
        out = self._layout.unravel(self._draw(self._state)[0])
        self._last_params = out
        return out

    def clear_cache(self):
        """As ``pyro.infer.HMC.clear_cache``: forget the potential energy and gradient kept
        for the current position; the next draw recomputes them (e.g. after the data the
        potential closes over changed)."""
        self._cache_cleared = True

    def logging(self):
        return OrderedDict(self._log_values)

    def diagnostics(self):
        return self._chain_diagnostics()[0]

    @property
    def _nothing_to_sample(self):
        """True for a model with no continuous latent site (all observed, deterministic or
        enumerated): as ``pyro.infer.HMC`` does, every draw is the empty initial point."""
        return self._layout is not None and self._layout.dim == 0

    @property
    def inverse_mass_matrix(self):
        """The metric as ``pyro.infer.HMC`` reports it: ``{tuple of site names: block of
        M^{-1}}`` with ``M^{-1} = L L^T`` for the preconditioner ``L``, split into blocks
        by :class:`esh_kernels.core.state_fields.SiteLayout` as the NumPyro kernels split
        theirs (without ``full_mass`` blocks one key of all sites; with them each block's
        matrix and the other sites' diagonal). The current one during a run, the
        last one after it (None before any). Under ``BatchedMCMC`` every value has a leading
        chain axis."""
        scale = self._state.adapt_state.scale if self._state is not None else self._final_scale
        if scale is None:
            return None
        layout = SiteLayout.build(self._layout.site_indices(), self._dense_mass, self._dense_blocks, None)
        blocks = layout.split(metric_inverse(scale, self._dense_mass), self._dense_mass)
        return {k: v[0] if scale.shape[0] == 1 else v for k, v in blocks.items()}

    @property
    def mass_matrix_adapter(self):
        """Pyro's ``HMC`` hook for a custom metric; these kernels adapt their own
        (``dense_mass`` / ``full_mass``), so there is none."""
        return None

    @mass_matrix_adapter.setter
    def mass_matrix_adapter(self, value):
        # the metric changes efficiency, not the target: warn and keep sampling
        warnings.warn(
            f"{type(self).__name__} adapts its own metric (diagonal, dense, or dense blocks "
            f"with `full_mass=[(site, ...), ...]`); the custom `mass_matrix_adapter` "
            f"{type(value).__name__} is ignored (pyro.infer.NUTS supports it).",
            UserWarning,
            stacklevel=2,
        )

    @property
    def initial_trace(self):
        """A Pyro trace to start from, as with ``pyro.infer.HMC``: at set-up its continuous
        latent sites, mapped to the unconstrained space, are the initial parameters
        (``initial_params``, if given, take precedence). None: ``init_strategy`` picks."""
        return self._initial_trace

    @initial_trace.setter
    def initial_trace(self, trace):
        self._initial_trace = trace

    def cleanup(self):
        if self._state is not None:  # kept for `inverse_mass_matrix` after the run
            self._final_scale = self._state.adapt_state.scale.detach()
        self._initial_params = None
        self._state = None
        self._value_and_grad = None
        self._compiled = {}
        self._isokinetic = None
        self._last_params = None

    #: per-run attributes that are not pickled (compiled graphs, closures, tensors)
    _transient = ("_state", "_value_and_grad", "_compiled", "_last_params", "_stats", "_monitor",
                  "_isokinetic", "_grads_warmup", "_grads_sample")

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in self._transient:
            state[key] = {} if key == "_compiled" else ([] if key == "_stats" else None)
        if self.model is not None:
            state["potential_fn"] = None  # rebuilt by setup
        return state

    # -- batched chains (esh_kernels.pyro.BatchedMCMC) -------------------------------------

    def setup_batched(self, warmup_steps, num_chains, *args, initial_params=None, **kwargs):
        """Set up ``num_chains`` chains sampled together as one ``(C, d)`` batch."""
        self._reset()
        num_chains = check_int("num_chains", num_chains, 1)
        self._num_warmup = check_int("warmup_steps", warmup_steps, 0)
        name = type(self).__name__
        if initial_params is not None:
            init = {k: torch.as_tensor(v).detach() for k, v in initial_params.items()}
            for k, v in init.items():
                if v.dim() == 0 or v.shape[0] != num_chains:
                    raise ValueError(
                        f"initial_params['{k}'] must have a leading dimension of size "
                        f"num_chains={num_chains}, got shape {tuple(v.shape)}"
                    )
        else:
            init = None
        given = init is not None
        if self.model is not None:
            found, trace, enumerated = self._initialize_model(args, kwargs, num_chains, init)
            if init is None:
                init = found if num_chains > 1 else {k: v[None] for k, v in found.items()}
            layout = FlatLayout(init, batch_dims=1, min_dim=self.min_dim)
            batched = BatchedPotential(
                layout, num_chains, model=self.model, model_args=args, model_kwargs=kwargs,
                transforms=self.transforms, trace=trace,
                depth=plate_depth(trace, self._max_plate_nesting), enumerated=bool(enumerated),
            )
        else:
            if init is None:
                raise ValueError(
                    "Valid `initial_params` ({site: (num_chains, *shape)} unconstrained "
                    "tensors) must be given with `potential_fn`."
                )
            if self.transforms is None:
                self.transforms = {}
            layout = FlatLayout(init, batch_dims=1, min_dim=self.min_dim)
            batched = BatchedPotential(layout, num_chains, potential_fn=self.potential_fn)
        self._initial_params = init
        self._layout = layout
        self._num_chains = num_chains
        if self._nothing_to_sample:
            return
        x = layout.flatten(init, batch_dims=1)
        if self.model is not None:
            check_batched_potential(batched, SingleChainPotential(self.potential_fn, layout), x, name)
        self._value_and_grad = batched
        self._start(x, warmup_steps, given, args, kwargs)

    def sample_batched(self):
        """One iteration of every chain; returns the draws, ``(C, d)`` unconstrained."""
        if self._nothing_to_sample:
            return torch.zeros(self._num_chains, 0)
        self._step_once()
        return self._draw(self._state)

    # -- shared machinery ----------------------------------------------------------------

    def _initialize_model(self, args, kwargs, num_chains, initial_params):
        """Pyro's ``initialize_model``, called as ``pyro.infer.HMC`` calls it (discrete sites
        enumerated and summed out); sets ``potential_fn`` and ``transforms``. Returns the
        initial parameters, a prior trace and the names of the enumerated sites. Pyro's
        "cannot find valid initial params" becomes a ``ValueError`` that names the sites
        whose log density is not finite at a draw of ``init_strategy``."""
        trace = model_trace(self.model, args, kwargs)
        enumerated = enumerated_sites(trace, type(self).__name__)
        try:
            init, self.potential_fn, self.transforms, _ = initialize_model(
                self.model,
                args,
                kwargs,
                transforms=self._user_transforms,
                max_plate_nesting=self._max_plate_nesting,
                init_strategy=self._init_strategy,
                num_chains=num_chains,
                initial_params=initial_params,
            )
        except ValueError as e:
            if "cannot find valid initial params" not in str(e):
                raise
            sites = nonfinite_sites(self.model, args, kwargs,
                                    plate_depth(trace, self._max_plate_nesting),
                                    InitMessenger(self._init_strategy))
            raise ValueError(
                f"{type(self).__name__}: the potential energy or its gradient is not finite at "
                f"any initial point pyro's initialize_model drew with "
                f"init_strategy={self._strategy_name}{_sites_text('; at one such draw ', sites)}"
                ". Check the model, or pick another `init_strategy` or pass `initial_params`."
            ) from e
        if self._initial_trace is not None and initial_params is None:
            init = self._start_from_initial_trace(init, num_chains)
        return init, trace, enumerated

    def _start_from_initial_trace(self, init, num_chains):
        """``init`` with each continuous latent site the ``initial_trace`` holds replaced by
        its value there, in the unconstrained space (for every chain)."""
        nodes = self._initial_trace.nodes
        out = dict(init)
        for name, value in init.items():
            if name in nodes and nodes[name]["type"] == "sample":
                z = self.transforms[name](nodes[name]["value"].detach()).to(value)
                out[name] = z.expand(value.shape) if num_chains > 1 else z.reshape(value.shape)
        return out

    @property
    def _strategy_name(self):
        fn = getattr(self._init_strategy, "func", self._init_strategy)  # init_to_value(...) is a partial
        return getattr(fn, "__name__", None) or repr(fn)

    def _start(self, x, warmup_steps, given, model_args, model_kwargs):
        """Initial state of the chains at ``x`` (``(C, d)``); ``given``: ``x`` comes from the
        user's ``initial_params``."""
        self._num_warmup = warmup_steps
        energy, grad = self._value_and_grad(x)
        self._check_finite_start(x, energy, grad, given, model_args, model_kwargs)
        self._dense_mass, auto = metric_layout(self._dense_choice, x.shape[-1], self._initial_metric,
                                               pooled=self._options.pools_chains(self._num_chains))
        self._metric_mask = AUTO_METRIC if auto else None
        self._scale0 = None
        if self._initial_metric is not None:
            scale = initial_scale(self._initial_metric, self._dense_mass, self._layout.site_indices(),
                                  x.shape[-1], np.float64, self._layout.dim - self._layout.data_dim)
            self._scale0 = torch.as_tensor(scale, dtype=x.dtype, device=x.device).expand(
                (x.shape[0],) + scale.shape).clone()
        if self._dense_blocks is not None:
            mask = block_mask(self._dense_blocks, self._layout.site_indices(), self._layout.dim)
            self._metric_mask = torch.as_tensor(mask, dtype=x.dtype, device=x.device)
        self._state = self._init_state(x, energy, grad)
        self._start_self_check(x)
        self._grads_warmup = x.new_zeros(x.shape[0])
        self._grads_sample = x.new_zeros(x.shape[0])
        self._t = 0
        self._build(x)
        self.compiled_modes = {name: c.mode for name, c in self._compiled.items()}

    def _build(self, x):
        """Compile the per-step functions (subclasses; ``jit_compile``)."""

    def _step_once(self):
        i = self._t
        x_prev = self._draw(self._state)
        self._state = self._transition(self._state, i)
        stats = self._iteration_stats(self._state)
        if i < self._num_warmup:
            self._grads_warmup = self._grads_warmup + stats["n_steps"]
        else:
            self._grads_sample = self._grads_sample + stats["n_steps"]
            self._stats.append(stats)
        self._t = i + 1
        self._update_self_check(i, x_prev, stats)

    # -- self-check (core/self_check.py) ---------------------------------------------------

    def _start_self_check(self, x):
        """Empty self-check statistics. Chains are numbered in the order this kernel ran
        them (``pyro.infer.MCMC`` sets up one chain at a time; ``BatchedMCMC`` numbers its
        batch 0..C-1)."""
        C = x.shape[0]
        if C > 1:
            self._chains_started = 0
        if C > 1 or self._chains_started == 0:
            self.self_check_findings = []
        chain = torch.arange(self._chains_started, self._chains_started + C)
        self._chains_started += C
        self._monitor = self_check.monitor_init(x, chain)
        self._early_checks = self_check.early_checkpoints(self._num_warmup)

    def _update_self_check(self, i, x_prev, stats):
        nw = self._num_warmup
        if i in (nw // 2, nw):
            self._monitor = self_check.monitor_restart(self._monitor, True)
        self._monitor = self_check.monitor_update(
            self._monitor, x_prev, self._draw(self._state), stats["n_steps"], self._options.max_steps,
            stats["diverging"], stats.get("accept_prob"),
        )
        if i in self._early_checks:
            self._run_self_check("early")
        if i == nw - 1:
            self._run_self_check("warmup")
        if i >= nw and self_check.recent_checkpoint(i - nw + 1):
            self._run_self_check("recent")
            self._monitor = self_check.monitor_restart(self._monitor, True, self_check.RECENT_FIELDS)

    def _run_self_check(self, phase):
        """Look at the statistics; warn once per chain and symptom. ``phase``: ``"early"``
        (:func:`esh_kernels.core.self_check.early_flags`), ``"warmup"``, ``"sampling"`` or
        ``"recent"`` (:func:`esh_kernels.core.self_check.recent_flags`)."""
        m, adapt = self._monitor, self._state.adapt_state
        scale_diag = scale_diagonal(adapt.scale, self._dense_mass)
        has_accept = "accept_prob" in self._iteration_stats(self._state)
        flags = self_check.phase_flags(phase, m, adapt.step_size, scale_diag, has_accept)
        if not any(bool(torch.as_tensor(f).any()) for f in flags):
            return
        host = [torch.as_tensor(f).cpu().numpy() for f in flags]
        m_host = type(m)(*(a.detach().cpu().numpy() for a in m))
        self_check.report(self.self_check_findings, type(self).__name__, phase, m_host,
                          adapt.step_size.detach().cpu().numpy(), host, self._options.max_steps,
                          self.self_check_remedies, self._step_size_tuned)

    def _check_finite_start(self, x, energy, grad, given, model_args, model_kwargs):
        """``ValueError`` if the potential energy or its gradient is not finite at a chain's
        initial point ``x[c]``; with a model it names the sites whose log density is not
        finite there. Pyro checks only the points it draws itself, so this is what catches
        invalid ``initial_params``."""
        bad = ~(torch.isfinite(energy) & finite_rows(grad))
        if not bool(bad.any()):
            return
        c = int(torch.nonzero(bad)[0])
        what = "gradient of the potential energy" if bool(torch.isfinite(energy[c])) else "potential energy"
        chain = f" of chain {c}" if x.shape[0] > 1 else ""
        msg = (
            f"{type(self).__name__}: the {what} at the initial parameters{chain} is not finite "
            f"(potential energy {float(energy[c])}). "
        )
        if self.model is None:
            raise ValueError(msg + "The given `initial_params` are invalid: pass unconstrained "
                             "values at which `potential_fn` and its gradient are finite.")
        values = {k: self.transforms[k].inv(v) for k, v in self._layout.unravel(x[c]).items()}
        depth = plate_depth(model_trace(self.model, model_args, model_kwargs), self._max_plate_nesting)
        sites = nonfinite_sites(self.model, model_args, model_kwargs, depth,
                                poutine.condition(data=values))
        msg += _sites_text("At these parameters ", sites, ". ")
        if given:
            msg += ("The given `initial_params` are invalid: pass unconstrained values at which "
                    "the model's log density and its gradient are finite, or leave them out to "
                    "let `init_strategy` pick.")
        else:
            msg += (f"Check the model, or pick another `init_strategy` (now "
                    f"{self._strategy_name}) or `initial_params`.")
        raise ValueError(msg)

    def _chain_diagnostics(self):
        """One dict per chain: ``divergences`` (post-warmup indices), the tuned step size,
        gradient evaluations, the per-draw sample statistics as lists, and what the
        self-check found (``self-check``: a list of messages). Pyro asks for these at the
        end of a chain, so the self-check looks at the sampling draws here."""
        if self._nothing_to_sample:
            return [OrderedDict([("divergences", []), ("gradient evaluations (warmup)", 0.0),
                                 ("gradient evaluations (sampling)", 0.0), ("self-check", [])])
                    for _ in range(self._num_chains)]
        if self._monitor is not None and self._t > self._num_warmup:
            self._run_self_check("sampling")
        C = self._num_chains
        if self._stats:
            stacked = {k: torch.stack([s[k] for s in self._stats]) for k in self._stats[0]}
            host = {k: v.detach().cpu() for k, v in stacked.items()}
        else:
            host = {}
        summary = {k: v.detach().cpu() for k, v in self._final_parameters().items()}
        gw = self._grads_warmup.detach().cpu() if self._grads_warmup is not None else None
        gs = self._grads_sample.detach().cpu() if self._grads_sample is not None else None
        out = []
        for c in range(C):
            d = OrderedDict()
            div = host["diverging"][:, c] if host else torch.zeros(0, dtype=torch.bool)
            d["divergences"] = torch.nonzero(div).reshape(-1).tolist()
            if "accept_prob" in host:
                d["acceptance rate"] = float(host["accept_prob"][:, c].mean())
            for k, v in summary.items():
                d[k] = float(v[c])
            d["gradient evaluations (warmup)"] = float(gw[c]) if gw is not None else 0.0
            d["gradient evaluations (sampling)"] = float(gs[c]) if gs is not None else 0.0
            for k, v in host.items():
                d[k] = v[:, c].tolist()
            first = self._chains_started - C
            d["self-check"] = [msg for chain, _, msg in self.self_check_findings
                               if chain in (first + c, -1)]
            out.append(d)
        return out

    def _set_log_values(self, values):
        """Progress-bar postfix (strings), from host numbers fetched anyway."""
        self._log_values = values


def _on_host(metric):
    """A user's ``inverse_mass_matrix`` (an array, or ``{site or tuple of sites: array}``)
    with its tensors as numpy arrays, for :func:`esh_kernels.core.mass_matrix.initial_scale`."""
    if isinstance(metric, dict):
        return {k: _on_host(v) for k, v in metric.items()}
    if torch.is_tensor(metric):
        return metric.detach().cpu().double().numpy()
    return metric


def _sites_text(before, sites, after=""):
    """:func:`esh_kernels.core.checks.non_finite_sites_text` framed by ``before`` and
    ``after`` (nothing when there is nothing to say)."""
    text = non_finite_sites_text(sites)
    return f"{before}{text}{after}" if text else ""
