"""What every NumPyro kernel of this package shares: model/potential
set-up through NumPyro's ``initialize_model``, flat-vector potentials, the batched
(``chain_method="vectorized"``) plumbing and pickling (``docs/api_notes.md`` §1).

A subclass implements two pure functions on ONE chain:

* ``_init_chain(x, energy, grad, rng_key, num_warmup) -> state`` (a namedtuple with fields
  ``i``, ``z``, ``rng_key``, ``diverging``, ...), and
* ``_sample_chain(state, value_and_grad) -> state``, where ``value_and_grad(x)`` returns the
  potential energy and its gradient at a flat position vector ``x``.

The base class vmaps them over chains when NumPyro hands ``init`` a batch of keys, and
rebuilds the potential from ``model_args`` inside ``sample`` so that
``MCMC(jit_model_args=True)`` sees new data (api_notes Gotcha #2).
"""

import copy
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random, vmap
from jax.flatten_util import ravel_pytree
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.hmc_util import _value_and_grad
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import ParamInfo, _transforms_from_trace, initialize_model, transform_fn
from numpyro.util import identity, is_prng_key

from esh_kernels.core.options import KernelArguments, from_arguments
from esh_kernels.numpyro._code_maps import warn_if_near_map_limit
from esh_kernels.numpyro.sharding import follow_keys, replicated
from esh_kernels.core import self_check
from esh_kernels.core.metropolis import DIVERGENCE_THRESHOLD
from esh_kernels.core.checks import check_int, check_model_arguments, non_finite_sites_text
from esh_kernels.core.adaptation import AUTO_METRIC
from esh_kernels.core.auxiliary import auxiliary_dims, auxiliary_energy, model_energy

#: ``random.fold_in`` tag of the key stream that draws the auxiliary coordinates' start
AUXILIARY_STREAM = 7
from esh_kernels.core.mass_matrix import block_mask, check_dense_mass, initial_scale, metric_layout
from esh_kernels.core.preconditioning import scale_diagonal
from esh_kernels.core.state_fields import SiteLayout

# static pytree node: the site layout rides in the adapt states' treedef, not as a leaf
jax.tree_util.register_static(SiteLayout)


class FlatKernel(KernelArguments, MCMCKernel):
    """Base class: see the module docstring."""

    #: smallest dimension the dynamics support (ESH is singular in 1-D); a model with
    #: fewer gets auxiliary standard normal coordinates (``core/auxiliary.py``)
    min_dim = 1
    divergence_threshold = DIVERGENCE_THRESHOLD
    sample_field = "z"
    #: whether the first sampling draw recomputes the cached energy and gradient for the
    #: arguments it is given (:meth:`_refresh_at_first_sampling_draw`)
    refreshes_at_sampling_start = True
    #: the kernel's own advice per self-check symptom (``core/self_check.py``), put
    #: before the generic remedy in its warnings
    self_check_remedies = {}

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        dense_mass="auto",
        inverse_mass_matrix=None,
        init_strategy=init_to_uniform,
        forward_mode_differentiation=False,
        **options,
    ):
        init_strategy = init_to_uniform if init_strategy is None else init_strategy
        check_model_arguments(model, potential_fn, init_strategy, "NumPyro")
        self._options = from_arguments(self.options_type, type(self).__name__, options)
        self._model = model
        self._potential_fn = potential_fn
        #: the user's choice; ``_dense_mass`` is the layout it gives the model (``init``)
        self._dense_choice, self._dense_blocks = check_dense_mass(dense_mass)
        self._dense_mass = self._dense_choice is True
        self._inverse_mass_matrix = inverse_mass_matrix
        #: block structure of the dense metric and initial preconditioner, set by ``init``
        self._metric_mask = None
        self._scale0 = None
        #: the model's sites and NumPyro's mass-matrix keys (None for a ``potential_fn``)
        self._site_layout = None
        #: replicated sharding for the self-check's callback when the chains are sharded
        self._report_sharding = None
        self._init_strategy = init_strategy
        self._forward_mode_differentiation = bool(forward_mode_differentiation)
        #: whether ``init`` found the kernel running as a block of ``numpyro.infer.Gibbs``
        self._gibbs_block = False
        #: dimension of the dynamics: the model's ``_data_dim`` unconstrained dimensions
        #: plus any auxiliary coordinates (``core/auxiliary.py``)
        self._dim = None
        self._data_dim = None
        self._num_warmup = 0
        self._forget_model()

    def _forget_model(self):
        """Unset what ``init`` builds from the model and what a run records: a new kernel,
        or a copy bound to another model (:meth:`wrap_model`)."""
        self._potential_fn_gen = None
        self._postprocess_fn = None
        #: the latent sites' inverse transforms (None where a support depends on other
        #: values, so that constraining needs a model replay)
        self._inv_transforms = None
        self._sample_fn = None
        self._unravel = None
        self._chains_started = 0
        #: what the self-check found in the latest run: ``(chain, symptom, message)``
        self.self_check_findings = []

    # -- MCMCKernel API ------------------------------------------------------------------

    @property
    def model(self):
        return self._model

    @property
    def default_fields(self):
        """The draw and every statistic :func:`esh_kernels.to_arviz` turns into
        ``sample_stats`` (``sample_stats_fields``), so that ArviZ diagnostics work without
        ``extra_fields``."""
        from esh_kernels.arviz import sample_stats_fields

        return (self.sample_field,) + sample_stats_fields(self)

    def postprocess_fn(self, model_args, model_kwargs):
        if self._postprocess_fn is None:
            return identity
        return self._postprocess_fn(*model_args, **model_kwargs)

    def get_constrain_fn(self, model_args=(), model_kwargs=None, *, return_deterministic=False):
        """Unconstrained draws to constrained site values, as NumPyro's
        ``HMC.get_constrain_fn``: by the sites' transforms alone (what ``numpyro.infer.Gibbs``
        conditions the other blocks on at every sweep), by a replay of the model with
        ``return_deterministic`` or where a support depends on other values."""
        if self._model is None:
            return identity
        if self._postprocess_fn is None:
            raise RuntimeError("`get_constrain_fn` requires the kernel to be initialized; run `init` first.")
        if self._inv_transforms is None or return_deterministic:
            return self.postprocess_fn(model_args, {} if model_kwargs is None else model_kwargs)
        return partial(transform_fn, self._inv_transforms)

    def get_potential_fn(self, model_args=(), model_kwargs=None):
        """The potential energy on the unconstrained site values, as NumPyro's
        ``HMC.get_potential_fn`` (the kernels' own auxiliary coordinates, ``core/auxiliary.py``,
        are not part of it)."""
        if self._model is None:
            return self._potential_fn
        if self._potential_fn_gen is None:
            raise RuntimeError("`get_potential_fn` requires the kernel to be initialized; run `init` first.")
        return self._potential_fn_gen(*model_args, **({} if model_kwargs is None else model_kwargs))

    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs={}):
        num_warmup = check_int("num_warmup", num_warmup, 0)
        warn_if_near_map_limit(type(self).__name__)
        batched = not is_prng_key(rng_key)
        keys = rng_key
        if batched:
            rng_key, key_init = jnp.swapaxes(vmap(random.split)(rng_key), 0, 1)
        else:
            rng_key, key_init = random.split(rng_key)
        z0 = self._initial_params(key_init, batched, init_params, model_args, model_kwargs)
        one = jax.tree.map(lambda a: a[0], z0) if batched else z0
        flat, self._unravel = ravel_pytree(one)
        self._data_dim = int(flat.shape[0])
        self._dim = self._data_dim + auxiliary_dims(self._data_dim, self.min_dim)
        self._set_metric(one, flat.dtype, rng_key.shape[0] if batched else 1)
        self._num_warmup = num_warmup
        value_and_grad = self._flat_value_and_grad(model_args, model_kwargs)

        def init_one(z, key):
            x = self._flat(z, key)
            energy, grad = value_and_grad(x)
            return self._init_chain(x, energy, grad, key, num_warmup)

        state = vmap(init_one)(z0, rng_key) if batched else init_one(z0, rng_key)
        self._check_finite_start(state, init_params is not None,
                                 key_init[0] if batched else key_init, model_args, model_kwargs)
        if self._dim == 0:
            # No continuous latent site (an empty model, only observed or deterministic
            # sites): nothing to move. Each draw is the empty position, and NumPyro's
            # postprocessing adds the deterministic sites, as it does for NUTS.
            self._sample_fn = self._no_latent_step
            return state
        self._sample_fn = self._sample_batch if batched else self._sample_chain
        state = state._replace(monitor=self._monitor_init(state, batched))
        self._report_sharding = replicated(keys) if batched else None
        return follow_keys(state, keys) if batched else state

    @staticmethod
    def _no_latent_step(state, value_and_grad):
        return state._replace(i=state.i + 1)

    def _sample_batch(self, state, value_and_grad):
        """Transition of a batch of chains (``chain_method="vectorized"``). The chains are
        at the same iteration, so each sees it unbatched: branches on it (warmup or not, a
        metric window's end) stay ``lax.cond`` under ``vmap`` and run once, not both."""
        i = state.i[0]
        return vmap(lambda c: self._sample_chain(c._replace(i=i), value_and_grad))(state)

    def sample(self, state, model_args, model_kwargs):
        assert self._sample_fn is not None, "`init` must be called before `sample`."
        value_and_grad = self._flat_value_and_grad(model_args, model_kwargs)
        if self._dim == 0:
            return self._sample_fn(state, value_and_grad)
        state = self._refresh_at_first_sampling_draw(state, value_and_grad)
        return self._self_check(state, self._sample_fn(state, value_and_grad))

    def _refresh_at_first_sampling_draw(self, state, value_and_grad):
        """``state`` refreshed (:meth:`refresh`) for the arguments of this draw where it is
        the first sampling draw: NumPyro's ``mcmc.warmup(key, y)`` then ``mcmc.run(key,
        y_new)`` hands ``run`` the warmup's state, whose cached potential energy is ``y``'s,
        and an adjusted kernel then rejected its proposals (a location model, 20
        observations moved by 1, posterior mean 1.945:
        ``AdjustedESH`` read 0.950 with every draw repeated, ``TunedHMC`` 1.143 with 80%;
        1.950 and 1.919 with this refresh; ``NUTS`` read 0.820, every draw repeated). One
        gradient per chain and run, not counted in ``n_steps``, which stays the transition's
        own (NumPyro's ``num_steps``: its ``test_fixed_num_steps`` reads a fixed number of
        steps there); the chains are at the same iteration, so the branch runs once.
        A run continued from ``last_state`` starts past that draw: ``refresh`` it
        (``docs/troubleshooting.md``, "Continuing a run with new data")."""
        if not (self.refreshes_at_sampling_start and self._num_warmup > 0):
            return state
        first = (state.i[0] if jnp.ndim(state.i) > 0 else state.i) == self._num_warmup
        return lax.cond(first, lambda s: self._refreshed(s, value_and_grad), lambda s: s, state)

    # -- a block of numpyro.infer.Gibbs (NumPyro >= 0.22; api_notes §1.1) ----------------

    def wrap_model(self, wrapper):
        """A copy of this kernel bound to ``wrapper(model)``, its model closures built anew
        at its ``init``: how ``numpyro.infer.Gibbs`` conditions a block on the other
        blocks' sites (NumPyro's ``HMC.wrap_model``)."""
        if self._model is None:
            raise ValueError(
                f"{type(self).__name__}: `wrap_model` is not supported for kernels built from "
                "a potential function.")
        kernel = copy.copy(self)
        kernel._model = wrapper(self._model)
        kernel._forget_model()
        return kernel

    def refresh(self, state, model_args, model_kwargs):
        """``state`` with the potential energy and gradient it caches recomputed under
        ``(model_args, model_kwargs)``, the chain left where it is: what
        ``numpyro.infer.Gibbs`` calls after another block moved the sites this block is
        conditioned on (NumPyro's ``HMC.refresh``)."""
        assert self._sample_fn is not None, "`init` must be called before `refresh`."
        if self._dim == 0:
            return state
        return self._refreshed(state, self._flat_value_and_grad(model_args, model_kwargs))

    def _refreshed(self, state, value_and_grad):
        """:meth:`_refresh_chain` of one chain or of a vectorized run's batch."""
        one = partial(self._refresh_chain, value_and_grad=value_and_grad)
        return vmap(one)(state) if jnp.ndim(state.i) > 0 else one(state)

    def _refresh_chain(self, state, value_and_grad):
        """One chain's :meth:`refresh` where the draw is the dynamics' position
        (``AdjustedESH``, ``TunedHMC``)."""
        energy, grad = value_and_grad(state.integrator.x)
        return state._replace(potential_energy=self._model_energy(state.integrator.x, energy),
                              integrator=state.integrator._replace(energy=energy, grad=grad))

    # -- self-check (core/self_check.py) -------------------------------------------------

    def _monitor_init(self, state, batched):
        """Empty self-check statistics. A vectorized run numbers its batch 0..C-1; a chain
        run alone holds -1 and is named on the host, in the order this kernel started its
        chains (so the state, which NumPyro compares across runs, does not depend on how
        often the kernel was used); under pmap (-2) the number is unknown."""
        x = self._flat_draw(state.z, batched)
        if batched:
            chain = jnp.arange(x.shape[0], dtype=jnp.int32)
            self._chains_started = 0
        elif isinstance(x, jax.core.Tracer):
            chain = jnp.array(-2, jnp.int32)
        else:
            chain = jnp.array(-1, jnp.int32)
            self._chains_started += 1
        if batched or self._chains_started <= 1:
            self.self_check_findings = []
        return self_check.monitor_init(x, chain)

    def _flat_draw(self, z, batched):
        return vmap(lambda t: ravel_pytree(t)[0])(z) if batched else ravel_pytree(z)[0]

    def _self_check(self, old, new):
        """Feed the new draw to the self-check statistics; at a checkpoint, report any
        problem to the host (a callback taken only when a flag is up)."""
        batched = jnp.ndim(new.i) > 0
        i = old.i[0] if batched else old.i
        x_prev = self._flat_draw(old.z, batched)
        x = self._flat_draw(new.z, batched)
        m = old.monitor if old.monitor is not None else self_check.monitor_init(x_prev, jnp.array(-1))
        nw = self._num_warmup
        m = self_check.monitor_restart(m, (i == nw // 2) | (i == nw))
        accept = getattr(new, "accept_prob", None)
        m = self_check.monitor_update(m, x_prev, x, new.n_steps, self._options.max_steps, new.diverging, accept)
        adapt = new.adapt_state
        # the checks look at the draws of the model's coordinates only
        scale_diag = scale_diagonal(adapt.scale, self._dense_mass)[..., : self._data_dim]

        def check(phase):
            flags = self_check.phase_flags(phase, m, adapt.step_size, scale_diag, accept is not None)
            raised = jnp.any(jnp.stack([jnp.any(f) for f in flags]))
            report = partial(self._report, phase)
            values = (m, adapt.step_size, flags)
            if self._report_sharding is not None:  # chains sharded over devices
                values = lax.with_sharding_constraint(values, self._report_sharding)
            lax.cond(raised, lambda: jax.debug.callback(report, *values), lambda: None)

        early = self_check.early_checkpoints(nw)
        if early:
            lax.cond(jnp.any(jnp.stack([i == e for e in early])), lambda: check("early"), lambda: None)
        lax.cond(i == nw - 1, lambda: check("warmup"), lambda: None)
        n = (i - nw + 1).astype(x.dtype)
        lax.cond((i >= nw) & self_check.sampling_checkpoint(n), lambda: check("sampling"), lambda: None)
        recent = (i >= nw) & self_check.recent_checkpoint(n)
        lax.cond(recent, lambda: check("recent"), lambda: None)
        return new._replace(monitor=self_check.monitor_restart(m, recent, self_check.RECENT_FIELDS))

    def _report(self, phase, m, step_size, flags):
        """Host side of the self-check: warn once per chain and symptom."""
        if np.ndim(m.chain) == 0 and int(m.chain) == -1:  # a chain run alone: the latest
            m = m._replace(chain=np.asarray(self._chains_started - 1))
        self_check.report(self.self_check_findings, type(self).__name__, phase, m, step_size,
                          flags, self._options.max_steps, self.self_check_remedies,
                          self._step_size_tuned)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_sample_fn"] = None
        return state

    # -- helpers -------------------------------------------------------------------------

    def _set_metric(self, position, dtype, num_chains):
        """The metric's layout (``dense_mass="auto"`` resolved for the model's dimension and
        for whether warmup pools the ``num_chains`` chains' windows),
        the block mask of ``dense_mass`` and the preconditioner of ``inverse_mass_matrix``
        for the layout of ``position`` (``core/mass_matrix.py``)."""
        sites = site_indices(position)
        self._dense_mass, auto = metric_layout(self._dense_choice, self._dim, self._inverse_mass_matrix,
                                               self._options.pools_chains(num_chains))
        self._metric_mask = AUTO_METRIC if auto else None
        if self._dense_blocks is not None:
            self._metric_mask = block_mask(self._dense_blocks, sites, self._dim).astype(dtype)
        self._scale0 = None
        self._site_layout = None if sites is None else SiteLayout.build(
            sites, self._dense_mass, self._dense_blocks, self._inverse_mass_matrix)
        if self._inverse_mass_matrix is not None:
            self._scale0 = jnp.asarray(initial_scale(
                self._inverse_mass_matrix, self._dense_mass, sites, self._dim, dtype,
                self._dim - self._data_dim))

    def _with_sites(self, adapt):
        """``adapt`` holding the model's :class:`~esh_kernels.core.state_fields.SiteLayout`,
        so that its ``inverse_mass_matrix`` / ``mass_matrix_sqrt`` read in NumPyro's dict
        form (``core/state_fields.py``)."""
        return adapt._replace(sites=self._site_layout)

    def _initial_params(self, key_init, batched, init_params, model_args, model_kwargs):
        if self._model is None:
            if init_params is None:
                raise ValueError("Valid value of `init_params` must be provided with `potential_fn`.")
            return init_params.z if isinstance(init_params, ParamInfo) else init_params
        try:
            info = initialize_model(
                key_init,
                self._model,
                dynamic_args=True,
                init_strategy=self._init_strategy,
                model_args=model_args,
                model_kwargs=model_kwargs,
                forward_mode_differentiation=self._forward_mode_differentiation,
            )
        except Exception as err:
            # NumPyro's own message for a discrete latent site asks for `funsor`; name the
            # site instead (enumerated sites work when funsor is installed).
            key = key_init[0] if batched else key_init
            self._raise_if_discrete(key, model_args, model_kwargs, err)
            if isinstance(err, RuntimeError) and "Cannot find valid initial parameters" in str(err):
                detail = non_finite_sites_text(self._non_finite_sites(key, model_args, model_kwargs))
                raise ValueError(
                    f"{type(self).__name__}: no initial point with a finite potential energy "
                    f"and gradient was found with init_strategy={self._init_strategy_name()}"
                    f"{f' ({detail})' if detail else ''}. Check the model, or pick "
                    "another `init_strategy` or `init_params`."
                ) from err
            raise
        self._potential_fn_gen = info.potential_fn
        self._postprocess_fn = info.postprocess_fn
        transforms = _transforms_from_trace(info.model_trace, raise_warnings=False)
        self._inv_transforms = None if transforms.dynamic_support else transforms.inv_transforms
        self._gibbs_block = gibbs_block(model_kwargs)
        if self._gibbs_block:
            init_params = self._gibbs_start(info, init_params)
        if init_params is None:
            return info.param_info.z
        return init_params.z if isinstance(init_params, ParamInfo) else init_params

    def _gibbs_start(self, info, init_params):
        """The start of a block of ``numpyro.infer.Gibbs``, which gives a kernel that is not
        NumPyro's ``HMC`` the *constrained* values of its sites as ``init_params``: they
        are mapped to the unconstrained space these kernels sample. Refused, as Gibbs refuses
        them for an ``HMC`` block (its checks run for NumPyro's ``HMC`` only): a discrete
        site left to this block (it would be summed out, and Gibbs would find no draw of
        it), and a site whose support depends on other values (the other blocks would move
        it without a Metropolis test)."""
        latent = {name: site for name, site in info.model_trace.items()
                  if site["type"] == "sample" and not site["is_observed"]}
        discrete = [name for name, site in latent.items() if site["fn"].support.is_discrete
                    and site["infer"].get("enumerate") != "parallel"]
        if discrete:
            raise ValueError(
                f"{type(self).__name__}: Discrete latent sites {discrete} cannot be sampled by "
                "this block; give them to numpyro.infer.DiscreteGibbs (e.g. "
                "`(DiscreteGibbs(model), discrete_latent_sites)`) or mark them with "
                "`infer={'enumerate': 'parallel'}`.")
        if self._inv_transforms is None:  # a support that depends on other values
            raise ValueError(
                f"{type(self).__name__}: the supports of sites {list(latent)} depend on other sites; "
                "Gibbs does not support value-dependent supports across blocks.")
        if init_params is None or isinstance(init_params, ParamInfo):
            return init_params
        return transform_fn(self._inv_transforms, init_params, invert=True)

    def _raise_if_discrete(self, key, model_args, model_kwargs, err):
        try:
            tr = trace(seed(self._model, key)).get_trace(*model_args, **model_kwargs)
        except Exception:  # the model cannot be traced by plain sampling: keep `err`
            return
        for name, site in tr.items():
            if (
                site["type"] == "sample"
                and not site["is_observed"]
                and getattr(site["fn"], "is_discrete", False)
            ):
                raise ValueError(
                    f"{type(self).__name__} samples continuous latent variables only, but "
                    f"site '{name}' is discrete ({type(site['fn']).__name__}). Marginalise "
                    "it out in the model (or install `funsor` so NumPyro enumerates it), or "
                    "sample it by numpyro.infer.DiscreteGibbs and the other sites by this "
                    "kernel in a numpyro.infer.Gibbs: `Gibbs([(DiscreteGibbs(model), "
                    f"discrete_latent_sites), ({type(self).__name__}(model), None)])`."
                ) from err

    def _flat_value_and_grad(self, model_args, model_kwargs):
        pe = self.get_potential_fn(model_args, model_kwargs)
        to_z, d = self._to_z, self._data_dim
        return partial(
            _value_and_grad,
            lambda x: pe(to_z(x)) + auxiliary_energy(x, d),
            forward_mode_differentiation=self._forward_mode_differentiation,
        )

    def _init_strategy_name(self):
        return getattr(self._init_strategy, "__name__", repr(self._init_strategy))

    def _non_finite_sites(self, key, model_args, model_kwargs, z=None):
        """Names of the sample sites (latent, observed, ``factor``) whose log density is
        not finite at the unconstrained position ``z``, or where ``init_strategy`` puts the
        latent sites when ``z`` is None. None when the model cannot be traced this way."""
        model = seed(self._model, key)
        if z is None:
            model = substitute(model, substitute_fn=self._init_strategy)
        else:
            model = substitute(model, data=self._postprocess_fn(*model_args, **model_kwargs)(z))
        try:
            tr = trace(model).get_trace(*model_args, **model_kwargs)
        except Exception:  # e.g. a model that only runs under inference handlers
            return None
        bad = []
        for name, site in tr.items():
            if site["type"] == "sample":
                log_prob = np.asarray(site["fn"].log_prob(site["value"]))
                if not np.all(np.isfinite(log_prob)):
                    bad.append(name)
        return bad

    def _check_finite_start(self, state, given, key, model_args, model_kwargs):
        """``ValueError`` when a chain starts at a non-finite potential energy or gradient,
        naming the sites whose log density is not finite. ``given``: the user passed
        ``init_params`` (then they are what to change, not the ``init_strategy``)."""
        try:
            energy = np.asarray(state.potential_energy)
            grad = np.asarray(state.integrator.grad)
        except jax.errors.ConcretizationTypeError:  # inside pmap: nothing concrete to check
            return
        except jax.errors.TracerArrayConversionError:
            return
        bad_energy = ~np.isfinite(energy)
        bad_grad = ~np.all(np.isfinite(grad.reshape(energy.shape + (-1,))), axis=-1)
        if not np.any(bad_energy | bad_grad):
            return
        what = "potential energy" if np.any(bad_energy) else "gradient of the potential energy"
        chain = int(np.argmax((bad_energy | bad_grad).reshape(-1)))
        sites = None
        if self._model is not None:
            z = state.z if energy.ndim == 0 else jax.tree.map(lambda a: a[chain], state.z)
            sites = self._non_finite_sites(key, model_args, model_kwargs, z)
        where = ("the given `init_params`" if given
                 else f"the initial point from init_strategy={self._init_strategy_name()}")
        fix = ("Check the model, or pass valid `init_params`." if given
               else "Check the model, or pick another `init_strategy` or pass `init_params`.")
        detail = non_finite_sites_text(sites)
        raise ValueError(f"{type(self).__name__}: the {what} at {where} is not finite (chain "
                         f"{chain}{': ' + detail if detail else ''}). {fix}")

    def _to_z(self, x):
        """The model's position from one chain's flat vector (auxiliary coordinates dropped)."""
        return self._unravel(x[: self._data_dim])

    def _model_energy(self, x, energy):
        """The model's potential energy at one chain's flat vector ``x`` from the dynamics'
        ``energy`` there: the state's ``potential_energy`` (``core/auxiliary.py``)."""
        return model_energy(x, energy, self._data_dim)

    def _flat(self, z, key):
        """One chain's flat vector at the model's position ``z``, with its auxiliary
        coordinates (if any) drawn from their standard normal law (``core/auxiliary.py``),
        from a stream of the chain's ``key`` that nothing else uses."""
        x = ravel_pytree(z)[0]
        y = random.normal(random.fold_in(key, AUXILIARY_STREAM), (self._dim - self._data_dim,), x.dtype)
        return jnp.concatenate([x, y])


def gibbs_block(model_kwargs):
    """Whether the kernel runs as a block of ``numpyro.infer.Gibbs`` (NumPyro >= 0.22),
    which passes the other blocks' values in ``model_kwargs[GIBBS_SITES_KWARG]``."""
    try:
        from numpyro.infer.gibbs import GIBBS_SITES_KWARG
    except ImportError:  # NumPyro < 0.22: no composable Gibbs
        return False
    return GIBBS_SITES_KWARG in (model_kwargs or {})


def site_indices(position):
    """``{site: flat indices}`` of a dict position, in ``ravel_pytree``'s order (its leaves
    flattened one after another); None when the position is not a dict (a
    ``potential_fn`` on a bare array). Uses only shapes, so it works on tracers (pmap).
    """
    if not isinstance(position, dict):
        return None
    leaves, treedef = jax.tree_util.tree_flatten(position)
    sizes = [int(np.prod(np.shape(leaf))) for leaf in leaves]
    starts = np.cumsum([0] + sizes[:-1])
    tree = jax.tree_util.tree_unflatten(treedef, [np.arange(a, a + n) for a, n in zip(starts, sizes)])
    return {name: np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(sub)])
            for name, sub in tree.items()}
