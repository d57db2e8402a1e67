"""Weighted reservoir sampling with O(1) memory (``esh_math.md`` §4.3, paper Alg. 3)."""

from esh_kernels.core.backend import namespace


def reservoir_take(log_total, log_weight, log_uniform):
    """Offer a new item of weight ``w`` to a one-item reservoir of total weight ``W``.

    Returns ``(log_total_new, take)``: the new item replaces the kept one with probability
    ``w / (W + w)``, so after any number of offers the kept item is item ``k`` with
    probability ``w_k / sum_m w_m``. Start from ``log_total = -inf`` (the first offer is
    always taken). ``log_uniform`` is ``log U`` with ``U ~ Uniform(0, 1)``.
    """
    xp = namespace(log_total, log_weight, log_uniform)
    new_total = xp.logaddexp(log_total, log_weight)
    return new_total, log_uniform < log_weight - new_total


def offer_time(remaining, log_total, pick_x, pick_energy, pick_grad, x, energy, grad, time,
               log_uniform):
    """Credit up to ``remaining`` of a position's uncredited physical ``time`` to the
    current draw, offering the position (with its potential ``energy`` and its ``grad``) to
    the draw's reservoir with that weight (``esh_math.md`` §4.3; ESH draws of fixed physical
    length).

    Returns ``(remaining, log_total, pick_x, pick_energy, pick_grad, leftover)``;
    ``leftover`` is the part of ``time`` that belongs to the next draw. Positions and
    gradients are ``(..., d)``, the rest ``(...)``.
    """
    xp = namespace(remaining, time)
    spent = xp.minimum(time, remaining)
    log_total, take = reservoir_take(log_total, xp.log(spent), log_uniform)
    pick_x = xp.where(take[..., None], x, pick_x)
    pick_energy = xp.where(take, energy, pick_energy)
    pick_grad = xp.where(take[..., None], grad, pick_grad)
    return remaining - spent, log_total, pick_x, pick_energy, pick_grad, time - spent
