"""Each kernel's own arguments, defined, defaulted, checked and documented once for both PPLs.

A kernel takes two kinds of arguments:

* its own (step size, trajectory length, acceptance target, ...): the same in NumPyro and
  Pyro, held by one NamedTuple per kernel here (:class:`ESHOptions`,
  :class:`AdjustedESHOptions`, :class:`TunedHMCOptions`), which also builds the kernel's
  warmup configuration;
* the PPL's (the model or potential, the mass-matrix form, the init strategy, Pyro's
  compilation): in ``numpyro/_base.py`` and ``pyro/_base.py``, shared by the PPL's three
  kernels.

The adapters' constructors take both as keywords, and their signatures (what
``inspect.signature`` and ``help`` show) are assembled from the two by
:func:`kernel_signature`. Adding an argument to a kernel means adding a field and its check
here, using it, testing it, and documenting it on the kernel's page in ``docs/kernels/``.
"""

import inspect
import math
import warnings
from typing import Any, NamedTuple

from esh_kernels.core.checks import check_bool, check_int, check_positive, check_probability, check_refresh_rate
from esh_kernels.core.tuned_warmup import TunedWarmupConfig, initial_trajectory_length
from esh_kernels.core.warmup import (
    AdjustedWarmupConfig,
    ESHWarmupConfig,
    default_trajectory_factor,
    esh_refits_last_window,
)


class KernelArguments:
    """Mixin of the PPLs' kernel base classes: a kernel names its options NamedTuple in
    ``options_type``; ``inspect.signature`` and ``help`` then show the constructor as
    :func:`kernel_signature` assembles it, and the constructor checks the options with
    :func:`from_arguments`."""

    #: the NamedTuple of the kernel's own arguments, set by each kernel
    options_type = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.options_type is not None:
            cls.__signature__ = kernel_signature(cls.__init__, cls.options_type)

    @property
    def _step_size_tuned(self):
        """Whether warmup tunes the step size (``adapt_step_size`` and some warmup; the
        backends' bases keep ``_options`` and ``_num_warmup``): the self-check's
        ``step_tuned`` (``core/self_check.py``)."""
        return bool(self._options.adapt_step_size and self._num_warmup > 0)


#: arguments of NumPyro's and Pyro's ``HMC`` / ``NUTS`` that set a part of those samplers
#: these kernels do not have, and what to write instead: a user who changed ``NUTS`` to one
#: of our kernels learns why the argument is refused (``TypeError``, as for any unknown
#: keyword; NumPyro's own MCMC tests pass them, ``docs/upstream_tests.md``)
HMC_ONLY_ARGUMENTS = {
    "use_multinomial_sampling": "it chooses how NUTS picks a point of its tree (True: "
                                "multinomial, False: slice); these kernels build no tree and "
                                "take either boolean, which leaves their draws as they are",
    "find_heuristic_step_size": "warmup finds the initial step size itself",
    "kinetic_fn": "the kinetic energy is part of each kernel's dynamics",
    "min_stepsize": "it bounds Pyro HMC's step-size adaptation, which these kernels do not use",
    "max_stepsize": "it bounds Pyro HMC's step-size adaptation, which these kernels do not use",
    # AdjustedESH and TunedHMC take it (their own option); only ESH meets this entry
    "target_accept_prob": "it sets the acceptance rate that the step-size adaptation aims for; "
                          "ESH has no accept/reject step (it is unadjusted): its step size is "
                          "tuned to the energy-error budget desired_energy_var (smaller: a smaller "
                          "step and less bias); AdjustedESH takes target_accept_prob",
}


#: values of those arguments that ask for nothing these kernels lack, so the argument is
#: taken and ignored: NumPyro's and Pyro's defaults (a script that writes one out, as
#: ``NUTS(model, max_tree_depth=10)``), ``find_heuristic_step_size=True`` (warmup starts
#: with its own step-size search or adaptation either way), and both values of
#: ``use_multinomial_sampling`` (NUTS's choice between a multinomial and a slice pick
#: within its tree: two exact ways of doing a thing these kernels do not do, so neither
#: changes what they sample; Pyro's own ``test_nuts.py`` passes ``False``). An entry applies
#: to a kernel without an option of that name (``target_accept_prob``: ``ESH`` only)
HMC_ONLY_DEFAULTS = {
    "max_tree_depth": (10,),
    "use_multinomial_sampling": (True, False),
    "find_heuristic_step_size": (False, True),
    "kinetic_fn": (None,),
    "min_stepsize": (1e-10,),
    "max_stepsize": (1e10,),
    "target_accept_prob": (0.8,),
}


def _is_hmc_default(name, value):
    for accepted in HMC_ONLY_DEFAULTS.get(name, ()):
        if accepted is None or isinstance(accepted, bool):
            if value is accepted:
                return True
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == accepted:
            return True
    return False


def max_steps_of_tree_depth(kernel_name, max_tree_depth, max_steps):
    """NUTS's ``max_tree_depth`` as these kernels' ``max_steps``: a tree of depth ``k``
    takes at most ``2**k - 1`` leapfrog steps (gradient evaluations) per transition, which
    is what ``max_steps`` caps. NUTS's ``(warmup, sampling)`` pair: these kernels have one
    cap for both, the larger (a ``UserWarning`` says so). Given with ``max_steps`` too: a
    ``TypeError`` (two caps for one thing)."""
    if max_steps is not None:
        raise TypeError(f"{kernel_name}() got both max_tree_depth and max_steps: both cap the "
                        "leapfrog steps per transition (max_steps = 2**max_tree_depth - 1); "
                        "pass one")
    depths = max_tree_depth if isinstance(max_tree_depth, (tuple, list)) else (max_tree_depth,)
    if len(depths) not in (1, 2):
        raise ValueError(f"max_tree_depth must be an integer or a (warmup, sampling) pair of "
                         f"integers, got {max_tree_depth!r}")
    depths = [check_int("max_tree_depth", k, 1) for k in depths]
    if len(set(depths)) > 1:
        warnings.warn(f"{kernel_name}: max_tree_depth={tuple(depths)} sets NUTS's cap separately "
                      "for warmup and sampling; these kernels have one cap on leapfrog steps per "
                      f"transition, set to the larger, max_steps = 2**{max(depths)} - 1",
                      UserWarning, stacklevel=4)
    return 2 ** max(depths) - 1


def from_arguments(options_type, kernel_name, arguments):
    """The checked options of a kernel from the keyword arguments its constructor got
    beyond the PPL's own; an unknown name is a ``TypeError`` as Python gives it, which for
    an argument of NumPyro's or Pyro's ``HMC`` / ``NUTS`` (:data:`HMC_ONLY_ARGUMENTS`) also
    says why it is not taken and what to use, unless its value is their default
    (:data:`HMC_ONLY_DEFAULTS`), which is ignored. NUTS's ``max_tree_depth`` other than its
    default sets ``max_steps`` (:func:`max_steps_of_tree_depth`)."""
    arguments = {name: value for name, value in arguments.items()
                 if name in options_type._fields or not _is_hmc_default(name, value)}
    if "max_tree_depth" in arguments:
        arguments["max_steps"] = max_steps_of_tree_depth(
            kernel_name, arguments.pop("max_tree_depth"), arguments.get("max_steps"))
    for name in arguments:
        if name not in options_type._fields:
            why = HMC_ONLY_ARGUMENTS.get(name)
            detail = f": it is an argument of HMC / NUTS, and {why}" if why else ""
            raise TypeError(f"{kernel_name}() got an unexpected keyword argument {name!r}{detail}")
    return options_type(**arguments).checked()


def kernel_signature(ppl_init, options_type):
    """The constructor signature a user sees: ``model``, ``potential_fn``, the kernel's own
    options (keyword-only, with their defaults), then the PPL's keyword arguments."""
    params = [p for p in inspect.signature(ppl_init).parameters.values()
              if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]
    positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    ppl_keywords = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    own = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
           for name, default in options_type._field_defaults.items()]
    return inspect.Signature(positional + own + ppl_keywords)


#: the check of each argument, by name: one rule per argument for every kernel that takes it
_CHECKS = {
    "step_size": lambda v: check_positive("step_size", v),
    "adapt_step_size": lambda v: check_bool("adapt_step_size", v),
    "trajectory_length": lambda v: check_positive("trajectory_length", v),
    "steps_per_draw": lambda v: check_positive("steps_per_draw", v, allow_none=False),
    "refresh_rate": check_refresh_rate,
    "desired_energy_var": lambda v: check_positive("desired_energy_var", v, allow_none=False),
    "target_accept_prob": lambda v: check_probability("target_accept_prob", v),
    "adapt_mass_matrix": lambda v: check_bool("adapt_mass_matrix", v),
    "cross_chain": lambda v: check_bool("cross_chain", v),
    "max_steps": lambda v: check_int("max_steps", v, 1),
    "trajectory_factor": lambda v: check_positive("trajectory_factor", v),
    "learning_rate": lambda v: check_positive("learning_rate", v, allow_none=False),
    "regularize_mass_matrix": lambda v: check_bool("regularize_mass_matrix", v),
    "num_steps": lambda v: None if v is None else check_int("num_steps", v, 1),
}


def _initial_step_size(options, d):
    """The step size warmup starts from: the user's ``step_size``, else ``0.5 sqrt(d)``
    (isokinetic dynamics); with ``adapt_step_size=False`` the fixed one."""
    return options.step_size if options.step_size is not None else 0.5 * math.sqrt(d)


def _checked(options):
    """``options`` with every argument checked (a ``ValueError`` names the first bad one)
    and normalised (e.g. numbers to ``float``)."""
    options = type(options)(**{name: _CHECKS[name](value) for name, value in options._asdict().items()})
    if getattr(options, "num_steps", None) is not None and options.trajectory_length is not None:
        raise ValueError("num_steps and trajectory_length both set the trajectory (num_steps "
                         "fixes its number of leapfrog steps, trajectory_length its length): "
                         "pass one")
    if not options.adapt_step_size and options.step_size is None:
        raise ValueError("adapt_step_size=False fixes the step size at `step_size=`, which was "
                         "not given: pass step_size= too (NumPyro's and Pyro's NUTS would fix "
                         "their default 1.0, which suits no particular target)")
    return options


class ESHOptions(NamedTuple):
    """Arguments of ``ESH`` (NumPyro and Pyro).

    :ivar step_size: scaled-time step size (preconditioned frame) that warmup starts from,
        as NUTS's ``step_size``; default None: ``0.5 sqrt(d)``. Warmup tunes it by the
        energy-error criterion (``esh_math.md`` §7.1) unless ``adapt_step_size=False``.
    :ivar adapt_step_size: tune the step size in warmup (default True, as NUTS). False: the
        step size is ``step_size`` throughout (which must then be given), warmup's phase 1
        of adjusted isokinetic transitions included.
    :ivar trajectory_length: physical time per draw, in units of scaled time at the
        reference energy (the mean potential energy of the warmup draws that tuned it; the
        clock is re-anchored to it at every draw, ``esh_math.md`` §4.4); tuned if None so
        that a draw takes ``steps_per_draw`` steps on average, or longer where the slowest of
        ``x`` and ``x^2`` would need more than about 3 draws to decorrelate (§7.5).
    :ivar steps_per_draw: mean leapfrog steps per draw that tuning aims for. The default 2
        gave the most effective samples per gradient on the benchmark Gaussians (1: 83,
        2: 247, 4: 199, 8: 117 per 1000 gradients on the 100-D ill-conditioned one): one
        step per draw repeats points, many steps per draw discard all but one point.
    :ivar refresh_rate: partial velocity refresh rate per unit scaled time (whitened
        frame). ``0`` is the paper's deterministic dynamics, which are not ergodic on
        symmetric targets (an isotropic Gaussian, which every Gaussian becomes after
        preconditioning, conserves angular momentum). ``None`` (default) uses
        ``1/sqrt(d)``, chosen by measurement (``docs/benchmarks.md``).
    :ivar desired_energy_var: target ``Var[dH]/d`` per step for step-size tuning (§7.1):
        the bias tolerance; smaller means less discretisation bias and more gradients. It
        also sets the bias guard's budget for each coordinate, ``0.1 (v / 5e-4)^(1/3)``
        posterior sd (§7.8).
    :ivar adapt_mass_matrix: estimate the preconditioner in warmup (default True).
    :ivar max_steps: cap on steps per draw (a draw stopped by the cap covers less physical
        time; raise it for targets with very uneven density in low dimension).
    :ivar regularize_mass_matrix: NumPyro's argument, as for ``AdjustedESHOptions``
        (default True: Stan's shrinkage of each metric window's estimate).
    :ivar num_steps: HMC's argument, read as the mean number of leapfrog steps per draw:
        warmup sets the time per draw to ``num_steps`` times the mean physical time of a
        step (the ``steps_per_draw`` rule, without the lengthening for slow statistics).
        Each draw still spans that fixed physical time, so its own number of steps varies
        around ``num_steps``: draws of exactly ``n`` steps would span unequal times, and
        equally weighted they would under-count the tails, where ESH's clock runs fast
        (``esh_math.md`` §4.4, "Why it biases nothing"). Replaces ``steps_per_draw``; not
        with ``trajectory_length``.
    """

    step_size: Any = None
    adapt_step_size: Any = True
    trajectory_length: Any = None
    steps_per_draw: Any = 2
    refresh_rate: Any = None
    desired_energy_var: Any = 5e-4
    adapt_mass_matrix: Any = True
    max_steps: Any = 1024
    regularize_mass_matrix: Any = True
    num_steps: Any = None

    def checked(self):
        options = _checked(self)
        default_steps = ESHOptions._field_defaults["steps_per_draw"]
        if options.num_steps is not None and options.steps_per_draw != default_steps:
            raise ValueError("num_steps and steps_per_draw both set the mean number of steps per "
                             "draw: pass one")
        return options

    @property
    def draw_steps(self):
        """Mean leapfrog steps per draw that warmup aims for: ``num_steps`` if given, else
        ``steps_per_draw``."""
        return self.num_steps if self.num_steps is not None else self.steps_per_draw

    def pools_chains(self, num_chains):
        """Whether warmup pools its windows across chains: never (every chain tunes itself)."""
        return False

    initial_step_size = _initial_step_size

    def refresh_length(self, d):
        """``1/refresh_rate`` (default rate ``1/sqrt(d)``); ``inf`` for no refresh."""
        rate = self.refresh_rate if self.refresh_rate is not None else 1.0 / math.sqrt(max(d, 1))
        return 1.0 / rate if rate > 0 else math.inf

    def warmup_config(self, num_warmup, dense, metric_mask, dim):
        """The warmup of both phases (``ESHWarmupConfig``) for ``dim`` coordinates. Phase 1
        runs ``AdjustedESH``'s transitions at ``AdjustedESH``'s own defaults (target acceptance
        and trajectory factor, diagonal or dense), its metric refit within the last window
        where that can help (``esh_refits_last_window``). Until 2026-12-06 it kept that kernel's former defaults
        (0.8 and ``2 sqrt(d)``), which cost about 1.5 times the gradients per phase-1 iteration;
        the measurement that moved it is in ``docs/benchmarks.md`` (notes of 2026-12-06)."""
        phase1 = AdjustedESHOptions._field_defaults
        config = ESHWarmupConfig(
            num_warmup=num_warmup,
            desired_energy_var=self.desired_energy_var,
            steps_per_draw=self.draw_steps,
            tune_step_size=self.adapt_step_size,
            tune_metric=self.adapt_mass_matrix,
            tune_trajectory=self.trajectory_length is None,
            lengthen=self.num_steps is None,
            target_accept_prob=phase1["target_accept_prob"],
            trajectory_factor=default_trajectory_factor(phase1["trajectory_factor"], dense, metric_mask),
            max_steps=self.max_steps,
            metric_mask=metric_mask,
            regularize_metric=self.regularize_mass_matrix,
        )
        return config._replace(continue_last=esh_refits_last_window(config.num_adjusted, bool(dense), dim))


class AdjustedESHOptions(NamedTuple):
    """Arguments of ``AdjustedESH`` (NumPyro and Pyro).

    :ivar step_size: step size (in the preconditioned frame) that warmup starts from, as
        NUTS's ``step_size``; default None: ``0.5 sqrt(d)``. Warmup tunes it by dual
        averaging unless ``adapt_step_size=False``.
    :ivar adapt_step_size: tune the step size in warmup (default True, as NUTS). False: the
        step size is ``step_size`` throughout (which must then be given).
    :ivar trajectory_length: fixed mean trajectory length (distance travelled per
        proposal, preconditioned frame). Given: not tuned. Default: tuned in warmup,
        ``trajectory_factor * sqrt(d)`` lengthened where the slowest of ``x`` and ``x^2``
        random-walks (``esh_math.md`` §7.5).
    :ivar target_accept_prob: acceptance rate that warmup aims for. Default 0.7, chosen
        with ``trajectory_factor`` on the headline yardstick (min over coordinates of bulk
        ESS of ``x`` and ``x^2`` per 1000 gradients, 4 vectorized chains, 1000 + 1000,
        x64; ``docs/kernels/adjusted_esh.md`` has the table): at factor 1, targets 0.7 /
        0.8 / 0.9 gave 170 / 142 / 131 on the 100-D ill-conditioned Gaussian, 134 / 104 / 70
        on eight schools and 28 / 25 / 22 on the logistic regression (medians over seeds).
    :ivar adapt_mass_matrix: whether warmup estimates the preconditioner (default True).
    :ivar max_steps: cap on leapfrog steps (gradient evaluations) per transition.
    :ivar trajectory_factor: the shortest tuned mean trajectory length, in units of
        ``sqrt(d)`` in the whitened frame (about the size of the typical set). Default 1 (2
        with a dense metric: ``esh_kernels.core.warmup.TRAJECTORY_FACTOR`` says why), chosen
        on the same yardstick: factors 0.75 / 1 / 1.25 / 1.5 / 2 at target 0.8 gave 131 /
        142 / 118 / 85 / 59 on the ill-conditioned Gaussian, 97 / 104 / 108 / 84 / 73 on
        eight schools and 19 / 25 / 28 / 35 / 24 on the logistic regression. The former
        default 2 was chosen on ESS of ``x`` alone, which the antithetic longer trajectories
        flatter (ESS of ``x`` 4353 against 975 for ``x^2`` on the Gaussian).
    :ivar num_steps: as for ``TunedHMCOptions`` (HMC's argument), in isokinetic steps per
        proposal: fixed, not jittered or tuned. Not with ``trajectory_length``.
    :ivar regularize_mass_matrix: shrink each metric window's estimate as Stan does
        (default True, as NumPyro's ``regularize_mass_matrix``; ``esh_math.md`` §7.4).
        False: the window's raw sample (co)variance, as NumPyro's
        ``regularize_mass_matrix=False`` (a coordinate that did not move in a window then
        gets a zero scale).
    """

    step_size: Any = None
    adapt_step_size: Any = True
    trajectory_length: Any = None
    target_accept_prob: Any = 0.7
    adapt_mass_matrix: Any = True
    max_steps: Any = 1024
    trajectory_factor: Any = None
    regularize_mass_matrix: Any = True
    num_steps: Any = None

    def checked(self):
        return _checked(self)

    def pools_chains(self, num_chains):
        """Whether warmup pools its windows across chains: never (every chain tunes itself)."""
        return False

    initial_step_size = _initial_step_size

    def warmup_config(self, num_warmup, dense, metric_mask):
        return AdjustedWarmupConfig(
            num_warmup=num_warmup,
            target_accept_prob=self.target_accept_prob,
            tune_step_size=self.adapt_step_size,
            tune_metric=self.adapt_mass_matrix,
            tune_trajectory=self.trajectory_length is None and self.num_steps is None,
            trajectory_factor=default_trajectory_factor(self.trajectory_factor, dense, metric_mask),
            metric_mask=metric_mask,
            max_steps=self.max_steps,
            regularize_metric=self.regularize_mass_matrix,
        )


class TunedHMCOptions(NamedTuple):
    """Arguments of ``TunedHMC`` (NumPyro and Pyro).

    :ivar step_size: leapfrog step size (whitened frame) that warmup starts from, as NUTS's
        ``step_size``: a reasonable-step-size search at the initial point starts there
        (default None: from 1), then dual averaging (with the
        collapse guard of ``esh_math.md`` §7.3). With ``num_warmup=0`` a given step size is
        used as is; with this or ``trajectory_length`` not given, the kernel warns that
        nothing is tuned (then ``T = pi/2``).
    :ivar adapt_step_size: tune the step size in warmup (default True, as NUTS). False: the
        step size is ``step_size`` throughout (which must then be given).
    :ivar trajectory_length: fixed longest trajectory ``T`` (whitened frame; a transition
        integrates for ``h T``, ``h`` in (0, 1) jittered, ``T/2`` on average). Given: not
        tuned. Default: tuned in warmup (``core/tuned_warmup.py``).
    :ivar target_accept_prob: mean acceptance probability that warmup aims for (per
        chain, or averaged over the chains with cross-chain tuning). The default 0.8 was
        re-measured on the headline yardstick (min bulk ESS of ``x`` and ``x^2`` per 1000
        gradients, 4 vectorized chains, 1000 + 1000; table in ``docs/kernels/
        tuned_hmc.md``, "How the defaults were chosen"): at the U-turn factor 0.75, 0.8 gave
        94 / 97 / 121 / 136 / 40 (100-D standard / ill-conditioned Gaussian, eight schools,
        logistic regression, ``hier_500``), 0.7 gave 85 / 104 / 107 / 142 / 40: mixed,
        within the seed spread, so 0.8 stays. The harmonic mean over chains
        (BlackJAX's statistic) was dropped earlier: one chain in the neck of eight schools'
        funnel drags it down, so the realised mean acceptance rose to 0.97. The realised
        mean acceptance lands above the target (0.85-0.91): the final step size is dual
        averaging's averaged iterate.
    :ivar adapt_mass_matrix: whether warmup estimates the mass matrix (default True).
    :ivar cross_chain: False (default): every chain tunes itself with the single-chain
        rule, so the chains are independent and a vectorized run equals a sequential one
        draw for draw. True, with NumPyro's ``chain_method="vectorized"`` or Pyro's
        ``BatchedMCMC`` and 2 or more chains: tune step size, mass matrix and trajectory
        length jointly across the chains (ChEES). This couples the chains (a chain's draws
        depend on the others'), and one stuck chain can drag everyone's tuning down.
    :ivar max_steps: cap on leapfrog steps (gradient evaluations) per transition.
    :ivar learning_rate: Adam learning rate on ``log T`` for ChEES (TFP's 0.025).
    :ivar num_steps: a fixed number of leapfrog steps per transition, as ``num_steps`` of
        NumPyro's and Pyro's ``HMC``: no jitter and no trajectory-length tuning (the step
        size is still tuned unless ``adapt_step_size=False``). Default None: the tuned,
        jittered trajectory. Not with ``trajectory_length``.
    :ivar regularize_mass_matrix: NumPyro's argument, as for ``AdjustedESHOptions``
        (default True: Stan's shrinkage of each metric window's estimate).
    """

    step_size: Any = None
    adapt_step_size: Any = True
    trajectory_length: Any = None
    target_accept_prob: Any = 0.8
    adapt_mass_matrix: Any = True
    cross_chain: Any = False
    max_steps: Any = 1024
    learning_rate: Any = 0.025
    regularize_mass_matrix: Any = True
    num_steps: Any = None

    def checked(self):
        return _checked(self)

    def pools_chains(self, num_chains):
        """Whether warmup pools its windows across the ``num_chains`` chains: with
        ``cross_chain=True`` and 2 or more chains (ChEES tuning)."""
        return bool(self.cross_chain) and num_chains >= 2

    def searches_step_size(self, num_warmup):
        """Whether the kernel starts with the reasonable-step-size search: when warmup will
        tune the step size, and when nothing gives one (``num_warmup=0`` without
        ``step_size``); a given step size is its starting point."""
        return self.step_size is None or (self.adapt_step_size and num_warmup > 0)

    @property
    def tune_length(self):
        """Whether warmup tunes the trajectory length: neither it nor ``num_steps`` given."""
        return self.trajectory_length is None and self.num_steps is None

    def initial_trajectory_length(self, step_size, config):
        """``T`` at the start, shaped as ``step_size``: the tuner's start where warmup tunes
        it (``core.tuned_warmup.initial_trajectory_length``), the given one, or with
        ``num_steps`` the length of those steps (for the record: ``n`` is fixed)."""
        if self.tune_length:
            return initial_trajectory_length(step_size, config)
        if self.num_steps is not None:
            return step_size * self.num_steps
        return step_size * 0.0 + self.trajectory_length

    def warmup_config(self, num_warmup, dense, metric_mask, uturn_factor):
        return TunedWarmupConfig(
            num_warmup=num_warmup,
            target_accept_prob=self.target_accept_prob,
            tune_step_size=self.adapt_step_size,
            tune_metric=self.adapt_mass_matrix,
            tune_length=self.tune_length,
            dense=dense,
            metric_mask=metric_mask,
            max_steps=self.max_steps,
            learning_rate=self.learning_rate,
            uturn_factor=uturn_factor,
            regularize_metric=self.regularize_mass_matrix,
        )
