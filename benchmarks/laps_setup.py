"""The two corrections our benchmarks apply around a call of BlackJAX 1.7.1's
``blackjax.adaptation.laps.laps`` (used by ``run_numpyro.run_bj_laps`` and
``ensemble_vs_laps.run_laps``). Both are undone when the ``with`` block ends.

1. **Per-chain records.** ``run_eca`` gives its per-step history ``out_specs=P()``
   (replicated); with the ``all_chains_info`` hook that history holds per-chain arrays, and
   JAX's replication check refuses it. The check is switched off (``check_vma=False``). On a
   one-device mesh ``P()`` and ``P("chains")`` are the same array; on several devices the
   replicated history holds the first device's chains only (``ensemble_vs_laps`` says so).

2. **The phase-2 step size keeps the step it measured.** ``blackjax.adaptation.step_size.
   bisection_monotonic_fn`` (BlackJAX 1.7.1) stops adapting once the ensemble acceptance is
   within 0.03 of the target, but the step it then keeps is the *next* proposal (doubled
   or halved before a bracket is found, a bisection midpoint after), not the step whose
   acceptance was measured. Measured (``run_numpyro`` ``bj_laps`` on ``ill_gauss``, seed 1,
   128 chains): acceptance 0.713 at step 15.3 ended the search, the kept step was 30.7 and
   every later draw had acceptance below 1e-70, so the 128 chains froze (R-hat 12). The
   intent the function's docstring and its tolerance state is to keep the step that met the
   target; the wrapper below does that and changes nothing else (bounds, termination, and
   the steps before termination are the original's).
"""

import contextlib


def _keeping_the_measured_step(bisection_fn):
    import jax.numpy as jnp

    def make(acc_prob_wanted, *args, **kwargs):
        update = bisection_fn(acc_prob_wanted, *args, **kwargs)

        def fixed(state, exp_x, acc_rate_new):
            (bounds, terminated), step = update(state, exp_x, acc_rate_new)
            return (bounds, terminated), jnp.where(terminated, exp_x, step)

        return fixed

    return make


@contextlib.contextmanager
def laps_corrected():
    """``with laps_corrected(): blackjax.adaptation.laps.laps(...)`` (module docstring)."""
    import blackjax.adaptation.laps as bj_laps
    import blackjax.eca as bj_eca

    orig_shard_map, orig_bisection = bj_eca.shard_map, bj_laps.bisection_monotonic_fn
    bj_eca.shard_map = lambda *a, **k: orig_shard_map(*a, check_vma=False, **k)
    bj_laps.bisection_monotonic_fn = _keeping_the_measured_step(orig_bisection)
    try:
        yield bj_laps
    finally:
        bj_eca.shard_map, bj_laps.bisection_monotonic_fn = orig_shard_map, orig_bisection
