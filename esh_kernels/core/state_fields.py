"""NumPyro's names for what the kernels' states hold, so that code written for NumPyro's
``HMC`` / ``NUTS`` reads our states unchanged (``docs/api_notes.md`` §1):

* ``num_steps`` (``HMCState``): the gradient evaluations of the transition, our ``n_steps``;
  ``MCMC.run(..., extra_fields=("num_steps",))`` is how NumPyro users count gradients.
* ``adapt_state.inverse_mass_matrix`` (``HMCAdaptState``): the adapted ``M^{-1} = L L^T``
  from the preconditioner ``L`` (``esh_math.md`` §6.1;
  :func:`esh_kernels.core.mass_matrix.inverse_mass_matrix`), as one array in the order of the
  flattened unconstrained position: a vector for a diagonal layout, a matrix for a dense
  one (``dense_mass="auto"`` has a dense layout up to 50 dimensions, whichever kind each
  window chose). NumPyro's own ``HMCAdaptState`` keys it by tuples of site names; the array
  is what ``inverse_mass_matrix=`` of NumPyro's kernels and of ours also accept.
* An unknown field: NumPyro's ``extra_fields`` getter falls back from ``getattr`` to
  ``state[name]``, which on a tuple raised ``TypeError: tuple indices must be integers``;
  :func:`field_lookup` raises a ``KeyError`` that names the field and lists the ones there
  are.

The state classes take these as class attributes (``num_steps = num_steps``, ...): a
``typing.NamedTuple`` cannot inherit them from a mixin.
"""

from esh_kernels.core.adaptation import welford_is_dense
from esh_kernels.core.mass_matrix import inverse_mass_matrix as _inverse_mass_matrix


def field_lookup(state, key):
    """``state[key]``: tuple indexing for integers and slices, and for a field name (which
    ``getattr`` did not find) a ``KeyError`` naming it and the state's fields."""
    if isinstance(key, str):
        known = list(state._fields) + sorted(
            name for name in dir(type(state)) if isinstance(getattr(type(state), name, None), property))
        raise KeyError(
            f"{type(state).__name__} has no field {key!r}; its fields are {', '.join(known)} "
            f"(in MCMC.run's extra_fields, nested fields are written 'adapt_state.step_size')")
    return tuple.__getitem__(state, key)


num_steps = property(
    lambda state: state.n_steps,
    doc="NumPyro's ``HMCState`` name for ``n_steps`` (``extra_fields=(\"num_steps\",)``).")

inverse_mass_matrix = property(
    lambda adapt: _inverse_mass_matrix(adapt.scale, welford_is_dense(adapt.welford)),
    doc="The adapted ``M^{-1} = L L^T`` as one array (NumPyro's ``HMCAdaptState`` field).")
