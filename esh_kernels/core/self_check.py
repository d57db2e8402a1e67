"""The self-check every kernel runs on itself: frozen chains, collapsed step sizes, capped
trajectories, acceptance near zero and chains that disagree (``docs/troubleshooting.md``, "Self-check warnings").

A sampler that returns stuck chains without a word is worse than one that crashes, so each
kernel of both backends keeps a few running statistics per chain (:class:`MonitorState`,
updated after every draw at the cost of one Welford update) and looks at them at
*checkpoints*: the end of warmup (over its second half) and, during sampling, after
``100 * 2^k`` draws (over all sampling draws so far; a kernel is never told how many draws
a run will take, so these are the latest points it can look). Pyro kernels also check at
the end of sampling, which Pyro announces (``kernel.diagnostics()``). A chain that freezes
late would be diluted in those windows (a run continued from ``post_warmup_state`` with new
data, whose cached potential energy NumPyro's ``MCMC`` does not recompute: ``NUTS``,
``AdjustedESH`` and ``TunedHMC`` alike rejected 300 of 300 proposals after 300 good draws,
``NUTS`` silently), so every ``RECENT_WINDOW`` sampling draws ``frozen`` is also looked at
over those draws alone (:func:`recent_flags`). A quarter and half of the
way through warmup (:func:`early_checkpoints`) one symptom is looked at already: a collapsed
step size whose draws mostly hit ``max_steps`` (:func:`early_flags`). Such a chain makes the
rest of warmup slow (a vectorized batch waits for it at every draw): one chain of ESH on the
Lotka-Volterra posterior ran at the 1024-step cap from warmup iteration 99, and its warmup
took about 30 minutes, with nothing said until its end.

The device side (:func:`monitor_init`, :func:`monitor_update`, :func:`problem_flags`) is
backend-neutral like the rest of ``core/``: the NumPyro kernels run it inside ``jit`` and
call the host only when a flag is up (no host sync otherwise); the Pyro kernels run it
eagerly. The host side (:func:`findings`) turns the same statistics into messages that name
the chain, the symptom, the likely cause and the remedy; the kernel warns with each once.

Thresholds, all on the whitened frame of the adapted metric (where the target has unit
scale, so a healthy step size is of order 0.1-10 for every kernel):

* ``frozen``: at least 90% of the window's draws repeat the previous draw exactly
  (rejections or a draw that picked the point it started from), or, in sampling, the
  chain's spread is below 1% of the metric's scale in every coordinate; the message puts
  it down to a step size far too small where the step size has collapsed (``step_size``
  below) or the draws barely move, and to one too large for where the chain is where the
  draws repeat at an ordinary step size (``frozen_rejecting``: on a horseshoe regression,
  ``benchmarks/model_zoo.py``, a TunedHMC chain repeated 93% of its draws at a step of
  0.063, 44% of them divergent) or at least half of them diverged
  (``FROZEN_DIVERGING_FRACTION``; where warmup tuned the step size, or over the recent
  window, to a region that the step size, right for the rest of the posterior, cannot
  follow: ``frozen_diverging_region``);
* ``step_size``: the step size is below ``1e-3``, or (chains run together) more than
  ``100x`` below the median of the chains' step sizes: chains of one posterior share its
  scale, and one that does not has a metric or a warmup that went wrong (and a vectorized
  run waits for its long trajectories);
* ``cap``: more than half of the draws hit ``max_steps``;
* ``acceptance``: mean Metropolis acceptance below 0.05 (adjusted kernels);
* ``divergences``: (sampling) more than 1% of the draws are flagged ``diverging``: the
  trajectories hit a region the integrator cannot follow (a NaN region, a discontinuity,
  extreme curvature), where an adjusted kernel rejects and ESH's draws are biased;
* ``sticky``: (sampling) a chain that is not ``frozen`` repeated one point for
  ``STICKY_RUN`` draws in a row or more and then moved on, a run (of ``K`` draws) that its
  own repeat rate ``r`` makes improbable (``n r^K < STICKY_CHANCE`` over its ``n`` draws,
  were its repeats independent): a region it reaches where its step size is too large, whose proposals are
  rejected, so that the region is under-sampled and no divergence is flagged. A run still
  going on is ``frozen``'s to judge (a chain that froze late, or stays next to a NaN region,
  is named as frozen, not as sticky). Measured
  (``docs/benchmarks.md``, "Notes on sticky chains"): on the centred eight schools
  ``AdjustedESH``'s chains repeated one point up to 33-35 draws in a row and missed the
  funnel's neck (smallest draws of ``tau`` 0.58-1.1, where 10% of the posterior lies below
  0.5), at R-hat 1.005-1.013, without a divergence and, before this check, without a word;
  on posteriordb's ``one_comp`` (whose tail both adjusted kernels miss) up to 92; healthy
  runs of ``AdjustedESH`` and ``TunedHMC`` on 16 posteriordb posteriors, four models of the
  zoo and the benchmark targets at most 10, the non-centred eight schools 19;
* ``disagree``: chains run together (vectorized / batched) whose within-window means
  disagree, max split-free R-hat over coordinates above 1.2 at the end of warmup, 1.1 in
  sampling, or (sampling) whose within-chain spreads differ by more than 2.5x in some
  coordinate (only with at least 200 draws per chain; shorter windows are too noisy). Not
  at the end of warmup: there the window (warmup's second half) spans changes of each
  chain's own step size and metric, so the spreads measure the adaptation as well as the
  posterior; healthy ``TunedHMC`` runs read 3.5x (the zoo's Student-t) and 3.6x
  (posteriordb's ``hmm_drive_0``) there, at R-hat 1.03-1.05, and then agreed in sampling
  (R-hat at most 1.006). A chain stuck apart is named at the sampling checkpoint that has
  200 draws. The spread is the
  geometric mean of the absolute deviations (:func:`spread_ratio`), not the variance (more
  than 4x apart until 2026-12-06): on a heavy-tailed posterior (a Student-t with 3 degrees
  of freedom, whose fourth moment is infinite) the chains' sample variances differed by
  4.6-59x in healthy runs of all three kernels (4 chains x 1000 draws,
  ``benchmarks/model_zoo.py``), so all three warned; the logarithm of an absolute deviation
  has a finite variance whatever the tails. 2.5x rather than the 2x that matches 4x in
  variance on a Gaussian: the mean absolute deviation, tried first, read 2.7x and 3.3x on
  healthy Student-t runs of another seed (ESH, TunedHMC) and 2.0x on a skewed simplex
  coordinate (the zoo's Dirichlet), and the unmixed chains of the zoo's funnel (R-hat
  1.07-1.45) read 4-19x. R-hat's 1.1 in sampling: 79 healthy runs of the three kernels
  (``docs/benchmarks.md``, "Notes on the self-check's thresholds in sampling") read at most
  1.029 after 200 draws and 1.011 after 800 (ESH on a Student-t 1.018), too close to the
  centred eight schools that ``AdjustedESH`` under-samples on some seeds (1.016-1.021) for a
  threshold to tell them apart.

None of these fires on the benchmark targets at the defaults (``tests/test_self_check.py``
runs them); each fires on the failures it was written for.
"""

from typing import Any, NamedTuple

from esh_kernels.core.backend import namespace
from esh_kernels.core.warmup import MetricSchedule

FROZEN_REPEAT_FRACTION = 0.9
FROZEN_SPREAD = 0.01
MIN_STEP_SIZE = 1e-3
STEP_SIZE_SPREAD = 100.0
CAP_FRACTION = 0.5
MIN_ACCEPTANCE = 0.05
MAX_DIVERGENT_FRACTION = 0.01
STICKY_RUN = 25
STICKY_CHANCE = 1e-3
RHAT_WARMUP = 1.2
RHAT_SAMPLING = 1.1
RHAT_MIN_DRAWS = 200
MAX_SPREAD_RATIO = 2.5
MIN_DRAWS = 20  # fewer draws in a window: nothing is judged
FIRST_SAMPLING_CHECK = 100
RECENT_WINDOW = 100



class MonitorState(NamedTuple):
    """Running statistics of one chain (or a batch, leading axis) over the current window."""

    count: Any  # draws in the window
    repeats: Any  # draws equal to the previous draw
    cap_hits: Any  # draws that used max_steps gradient evaluations or more
    accept_sum: Any  # sum of Metropolis acceptance probabilities (0 for ESH)
    divergent: Any  # draws flagged diverging
    mean: Any  # (d,) Welford mean of the draws
    m2: Any  # (d,) Welford sum of squared deviations
    log_dev: Any  # (d,) sum of log |draw - mean of the draws before it| (:func:`spread_ratio`)
    log_count: Any  # (d,) the terms of that sum (draws whose deviation is not 0)
    recent_count: Any  # draws since the last recent checkpoint (:func:`recent_flags`)
    recent_repeats: Any  # of them, draws equal to the previous draw
    recent_divergent: Any  # of them, draws flagged diverging
    run: Any  # draws in a row, up to the latest, that repeat the previous draw
    longest: Any  # the longest such run in the window that has ended (``sticky``)
    chain: Any  # chain number, for the messages (-1: unknown, e.g. under pmap)


def monitor_init(x, chain):
    """Empty statistics for draws shaped like ``x`` (``(d,)`` or ``(C, d)``)."""
    zero = x[..., 0] * 0.0
    return MonitorState(zero, zero, zero, zero, zero, x * 0.0, x * 0.0, x * 0.0, x * 0.0,
                        zero, zero, zero, zero, zero, chain)


def monitor_update(m, x_prev, x, n_steps, max_steps, diverging, accept_prob=None):
    """Add the draw ``x`` that followed ``x_prev``, having cost ``n_steps`` gradients
    (``diverging``: the draw's divergence flag)."""
    xp = namespace(x)
    count = m.count + 1.0
    repeated = xp.all(x == x_prev, axis=-1) * 1.0
    capped = (n_steps >= max_steps) * 1.0
    accept = 0.0 if accept_prob is None else accept_prob
    delta = x - m.mean
    mean = m.mean + delta / count[..., None]
    m2 = m.m2 + delta * (x - mean)
    # from the second draw on (the first has no mean before it), and only deviations that
    # are not 0: a draw equals the mean of the draws before it only where the chain has
    # not moved since the window began (the rejected first proposals after a step-size
    # restart), which says nothing about its spread; counted, each such log(0) would
    # swamp the sum (TunedHMC on Beta(0.5, 0.5) read 4.6x over the second half of warmup)
    term = ((count > 1.0)[..., None] & (delta != 0.0)) * 1.0
    log_dev = m.log_dev + term * xp.log(xp.abs(delta) + (1.0 - term))
    log_count = m.log_count + term
    # a run counts once it has ended: one still going on is ``frozen``'s to judge
    longest = xp.maximum(m.longest, m.run * (1.0 - repeated))
    return MonitorState(count, m.repeats + repeated, m.cap_hits + capped,
                        m.accept_sum + accept, m.divergent + diverging * 1.0, mean, m2, log_dev,
                        log_count, m.recent_count + 1.0, m.recent_repeats + repeated,
                        m.recent_divergent + diverging * 1.0, (m.run + 1.0) * repeated, longest,
                        m.chain)


#: the statistics of the recent window (:func:`recent_flags`), emptied on their own
RECENT_FIELDS = ("recent_count", "recent_repeats", "recent_divergent")


def monitor_restart(m, restart, fields=MonitorState._fields[:-1]):
    """Empty the window's statistics ``fields`` (all of them by default, the recent window's
    with :data:`RECENT_FIELDS`) where ``restart`` is true (a bool, or one per chain)."""
    xp = namespace(m.mean)
    if isinstance(restart, bool) and not restart:
        return m
    empty = monitor_init(m.mean, m.chain)
    if isinstance(restart, bool):
        return m._replace(**{f: getattr(empty, f) for f in fields})
    r = restart * 1.0

    def emptied(e, a):
        return xp.where((r.reshape(r.shape + (1,) * (a.ndim - r.ndim)) > 0.5), e, a)

    return m._replace(**{f: emptied(getattr(empty, f), getattr(m, f)) for f in fields})


def recent_checkpoint(n):
    """True when ``n`` sampling draws (``n >= 1``) close a recent window: every
    ``RECENT_WINDOW`` draws."""
    return (n >= RECENT_WINDOW) & (n % RECENT_WINDOW == 0)


def recent_window(m):
    """``m`` with the recent window's counts in place of the whole window's (``count``,
    ``repeats``, ``divergent``), for :func:`repeating` and the messages of :func:`findings`."""
    return m._replace(count=m.recent_count, repeats=m.recent_repeats, divergent=m.recent_divergent)


def recent_flags(m, step_size):
    """:func:`problem_flags`' ``frozen`` (by repeated draws) over the recent window alone, and
    its ``step_size`` (which says why the draws repeat); ``sticky`` over the whole sampling
    window, looked at here too so that a run late in sampling is seen by the last recent
    checkpoint (NumPyro's sampling checkpoints stop at ``100 * 2^k``); the other symptoms
    stay with the whole sampling window, where the longer window keeps them from noise."""
    xp = namespace(m.mean)
    recent = recent_window(m)
    frozen = (recent.count >= MIN_DRAWS) & repeating(recent)
    sticky = (m.count >= MIN_DRAWS) & ~repeating(m) & ~frozen & sticking(m)
    none = frozen & False
    return frozen, collapsed_step(step_size), none, none, none, sticky, xp.any(none)


def sampling_checkpoint(n):
    """True when ``n`` sampling draws (``n >= 1``) is a checkpoint: ``100 * 2^k``."""
    xp = namespace(n)
    ratio = n / FIRST_SAMPLING_CHECK
    k = xp.round(xp.log2(xp.where(ratio > 1.0, ratio, 1.0)))
    return (n >= FIRST_SAMPLING_CHECK) & (n == FIRST_SAMPLING_CHECK * 2.0**k)


def early_checkpoints(num_warmup):
    """The warmup iterations (static ints) after which :func:`early_flags` are looked at:
    the last of the first quarter and of the first half of warmup, those after the first
    metric window has ended (before it the step size is measured in the model's own
    unconstrained scale, where a small one can be right) and before the end-of-warmup
    check."""
    window_ends = MetricSchedule.build(num_warmup).window_ends
    if not window_ends:
        return ()
    ends = {num_warmup // 4 - 1, num_warmup // 2 - 1}
    return tuple(sorted(i for i in ends if window_ends[0] < i < num_warmup - 1))


def early_flags(m, step_size, scale_diag):
    """:func:`problem_flags` with one symptom only, for :func:`early_checkpoints`: a step size
    that collapsed (``step_size``) and whose chain hit ``max_steps`` in most draws so far
    (``cap``), raised as ``step_size``. Other symptoms wait for the end of warmup: early in
    warmup a chain is still finding the typical set."""
    xp = namespace(m.mean)
    frozen, collapsed, capped, rejecting, divergent, sticky, disagree = problem_flags(
        m, step_size, scale_diag, False, False)
    none = frozen & False
    return none, collapsed & capped, none, none, none, none, xp.any(none)


def phase_flags(phase, m, step_size, scale_diag, has_accept):
    """The flags a checkpoint of ``phase`` looks at: :func:`early_flags` for ``"early"``,
    :func:`recent_flags` for ``"recent"``, :func:`problem_flags` for ``"warmup"`` and
    ``"sampling"`` (``has_accept``: the kernel reports Metropolis acceptance)."""
    if phase == "early":
        return early_flags(m, step_size, scale_diag)
    if phase == "recent":
        return recent_flags(m, step_size)
    return problem_flags(m, step_size, scale_diag, phase == "sampling", has_accept)


def _variance(m):
    xp = namespace(m.mean)
    n = m.count[..., None]
    return m.m2 / xp.where(n > 2.0, n - 1.0, 1.0)


def rhat(m):
    """Max over coordinates of the (non-split) potential scale reduction of the chains in
    the batch ``m`` (leading axis), from their window means and variances (Gelman-Rubin:
    ``sqrt(((n-1)/n W + B/n) / W)``). 1 for a single chain."""
    xp = namespace(m.mean)
    if m.mean.ndim < 2 or m.mean.shape[0] < 2:
        return xp.max(m.count * 0.0) + 1.0
    chains = m.mean.shape[0]
    n = xp.min(m.count)
    w = xp.sum(_variance(m), axis=0) / chains
    centred = m.mean - xp.sum(m.mean, axis=0) / chains
    b_over_n = xp.sum(centred * centred, axis=0) / (chains - 1.0)
    var_plus = (n - 1.0) / xp.where(n > 1.0, n, 1.0) * w + b_over_n
    ratio = xp.where(w > 0, var_plus / xp.where(w > 0, w, 1.0), 1.0)
    return xp.sqrt(xp.max(ratio))


def spread_ratio(m):
    """Max over coordinates of the largest over the smallest within-chain spread of the
    chains in the batch ``m``: chains that agree on the mean can still disagree on the
    spread (a chain stuck in a funnel's neck), which R-hat on ``x`` does not see. The
    spread is the geometric mean of the absolute deviations of the draws from the mean of
    the draws before each (one pass; deviations of exactly 0 left out, :func:`monitor_update`).
    Its logarithm is an average of ``log |x - m|``, whose
    variance is finite and about the same (1.2 per independent draw) for a Gaussian and for
    a Student-t with 3 degrees of freedom, so heavy tails do not make it noisier, where the
    sample variance needs a finite fourth moment to settle (module docstring)."""
    xp = namespace(m.mean)
    counted = m.log_count > 0.0
    log_spread = m.log_dev / xp.where(counted, m.log_count, 1.0)
    gap = xp.amax(log_spread, axis=0) - xp.amin(log_spread, axis=0)
    # a coordinate in which some chain has no deviation at all (frozen: ``frozen`` says so)
    return xp.exp(xp.max(xp.where(xp.all(counted, axis=0), gap, 0.0)))


def repeat_rate(m):
    """Per chain: the fraction of the window's draws that repeat the previous draw."""
    xp = namespace(m.mean)
    return m.repeats / xp.where(m.count > 1.0, m.count, 1.0)


def repeating(m):
    """Per chain: at least ``FROZEN_REPEAT_FRACTION`` of the window's draws repeat the previous
    draw (one of the two ways a chain is ``frozen``, :func:`problem_flags`)."""
    return repeat_rate(m) >= FROZEN_REPEAT_FRACTION


def collapsed_step(step_size):
    """Per chain: the ``step_size`` symptom (module docstring): below ``MIN_STEP_SIZE``, or
    (chains run together) more than ``STEP_SIZE_SPREAD`` times below their median."""
    xp = namespace(step_size)
    collapsed = step_size < MIN_STEP_SIZE
    if step_size.ndim >= 1 and step_size.shape[0] >= 2:
        collapsed = collapsed | (STEP_SIZE_SPREAD * step_size < xp.quantile(step_size, 0.5))
    return collapsed


def sticking(m):
    """Per chain: the ``sticky`` symptom's run (module docstring), whatever the window."""
    return (m.longest >= STICKY_RUN) & (m.count * repeat_rate(m)**m.longest < STICKY_CHANCE)


def problem_flags(m, step_size, scale_diag, sampling, has_accept):
    """Per-chain booleans ``(frozen, step_size, cap, acceptance, divergences, sticky)`` and one
    batch boolean ``disagree``, from the window statistics ``m`` and the chains' current step size and
    metric scale (:func:`esh_kernels.core.preconditioning.scale_diagonal`). ``sampling`` enables the checks that need a
    fixed metric and step size (the frozen chain's spread, the chains' spreads apart) and
    selects the R-hat threshold."""
    xp = namespace(m.mean)
    enough = m.count >= MIN_DRAWS
    safe = xp.where(m.count > 1.0, m.count, 1.0)
    spread = xp.sqrt(_variance(m)) / scale_diag
    tiny = xp.all(spread < FROZEN_SPREAD, axis=-1) if sampling else enough & False
    frozen = enough & (repeating(m) | tiny)
    collapsed = collapsed_step(step_size)
    capped = enough & (m.cap_hits / safe > CAP_FRACTION)
    rejecting = enough & (m.accept_sum / safe < MIN_ACCEPTANCE) if has_accept else enough & False
    divergent = enough & (m.divergent / safe > MAX_DIVERGENT_FRACTION) if sampling else enough & False
    sticky = enough & ~frozen & sticking(m) if sampling else enough & False
    batch = m.mean.ndim >= 2 and m.mean.shape[0] >= 2
    if batch:
        threshold = RHAT_SAMPLING if sampling else RHAT_WARMUP
        apart = rhat(m) > threshold
        if sampling:
            apart = apart | (spread_ratio(m) > MAX_SPREAD_RATIO)
        disagree = (xp.min(m.count) >= RHAT_MIN_DRAWS) & apart
    else:
        disagree = xp.any(enough) & False
    return frozen, collapsed, capped, rejecting, divergent, sticky, disagree


# ---------------------------------------------------------------------------------------
# Host side: messages


#: the likely cause of each symptom, and the generic remedy (a kernel may add its own)
CAUSES = {
    "frozen": "the step size is far too small for where the chain is (a region where the "
              "density is NaN or infinite, a discontinuity, or the neck of a funnel)",
    "step_size": "warmup was driven by a region of extreme curvature, a NaN region or a "
                 "discontinuity of the density",
    "cap": "the step size is tiny next to the trajectory length, or the metric is poorly "
           "estimated (dense_mass in high dimension, too short a warmup)",
    "acceptance": "the step size is too large for part of the posterior, or warmup did not "
                  "converge",
    "divergences": "the trajectories reach a region the integrator cannot follow (a NaN "
                   "region, a discontinuity, extreme curvature such as a funnel's neck): an "
                   "adjusted kernel rejects there and mixes slowly near it, ESH's draws "
                   "under-represent it",
    "disagree": "a chain is stuck in another mode or has not converged",
    "sticky": "its step size is too large for a region it reaches (the neck of a funnel, a "
              "hierarchical scale near zero, a horseshoe prior, a sharp ridge): proposals into "
              "it are rejected, so the region is under-sampled and the estimates are biased, "
              "which R-hat and the divergence count need not show",
    # a frozen chain most of whose draws diverged: the opposite cause of "frozen"
    "frozen_diverging": "the step size is too large for the posterior: the trajectories "
                        "diverge, so the draws do not move",
    # the same where warmup tuned the step size, or the chain moved before (the recent
    # window): the step suits the rest of the posterior, and the region is the cause (ESH
    # next to the NaN region of ``tests/test_numpyro_hard_targets.py``: on some paths one
    # chain of two froze there at the tuned step 0.61, after 900 sampling draws that moved;
    # a TunedHMC chain that had not left posteriordb's arma11 wall, potential 1.7e53, when
    # a trial cap on its first-window trajectories ended, ``docs/benchmarks.md``)
    "frozen_diverging_region": "the chain is where every trajectory diverges at a step size "
                               "that suits the rest of the posterior (a steep wall it has not "
                               "left since its initial point, or next to a NaN region, an "
                               "infinite gradient or a discontinuity of the density), so its "
                               "draws do not move",
    # a frozen chain whose draws repeat at a step size that has not collapsed
    "frozen_rejecting": "the step size is too large for where the chain is (the neck of a "
                        "funnel, a region of extreme curvature), or the density is NaN, "
                        "infinite or discontinuous there: its draws repeat",
    # the same, late in sampling (:func:`recent_flags`), where a continued run is the other suspect
    "frozen_late": "the chain reached a region where its step size is too large (the neck of a "
                   "funnel, extreme curvature) or the density is NaN, infinite or "
                   "discontinuous; or the run was continued from a state with new model "
                   "arguments, and the state's cached potential energy is the old arguments'",
}
REMEDIES = {
    "frozen": "reparameterise the model (e.g. non-centred), check it for regions where the "
              "density is NaN, or give a better init_strategy",
    "step_size": "reparameterise the model, check it for NaN regions and discontinuities, "
                 "or give a better init_strategy",
    "cap": "use dense_mass=False, more warmup, or a larger max_steps",
    "acceptance": "use more warmup or a smaller step_size",
    "divergences": "reparameterise the model (e.g. non-centred), or make the density finite "
                   "and smooth where it has support",
    "disagree": "use more warmup, a better init_strategy (e.g. init_to_median), and check the "
                "model for multimodality",
    "sticky": "reparameterise the model (e.g. non-centred), or raise target_accept_prob for a "
              "smaller step size",
    "frozen_diverging": "let warmup tune the step size (adapt_step_size=True, the default) or "
                        "give a smaller step_size",
    "frozen_diverging_region": "give a better init_strategy (e.g. init_to_median) where the "
                               "chain started far out, make the density finite and smooth "
                               "where it has support (e.g. a transform that keeps the "
                               "parameters off the boundary), or reparameterise the model",
    "frozen_rejecting": "reparameterise the model (e.g. non-centred) or check it for regions "
                        "where the density is NaN; where the posterior's scale varies along "
                        "it (funnels, horseshoe priors), NUTS, whose trajectories end where "
                        "they diverge, may mix better",
    "frozen_late": "to continue a run with new model arguments, refresh the state for them "
                   "first (NumPyro: mcmc.post_warmup_state = mcmc.sampler.refresh("
                   "mcmc.last_state, args, kwargs)); otherwise reparameterise the model (e.g. "
                   "non-centred) or check it for regions where the density is NaN",
}
#: a frozen chain with at least this fraction of its window's draws diverging is frozen
#: because its step size is too large (``frozen_diverging``), not too small
FROZEN_DIVERGING_FRACTION = 0.5


def _chain_name(chain):
    chain = int(chain)
    return f"chain {chain}" if chain >= 0 else "a chain"


def findings(kernel, phase, m, step_size, flags, max_steps, remedies=None, step_tuned=False):
    """Messages for the raised ``flags`` (from :func:`problem_flags`, or :func:`early_flags`
    with ``phase="early"``; host numpy arrays): a list of ``(chain, symptom, message)``.
    ``phase`` is ``"early"`` (over the warmup so far), ``"warmup"``, ``"sampling"`` or
    ``"recent"`` (:func:`recent_flags`: over the sampling draws since the last recent
    checkpoint); ``remedies`` maps a symptom (or a cause of :data:`CAUSES`) to the kernel's
    own advice, put before the generic one, or to a pair ``(float32 advice, float64
    advice)`` chosen by the draws' precision (``m.mean`` as the kernel keeps it);
    ``step_tuned``: warmup tunes the step size (a frozen chain whose draws diverge is then
    put down to where it is, not to a step size to tune)."""
    import numpy as np

    single = np.asarray(m.mean).dtype == np.float32
    remedies = {symptom: (advice[0] if single else advice[1]) if isinstance(advice, tuple) else advice
                for symptom, advice in (remedies or {}).items()}
    frozen, collapsed, capped, rejecting, divergent, sticky, disagree = (np.asarray(f) for f in flags)
    whole = type(m)(*(np.asarray(a, dtype=float) for a in m))  # ``sticky`` is over all of sampling
    m = host = recent_window(whole) if phase == "recent" else whole
    count = np.atleast_1d(np.asarray(m.count, dtype=float))
    chains = np.atleast_1d(np.asarray(m.chain))
    step = np.broadcast_to(np.atleast_1d(np.asarray(step_size, dtype=float)), count.shape)
    # the sampling window grows (checkpoints after 100, 200, 400, ... draws): saying how far
    # it reached lets a user weigh a finding made early in a long run
    where = {"warmup": "over the second half of warmup",
             "sampling": f"during sampling (first {int(count.max())} draws)",
             "recent": f"over its last {int(count.max())} sampling draws"}.get(
        phase, f"in its first {int(count.max())} warmup iterations")
    out = []
    repeats_mostly = np.atleast_1d(repeating(host))

    def say(c, symptom, what, cause=None, when=None):
        """``cause``: the key of :data:`CAUSES` and :data:`REMEDIES` where it is not the
        symptom's own (a frozen chain whose draws diverged); the kernel's own advice is
        looked up by the cause, so advice for a symptom's usual cause is left out of its
        other causes'; ``when``: the window, where it is not the phase's."""
        cause = cause or symptom
        own = remedies.get(cause)
        advice = "; ".join(r for r in (own, REMEDIES[cause]) if r)
        name = _chain_name(chains[c]) if c is not None else "the chains"
        out.append((int(chains[c]) if c is not None else -1, symptom,
                    f"{kernel}: {name} {what} {when or where}. Likely cause: {CAUSES[cause]}. "
                    f"Remedy: {advice}."))

    repeats = np.atleast_1d(np.asarray(m.repeats, dtype=float))
    caps = np.atleast_1d(np.asarray(m.cap_hits, dtype=float))
    accept = np.atleast_1d(np.asarray(m.accept_sum, dtype=float))
    divs = np.atleast_1d(np.asarray(m.divergent, dtype=float))
    for c in range(count.shape[0]):
        n = max(count[c], 1.0)
        if np.atleast_1d(frozen)[c]:
            diverging = divs[c] / n >= FROZEN_DIVERGING_FRACTION
            rejecting_draws = repeats_mostly[c] and not np.atleast_1d(collapsed)[c]
            cause = ("frozen_diverging_region" if diverging and (step_tuned or phase == "recent")
                     else "frozen_diverging" if diverging
                     else "frozen_late" if rejecting_draws and phase == "recent"
                     else "frozen_rejecting" if rejecting_draws else None)
            shown = diverging or (rejecting_draws and divs[c] > 0)
            say(c, "frozen", f"is frozen ({repeats[c] / n:.0%} of its {int(count[c])} draws "
                             f"repeat the previous one, step size {step[c]:.2g}"
                             + (f", {divs[c] / n:.0%} of them diverged)" if shown else ")"),
                cause=cause)
        # an early finding says what it costs: the rest of warmup runs at the cap
        cost = (f", and {caps[c] / n:.0%} of its draws hit the cap of max_steps={max_steps} "
                "gradient evaluations (the rest of warmup runs at that cost)"
                if phase == "early" else "")
        if np.atleast_1d(collapsed)[c] and step[c] < MIN_STEP_SIZE:
            say(c, "step_size", f"has a step size of {step[c]:.2g}, orders of magnitude below "
                                f"the scale of the adapted metric (healthy: 0.1-10){cost}")
        elif np.atleast_1d(collapsed)[c]:
            median = float(np.median(step))
            say(c, "step_size", f"has a step size of {step[c]:.2g}, {median / step[c]:.0f}x below "
                                f"the median of the {count.shape[0]} chains run with it "
                                f"({median:.2g}){cost}")
        if np.atleast_1d(capped)[c]:
            say(c, "cap", f"hit the cap of max_steps={max_steps} gradient evaluations in "
                          f"{caps[c] / n:.0%} of its {int(count[c])} draws")
        if np.atleast_1d(rejecting)[c]:
            say(c, "acceptance", f"accepted {accept[c] / n:.1%} of its proposals")
        if np.atleast_1d(divergent)[c]:
            say(c, "divergences", f"had {int(divs[c])} divergent draws of {int(count[c])}")
        if np.atleast_1d(sticky)[c]:
            runs, drawn, rate = (np.atleast_1d(a)[c] for a in (whole.longest, whole.count,
                                                               repeat_rate(whole)))
            say(c, "sticky", f"stayed at one point for {int(runs)} draws in a row, where "
                             f"{rate:.0%} of its {int(drawn)} draws repeat the previous one",
                when="during sampling")
    if bool(np.any(disagree)):
        # the spreads are judged in sampling only (module docstring), so only there are they quoted
        r = float(rhat(host))
        spreads = (f", within-chain spreads up to {float(spread_ratio(host)):.1f}x apart"
                   if phase == "sampling" else "")
        say(None, "disagree", f"disagree (R-hat {r:.2f}{spreads}, across {count.shape[0]} chains)")
    return out


def report(known, kernel, phase, m, step_size, flags, max_steps, remedies=None, step_tuned=False):
    """:func:`findings`, then a ``UserWarning`` for each ``(chain, symptom)`` not already in
    ``known`` (the kernel's list of ``(chain, symptom, message)``, appended to)."""
    import warnings

    seen = {(chain, symptom) for chain, symptom, _ in known}
    for chain, symptom, message in findings(kernel, phase, m, step_size, flags, max_steps, remedies,
                                            step_tuned):
        if (chain, symptom) not in seen:
            seen.add((chain, symptom))
            known.append((chain, symptom, message))
            warnings.warn(message, UserWarning, stacklevel=3)


#: ESH's own advice: an unadjusted sampler is biased next to NaN regions and
#: discontinuities, where AdjustedESH's Metropolis test keeps the answer exact (a
#: discontinuity still defeats the tuning of every gradient-based kernel, esh_math.md §10)
_ESH_ADVICE = ("use AdjustedESH (exact, Metropolis-adjusted), and remove discontinuities of "
               "the density (e.g. marginalise a change point)")
#: ... and in float32 (NumPyro's and torch's default) the first suspect of a collapsed,
#: capped or stuck ESH chain is the rounding of a large potential energy (many observations,
#: data in large units, a long ridge), which can exceed ESH's energy-error tolerance
#: (``docs/troubleshooting.md``, the ESH page): 10^6 observations of a normal model collapsed
#: its step size from 0.12 to 1.5e-5, and posteriordb's ``earn_height`` fails at float32 only
_ESH_FLOAT32_ADVICE = ("this run is float32, whose rounding of a large potential energy (many "
                       "observations, data in large units) can exceed ESH's energy-error "
                       "tolerance: run in float64 (NumPyro: numpyro.enable_x64() at the top of "
                       "the script; Pyro: torch.set_default_dtype(torch.float64)) or ")
ESH_REMEDIES = {
    symptom: (_ESH_FLOAT32_ADVICE + _ESH_ADVICE, _ESH_ADVICE)
    for symptom in ("frozen", "frozen_diverging_region", "step_size", "cap", "divergences")
}
ESH_REMEDIES["disagree"] = (_ESH_FLOAT32_ADVICE + "use AdjustedESH", None)
