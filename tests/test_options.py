"""A kernel's own arguments are defined once (``esh_kernels/core/options.py``) and both PPLs
take them with the same names, defaults and checks; the constructor's signature shows them."""

import inspect

import pytest

from esh_kernels.core import options

KERNELS = {"ESH": options.ESHOptions, "AdjustedESH": options.AdjustedESHOptions,
           "TunedHMC": options.TunedHMCOptions}


def _kernel_classes(name):
    numpyro = pytest.importorskip("esh_kernels.numpyro")
    pyro = pytest.importorskip("esh_kernels.pyro")
    return getattr(numpyro, name), getattr(pyro, name)


def _model():
    pass


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_signature_shows_the_kernels_own_arguments_with_their_defaults(name):
    for cls in _kernel_classes(name):
        params = inspect.signature(cls).parameters
        assert list(params)[:2] == ["model", "potential_fn"]
        for field, default in KERNELS[name]._field_defaults.items():
            assert params[field].kind is inspect.Parameter.KEYWORD_ONLY, (cls, field)
            assert params[field].default == default, (cls, field)
        assert "dense_mass" in params and "init_strategy" in params
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_both_ppls_take_the_same_own_arguments(name):
    np_cls, pyro_cls = _kernel_classes(name)
    for cls in (np_cls, pyro_cls):
        kernel = cls(_model, max_steps=77, step_size=0.25)
        assert kernel._options == KERNELS[name](max_steps=77, step_size=0.25).checked()


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_unknown_and_invalid_arguments_are_refused_by_name(name):
    for cls in _kernel_classes(name):
        with pytest.raises(TypeError, match=f"{name}\\(\\) got an unexpected keyword argument 'stepsize'"):
            cls(_model, stepsize=0.1)
        with pytest.raises(ValueError, match="max_steps"):
            cls(_model, max_steps=0)
        with pytest.raises(ValueError, match="step_size"):
            cls(_model, step_size=-1.0)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_hmc_only_arguments_are_refused_with_the_reason(name):
    """Arguments of NumPyro's / Pyro's HMC and NUTS that these kernels have no use for (as
    NumPyro's own MCMC tests pass them): the ``TypeError`` says what they are and what to
    write instead (before: only "unexpected keyword argument")."""
    cases = {"find_heuristic_step_size": "warmup finds", "kinetic_fn": "kinetic energy"}
    if name == "ESH":  # unadjusted: the others take it as their own option
        cases["target_accept_prob"] = "no accept/reject step.*desired_energy_var.*AdjustedESH takes"
    for cls in _kernel_classes(name):
        for arg, reason in cases.items():
            with pytest.raises(TypeError, match=f"{name}\\(\\) got an unexpected keyword argument "
                                                f"'{arg}': it is an argument of HMC / NUTS, and .*{reason}"):
                cls(_model, **{arg: 3})


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_regularize_mass_matrix_reaches_the_warmup_configuration(name):
    """NumPyro's ``regularize_mass_matrix`` is one of every kernel's own arguments (both
    PPLs); the warmup configuration that the metric windows read carries it."""
    args = {"ESH": (100, True, None, 10), "AdjustedESH": (100, True, None), "TunedHMC": (100, True, None, 0.75)}[name]
    for cls in _kernel_classes(name):
        for value in (True, False):
            opts = cls(_model, regularize_mass_matrix=value)._options
            config = opts.warmup_config(*args)
            assert config.regularize_metric is value
            if name == "ESH":
                assert config.adjusted_config().regularize_metric is value
        with pytest.raises(ValueError, match="regularize_mass_matrix"):
            cls(_model, regularize_mass_matrix="no")


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_max_tree_depth_sets_the_cap_on_steps_per_transition(name):
    """NUTS's ``max_tree_depth=k`` caps a transition at ``2**k - 1`` leapfrog steps: it sets
    ``max_steps`` (refused before, as NumPyro's ``test_improper_normal`` passes it). A
    ``(warmup, sampling)`` pair gets the larger cap and a warning that says so; with
    ``max_steps`` too, or a bad depth, an error names the argument."""
    for cls in _kernel_classes(name):
        assert cls(_model, max_tree_depth=5)._options.max_steps == 31
        with pytest.warns(UserWarning, match=r"max_tree_depth=\(5, 8\).*one cap.*2\*\*8 - 1"):
            assert cls(_model, max_tree_depth=(5, 8))._options.max_steps == 255
        assert cls(_model, max_tree_depth=(6, 6))._options.max_steps == 63
        with pytest.raises(TypeError, match="both max_tree_depth and max_steps"):
            cls(_model, max_tree_depth=5, max_steps=100)
        for bad in (0, 2.5, (3, 4, 5)):
            with pytest.raises(ValueError, match="max_tree_depth"):
                cls(_model, max_tree_depth=bad)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_num_steps_is_taken_as_hmc_takes_it(name):
    """``num_steps`` (HMC's argument) fixes the steps per transition, no trajectory tuning;
    for ``ESH`` the mean steps per draw, the time per draw not lengthened for slow
    statistics. It cannot be combined with ``trajectory_length`` (nor, for ``ESH``, with
    ``steps_per_draw``); checked as an integer."""
    args = {"AdjustedESH": (100, False, None), "TunedHMC": (100, False, None, 0.75), "ESH": (100, False, None, 10)}[name]
    for cls in _kernel_classes(name):
        opts = cls(_model, num_steps=5)._options
        assert opts.num_steps == 5
        config = opts.warmup_config(*args)
        if name == "ESH":
            assert config.steps_per_draw == 5 and not config.lengthen
            assert cls(_model)._options.warmup_config(*args).lengthen
            with pytest.raises(ValueError, match="num_steps and steps_per_draw"):
                cls(_model, num_steps=5, steps_per_draw=3)
        else:
            assert not (config.tune_length if name == "TunedHMC" else config.tune_trajectory)
        with pytest.raises(ValueError, match="num_steps and trajectory_length"):
            cls(_model, num_steps=5, trajectory_length=2.0)
        with pytest.raises(ValueError, match="num_steps"):
            cls(_model, num_steps=0)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_hmc_only_arguments_at_their_default_are_taken(name):
    """A script that writes out an HMC / NUTS default (``NUTS(model, max_tree_depth=10)``, as
    Pyro's own tests do), or either of NUTS's ``use_multinomial_sampling``
    values (Pyro's ``test_nuts.py`` passes ``False``), asks for nothing these kernels lack:
    taken, ignored. Any other value is refused (above)."""
    for cls in _kernel_classes(name):
        for which in (0, -1):
            taken = {arg: values[which] for arg, values in options.HMC_ONLY_DEFAULTS.items()
                     if arg not in KERNELS[name]._fields}  # NUTS's target_accept_prob=0.8: ESH
            assert cls(_model, **taken)._options == KERNELS[name]().checked()
    # NUTS's multinomial / slice choice: both booleans taken (above); anything else is not
    # one of NUTS's values either, and the refusal says what the argument is
    with pytest.raises(TypeError, match="'use_multinomial_sampling'.*build no tree"):
        cls(_model, use_multinomial_sampling="slice")


def test_adjusted_esh_trajectory_factor_default_depends_on_the_metric():
    """``trajectory_factor=None`` resolves when the metric is known (1 diagonal, 2 dense)."""
    from esh_kernels.core.warmup import default_trajectory_factor

    opts = options.AdjustedESHOptions().checked()
    assert opts.warmup_config(100, False, None).trajectory_factor == default_trajectory_factor(None, False)
    assert opts.warmup_config(100, True, None).trajectory_factor == default_trajectory_factor(None, True)
    assert default_trajectory_factor(None, False) != default_trajectory_factor(None, True)
    fixed = options.AdjustedESHOptions(trajectory_factor=1.5).checked()
    assert fixed.warmup_config(100, True, None).trajectory_factor == 1.5


def test_esh_phase_one_runs_adjusted_esh_at_its_own_defaults():
    """ESH's warmup phase 1 is AdjustedESH's transitions at AdjustedESH's defaults: its target
    acceptance, and its trajectory factor for the metric's kind (dense throughout, or the
    automatic / diagonal one), in both PPLs."""
    from esh_kernels.core.adaptation import AUTO_METRIC

    for esh_cls, adjusted_cls in zip(_kernel_classes("ESH"), _kernel_classes("AdjustedESH")):
        for dense, mask in ((False, None), (True, None), (True, AUTO_METRIC)):
            phase1 = esh_cls(_model)._options.warmup_config(100, dense, mask, 10).adjusted_config()
            adjusted = adjusted_cls(_model)._options.warmup_config(100, dense, mask)
            assert phase1.target_accept_prob == adjusted.target_accept_prob == 0.7
            assert phase1.trajectory_factor == adjusted.trajectory_factor
            assert phase1.trajectory_factor == (2.0 if dense and mask is None else 1.0)


def test_esh_phase_one_refits_within_its_last_window_where_the_refit_can_be_what_the_layout_needs():
    """ESH's phase 1 refits its metric at 449 of its 750 iterations (``core.warmup.
    esh_refits_last_window``) unless the layout is dense and the refit's 200 draws are fewer than
    the ``3 d`` a dense estimate needs: on the 91-D and 141-D collinear regressions that refit was
    diagonal between two dense metrics and cost 7-8% with warmup. Both PPLs decide alike."""
    from esh_kernels.core.adaptation import AUTO_METRIC
    from esh_kernels.core.warmup import MetricSchedule

    for cls in _kernel_classes("ESH"):
        opts = cls(_model)._options
        for dense, dim, refits in ((True, 10, True), (True, 66, True), (True, 67, False), (True, 141, False),
                                   (False, 504, True)):
            config = opts.warmup_config(1000, dense, AUTO_METRIC if dense else None, dim)
            assert config.continue_last is refits, (dense, dim)
            phase1 = config.adjusted_config()
            schedule = MetricSchedule.build(phase1.num_warmup, phase1.continue_last)
            assert schedule.continued == ((449,) if refits else ())
        assert not opts.warmup_config(300, False, None, 10).continue_last  # Stan's last window is its own
