"""NumPyro's names for what the kernels' states hold, so that code written for NumPyro's
``HMC`` / ``NUTS`` reads our states unchanged (``docs/api_notes.md`` §1):

* ``num_steps`` (``HMCState``): the gradient evaluations of the transition, our ``n_steps``;
  ``MCMC.run(..., extra_fields=("num_steps",))`` is how NumPyro users count gradients.
* ``z_grad`` (``HMCState``): the gradient of the potential energy at the draw ``z``, in the
  form of ``z`` (NumPyro's dict of sites; Pyro's flat tensor), read from the integrator's
  cached gradient (:func:`z_grad`). ``ESH`` has none: its draw is a point picked inside
  the trajectory, whose gradient is not kept (``no_z_grad``: a clear ``AttributeError``).
* ``adapt_state.inverse_mass_matrix``, ``adapt_state.mass_matrix_sqrt`` and
  ``adapt_state.mass_matrix_sqrt_inv`` (``HMCAdaptState``): the adapted ``M^{-1} = L L^T``
  from the preconditioner ``L`` (``esh_math.md`` §6.1), and NumPyro's factors of it:
  ``mass_matrix_sqrt`` ``R`` with ``R R^T = M`` and ``mass_matrix_sqrt_inv = R^{-1}``, both
  lower triangular (NumPyro's ``hmc_util._initialize_mass_matrix``: the Cholesky factor of
  the flipped matrix, flipped back; for a diagonal metric ``1/sqrt`` and ``sqrt``). For a
  model they are in NumPyro's form, a dict keyed by tuples of site names
  (:class:`SiteLayout`: ``adapt_state.inverse_mass_matrix[("x",)]`` reads as with
  ``NUTS``, and the dict is a valid ``inverse_mass_matrix=`` for a later run); for a
  ``potential_fn`` (and in Pyro, whose kernels publish the metric as
  ``kernel.inverse_mass_matrix``) one array in the order of the flattened position: a
  vector for a diagonal layout, a matrix for a dense one (``dense_mass="auto"`` has a
  dense layout up to 150 dimensions, whichever kind each window chose).
* ``energy`` (``HMCState``: potential plus kinetic energy) for the isokinetic kernels
  (``ESH``, ``AdjustedESH``): the ESH Hamiltonian at the draw with its velocity refreshed to
  unit length, which is the potential energy (:data:`isokinetic_energy`), so that
  ``extra_fields=("energy",)`` and ``az.from_numpyro``'s BFMI read it as for NUTS.
* An unknown field: NumPyro's ``extra_fields`` getter falls back from ``getattr`` to
  ``state[name]``, which on a tuple raised ``TypeError: tuple indices must be integers``;
  :func:`field_lookup` raises a ``KeyError`` that names the field and lists the ones there
  are.

The state classes take these as class attributes (``num_steps = num_steps``, ...): a
``typing.NamedTuple`` cannot inherit them from a mixin.
"""

from dataclasses import dataclass

from esh_kernels.core.adaptation import diagonal, welford_is_dense
from esh_kernels.core.backend import namespace
from esh_kernels.core.mass_matrix import inverse_mass_matrix as _inverse_mass_matrix


def field_lookup(state, key):
    """``state[key]``: tuple indexing for integers and slices, and for a field name (which
    ``getattr`` did not find) a ``KeyError`` naming it and the state's fields."""
    if isinstance(key, str):
        if isinstance(getattr(type(state), key, None), property):
            getattr(state, key)  # a property that failed: its own error says why
        known = list(state._fields) + sorted(
            name for name in dir(type(state)) if isinstance(getattr(type(state), name, None), property))
        raise KeyError(
            f"{type(state).__name__} has no field {key!r}; its fields are {', '.join(known)} "
            f"(in MCMC.run's extra_fields, nested fields are written 'adapt_state.step_size')")
    return tuple.__getitem__(state, key)


num_steps = property(
    lambda state: state.n_steps,
    doc="NumPyro's ``HMCState`` name for ``n_steps`` (``extra_fields=(\"num_steps\",)``).")


def _z_grad(state):
    grad, z = state.integrator.grad, state.z
    if type(z).__module__.split(".", 1)[0] == "torch":  # Pyro: z is the flat (C, d) tensor
        return grad
    import jax
    from jax.flatten_util import ravel_pytree

    # the gradient's coordinates after the model's are auxiliary ones (core/auxiliary.py)
    if grad.ndim == 1:  # one chain
        flat, unravel = ravel_pytree(z)
        return unravel(grad[: flat.shape[0]])
    # a vectorized run: leading chain axis on z's leaves and on the flat gradient
    flat, unravel = ravel_pytree(jax.tree.map(lambda a: a[0], z))
    return jax.vmap(unravel)(grad[:, : flat.shape[0]])


isokinetic_energy = property(
    lambda state: state.potential_energy,
    doc="NumPyro's ``HMCState.energy`` for ``ESH`` and ``AdjustedESH``: the ESH Hamiltonian "
        "``U(x) + D log|v|`` at the draw with its velocity refreshed to unit length, that is "
        "the potential energy ``U(x)`` (``esh_math.md`` §2; the velocity's length carries no "
        "information, so there is no kinetic-energy level; what ``esh_kernels.arviz`` "
        "reports as ``energy`` too).")


z_grad = property(
    _z_grad,
    doc="NumPyro's ``HMCState.z_grad``: the potential energy's gradient at ``z``, shaped "
        "like ``z`` (the integrator's cached gradient; the transition ends with the "
        "integrator at the draw).")


def _no_z_grad(state):
    raise AttributeError(
        f"{type(state).__name__} has no z_grad: ESH's draw is a point picked inside the "
        "trajectory (reservoir sampling over physical time), whose gradient is not kept. "
        "Compute it from the model's potential (numpyro.infer.util.potential_energy) if "
        "needed, or use AdjustedESH / TunedHMC, whose states have it.")


no_z_grad = property(_no_z_grad, doc="``ESH``'s draw has no cached gradient: an ``AttributeError`` that says why.")


@dataclass(frozen=True)
class SiteLayout:
    """Where each latent site lies in the flat position, and NumPyro's blocks of the mass
    matrix: static information (no arrays; the NumPyro adapter registers the class as a
    static pytree node) held by the adapt states of a model's kernel, so that their
    ``inverse_mass_matrix`` reads in NumPyro's dict form.

    ``sites``: ``(name, start, stop)`` per site, in flat order. ``blocks``: ``(names,
    dense)`` per key of NumPyro's dict, as ``HMC._init_state`` and
    ``hmc_util._initialize_mass_matrix`` key it: each ``dense_mass`` block (a matrix over
    its sites in the order given); the diagonal blocks of an ``inverse_mass_matrix`` dict;
    the remaining sites sorted by name (a vector). With ``dense_mass`` True/False (or
    ``"auto"``) and no dict, one key of all sites, sorted.
    """

    sites: tuple
    blocks: tuple

    @classmethod
    def build(cls, site_index, dense_layout, dense_blocks, inverse_mass_matrix):
        """From ``{name: flat indices}`` (contiguous per site), the layout's kind, the
        ``dense_mass`` blocks (None when not a list) and the user's
        ``inverse_mass_matrix`` argument."""
        sites = tuple(sorted(((name, int(ix[0]) if len(ix) else 0, int(ix[-1]) + 1 if len(ix) else 0)
                              for name, ix in site_index.items()), key=lambda s: s[1]))
        names = sorted(site_index)
        given = inverse_mass_matrix if isinstance(inverse_mass_matrix, dict) else {}
        if dense_blocks is None and (dense_layout or not given):
            return cls(sites, ((tuple(names), bool(dense_layout)),))
        blocks = [(tuple(b), True) for b in dense_blocks or ()]
        for key in given:
            key = (key,) if isinstance(key, str) else tuple(key)
            covered = {n for b, _ in blocks for n in b}
            if not covered.intersection(key):
                blocks.append((key, False))
        covered = {n for b, _ in blocks for n in b}
        rest = tuple(n for n in names if n not in covered)
        if rest:
            blocks.append((rest, False))
        return cls(sites, tuple(blocks))

    def split(self, full, dense):
        """``{names: block}`` of a flat-order ``M^{-1}`` (``full``: a vector when not
        ``dense``, else a matrix; any leading chain axis kept)."""
        where = {name: list(range(start, stop)) for name, start, stop in self.sites}
        out = {}
        for names, block_dense in self.blocks:
            ix = [i for n in names for i in where[n]]
            if not dense:
                out[names] = full[..., ix]
            elif block_dense:
                out[names] = full[..., ix, :][..., ix]
            else:
                out[names] = diagonal(full)[..., ix]
        return out


def _factors(imm, dense):
    """NumPyro's ``(mass_matrix_sqrt, mass_matrix_sqrt_inv)`` of one block of ``M^{-1}``:
    for a vector ``(1/sqrt, sqrt)``; for a matrix ``S`` lower triangular with
    ``S^T S = M^{-1}`` (the Cholesky factor of the flipped matrix, flipped back and
    transposed) and its inverse ``R = S^{-1}``, so ``R R^T = M``."""
    xp = namespace(imm)
    if not dense:
        root = xp.sqrt(imm)
        return 1.0 / root, root
    flip = list(range(imm.shape[-1] - 1, -1, -1))
    lower = xp.linalg.cholesky(imm[..., flip, :][..., flip])
    sqrt_inv = xp.swapaxes(lower[..., flip, :][..., flip], -1, -2)
    return xp.linalg.inv(sqrt_inv), sqrt_inv


def _metric(adapt, which):
    """``M^{-1}`` (``which`` None) or one of its NumPyro factors (0: ``mass_matrix_sqrt``,
    1: ``mass_matrix_sqrt_inv``), in NumPyro's dict form when the state knows its sites."""
    dense = welford_is_dense(adapt.welford)
    full = _inverse_mass_matrix(adapt.scale, dense)
    layout = getattr(adapt, "sites", None)
    if layout is None:
        return full if which is None else _factors(full, dense)[which]
    blocks = layout.split(full, dense)
    if which is None:
        return blocks
    dense_of = dict(layout.blocks)
    return {names: _factors(block, dense and dense_of[names])[which] for names, block in blocks.items()}


inverse_mass_matrix = property(
    lambda adapt: _metric(adapt, None),
    doc="NumPyro's ``HMCAdaptState.inverse_mass_matrix``: the adapted ``M^{-1} = L L^T``.")

mass_matrix_sqrt = property(
    lambda adapt: _metric(adapt, 0),
    doc="NumPyro's ``HMCAdaptState.mass_matrix_sqrt``: ``R`` with ``R R^T = M``.")

mass_matrix_sqrt_inv = property(
    lambda adapt: _metric(adapt, 1),
    doc="NumPyro's ``HMCAdaptState.mass_matrix_sqrt_inv``: ``R^{-1}``, with "
        "``R^{-T} R^{-1} = M^{-1}``.")
