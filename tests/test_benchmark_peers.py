"""The correction our benchmarks apply to BlackJAX's LAPS (``benchmarks/laps_setup.py``): its
phase-2 step-size search must keep the step whose acceptance met the target. No MCMC is run.
BlackJAX is a benchmark dependency (``.[bench]``, installed by CI); without it this module is
skipped."""

import os
import sys

import pytest

pytest.importorskip("blackjax")

import jax.numpy as jnp  # noqa: E402

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import laps_setup  # noqa: E402

TARGET = 0.7


def _search(bisection_fn, steps_and_acceptances):
    """Feed the search (step, measured acceptance) pairs as LAPS's adaptation does; return
    the steps it hands back and whether it has stopped."""
    update = bisection_fn(TARGET)
    state = (jnp.array([-jnp.inf, jnp.inf]), False)
    out = []
    for step, acc in steps_and_acceptances:
        state, new_step = update(state, step, acc)
        out.append(float(new_step))
    return out, bool(state[1])


def test_blackjax_search_keeps_the_next_step_not_the_measured_one():
    """The bug the correction exists for (``ill_gauss`` seed 1 froze at acceptance 1e-70).
    If this fails, BlackJAX has changed the function: re-measure and drop the correction."""
    import blackjax.adaptation.laps as bj_laps

    steps, stopped = _search(bj_laps.bisection_monotonic_fn, [(1.0, 0.99), (2.0, 0.713)])
    assert stopped
    assert steps == pytest.approx([2.0, 4.0])  # 0.713 met the target at 2.0, yet 4.0 is kept


def test_corrected_search_keeps_the_step_that_met_the_target():
    with laps_setup.laps_corrected() as bj_laps:
        steps, stopped = _search(bj_laps.bisection_monotonic_fn,
                                 [(1.0, 0.99), (2.0, 0.713), (2.0, 0.2)])
    assert stopped
    assert steps == pytest.approx([2.0, 2.0, 2.0])  # search as before, then fixed at 2.0


def test_corrected_search_still_brackets_and_bisects():
    """Away from the target the corrected search is the original one."""
    import blackjax.adaptation.laps as bj_laps

    pairs = [(1.0, 0.95), (2.0, 0.9), (4.0, 0.1), (2.828, 0.5)]
    want, _ = _search(bj_laps.bisection_monotonic_fn, pairs)
    with laps_setup.laps_corrected() as patched:
        got, stopped = _search(patched.bisection_monotonic_fn, pairs)
    assert not stopped
    assert got == pytest.approx(want)


def test_the_correction_is_undone_after_the_block():
    import blackjax.adaptation.laps as bj_laps
    import blackjax.eca as bj_eca

    before = (bj_laps.bisection_monotonic_fn, bj_eca.shard_map)
    with laps_setup.laps_corrected():
        assert (bj_laps.bisection_monotonic_fn, bj_eca.shard_map) != before
    assert (bj_laps.bisection_monotonic_fn, bj_eca.shard_map) == before
