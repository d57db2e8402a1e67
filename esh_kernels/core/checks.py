"""Argument checks shared by the kernels of both backends (plain Python, no array library),
written once so that NumPyro and Pyro reject the same arguments with the same messages."""

import math
import numbers


def _traced(value):
    """A JAX tracer: the kernel is built inside ``jax.jit`` with a traced argument (NumPyro
    allows it for ``NUTS``). Its value is unknown until run time, so it goes unchecked."""
    return type(value).__name__.endswith("Tracer")


def check_positive(name, value, allow_none=True, allow_inf=False):
    """``ValueError`` unless ``value`` is a positive number (or ``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if _traced(value):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (v > 0) or (math.isinf(v) and not allow_inf) or math.isnan(v):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_probability(name, value):
    """``ValueError`` unless ``0 < value < 1``."""
    if _traced(value):
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return v


def check_int(name, value, minimum):
    """``ValueError`` unless ``value`` is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_bool(name, value):
    """``ValueError`` unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_refresh_rate(value):
    """``None`` (the kernel's default) or a finite number ``>= 0``."""
    if value is None:
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"refresh_rate must be a number >= 0 or None, got {value!r}") from None
    if not (rate >= 0) or math.isinf(rate):
        raise ValueError(f"refresh_rate must be a finite number >= 0, got {value!r}")
    return rate


def non_finite_sites_text(sites):
    """The part of a start-up error that names the model sites whose log density is not
    finite (both PPLs find them by tracing the model at the initial point). ``None``: the
    model could not be traced there, so there is nothing to add (``""``)."""
    if sites is None:
        return ""
    if not sites:
        return "every site's log density is finite (a log-Jacobian or a gradient is not)"
    return f"the log density of site(s) {', '.join(map(repr, sites))} is not finite"


def check_model_arguments(model, potential_fn, init_strategy, ppl):
    """A kernel gets exactly one of a callable ``model`` (of the PPL named ``ppl``) and a
    callable ``potential_fn``, and a callable ``init_strategy``."""
    if (model is None) == (potential_fn is None):
        raise ValueError("Pass exactly one of `model=` or `potential_fn=`.")
    if model is not None and not callable(model):
        raise ValueError(f"`model` must be a callable {ppl} model, got {model!r}")
    if potential_fn is not None and not callable(potential_fn):
        raise ValueError(f"`potential_fn` must be callable, got {potential_fn!r}")
    if not callable(init_strategy):
        raise ValueError(f"`init_strategy` must be callable, got {init_strategy!r}")
