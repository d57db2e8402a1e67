"""Targets that drove the NumPyro kernels' step size to zero (issue 14 cases 1 and 3).

* A density that is NaN on part of the space (``-sqrt(x0 + 1)`` is NaN for ``x0 < -1``):
  trajectories that enter the region are rejected whatever their step size, so a
  tuning statistic that counts them as plain rejections drives the step to zero
  (``esh_kernels/core/metropolis.py: adaptation_accept_prob``, and the ESH predictor's
  back-off, ``core/adaptation.py: step_size_predictor_update``; ``esh_math.md`` §10).
  ``AdjustedESH`` must get the moments right there; ``ESH`` (unadjusted, no right answer
  promised next to a wall) must keep a usable step.

Truth by quadrature: ``x0`` has density ``N(x0; 0, 1) exp(-sqrt(x0 + 1))`` on ``x0 > -1``
(NaN counts as zero density), ``x1 ~ N(0, 1)``.
"""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import jax.numpy as jnp
import pytest
from jax import random
from numpyro.infer import MCMC
from scipy import integrate, stats

from esh_kernels.numpyro import ESH, AdjustedESH, TunedHMC
from tests.test_numpyro_statistics import N_SE, estimate, var_bias


def nan_region_model():
    x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]))
    numpyro.factor("f", -jnp.sqrt(x[0] + 1.0))


def nan_region_truth():
    """Mean and variance of ``x0`` by 1-D quadrature over ``x0 > -1``."""
    density = lambda t: stats.norm.pdf(t) * np.exp(-np.sqrt(t + 1.0))  # noqa: E731
    z = integrate.quad(density, -1.0, np.inf)[0]
    m1 = integrate.quad(lambda t: t * density(t), -1.0, np.inf)[0] / z
    m2 = integrate.quad(lambda t: t * t * density(t), -1.0, np.inf)[0] / z
    return m1, m2 - m1 * m1


def run(kernel, num_chains, num_samples, seed=0):
    mcmc = MCMC(kernel, num_warmup=500, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(seed))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"], np.float64)
    return x, np.asarray(mcmc.last_state.adapt_state.step_size)


@pytest.mark.slow
def test_adjusted_esh_next_to_a_nan_region():
    """Before the fix one of 4 chains tuned its step to 3.6e-6 (1010 gradients per draw,
    R-hat 1.22, ESS 6). Measured after it (seeds 0-2): steps 0.15-0.82, R-hat <= 1.004,
    ESS 860-1030 of 4000 draws, means within 1 standard error."""
    x, step = run(AdjustedESH(nan_region_model), 4, 1000)
    assert np.all(step > 1e-2), f"step sizes {step}"
    mean, var = nan_region_truth()
    m, se = estimate(x[..., 0])
    assert abs(m - mean) < N_SE * se, (m, mean, se)
    v, se_v = estimate((x[..., 0] - mean) ** 2)
    assert abs(v - var) < N_SE * se_v, (v, var, se_v)
    m1, se1 = estimate(x[..., 1])
    assert abs(m1) < N_SE * se1, (m1, se1)


def test_esh_step_size_survives_a_nan_region():
    """ESH's warmup ended with steps of 1e-4 (whitened frame) and frozen chains before
    the fix: each phase-2 draw that reached the NaN region lowered the predictor's cap by
    0.8 for good. Measured after it (seed 0): 0.26 and 0.41."""
    _, step = run(ESH(nan_region_model), 2, 10)
    assert np.all(step > 1e-2), f"step sizes {step}"


# -- the self-check speaks where the answer cannot be trusted (issue 14 cases 1 and 3) --------

#: NumPyro's change-point example data (coal-mining-like counts; the change is at 44)
CHANGE_POINT_COUNTS = np.array([
    13, 24, 8, 24, 7, 35, 14, 11, 15, 11, 22, 22, 11, 57, 11, 19, 29, 6, 19, 12, 22, 12, 18,
    72, 32, 9, 7, 13, 19, 23, 27, 20, 6, 17, 13, 10, 14, 6, 16, 15, 7, 2, 15, 15, 19, 70, 49,
    7, 53, 22, 21, 31, 19, 11, 1, 20, 12, 35, 17, 23, 17, 4, 2, 31, 30, 13, 27, 0, 39, 37, 5,
    14, 13, 22,
])


def change_point_model(counts):
    """A Poisson rate that jumps at ``tau * n``: the likelihood is discontinuous in tau."""
    n = counts.shape[0]
    rate = 1.0 / jnp.mean(counts)
    early = numpyro.sample("early", dist.Exponential(rate))
    late = numpyro.sample("late", dist.Exponential(rate))
    tau = numpyro.sample("tau", dist.Uniform(0.0, 1.0))
    numpyro.sample("obs", dist.Poisson(jnp.where(jnp.arange(n) < tau * n, early, late)), obs=counts)


@pytest.mark.parametrize("kernel_cls", [ESH, AdjustedESH])
def test_discontinuous_likelihood_is_warned_about(kernel_cls):
    """Case 3: on the change point the energy jump at the discontinuity does not shrink
    with the step, so the tuning drives the step down to ~1e-4 and the chains stay in the
    mode they start in (tau's mode 37, 8 or 30 for ESH against a truth of 44), without a
    word before the self-check. Now each kernel names the collapsed step or the capped
    trajectories, chain by chain."""
    kernel = kernel_cls(change_point_model)
    mcmc = MCMC(kernel, num_warmup=500, num_samples=100, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    with pytest.warns(UserWarning, match=f"^{kernel_cls.__name__}: chain"):
        mcmc.run(random.PRNGKey(0), jnp.asarray(CHANGE_POINT_COUNTS, jnp.float32))
    symptoms = {s for _, s, _ in kernel.self_check_findings}
    assert symptoms & {"step_size", "cap"}, kernel.self_check_findings


def test_esh_next_to_a_nan_region_is_warned_about():
    """Case 1 for ESH: its step no longer collapses, but an unadjusted sampler cannot be
    right next to a wall (measured: x0 mean -0.08 against 0.003, R-hat 1.06); the draws
    that reached the NaN region are flagged, and the self-check points to AdjustedESH. The
    chains may also be reported as disagreeing (they do, at R-hat 1.06, on some paths), and
    on some paths (other roundings: the suite's compiler options with another self-check
    program) a chain reaches the wall and stays, every trajectory from there diverging; the
    recent window names it frozen there, put down to the region, with the same advice."""
    kernel = ESH(nan_region_model)
    with pytest.warns(UserWarning, match="AdjustedESH"):
        run(kernel, 2, 1000)
    symptoms = {s for _, s, _ in kernel.self_check_findings}
    assert "divergences" in symptoms and symptoms <= {"divergences", "disagree", "frozen"}, symptoms
    for _, symptom, message in kernel.self_check_findings:
        if symptom == "frozen":
            assert "every trajectory diverges" in message and "AdjustedESH" in message, message


def steep_wall_potential(x):
    """A convex wall: ``cosh(20 x0)`` is 1e17 at ``x0 = 2``; ``x1..x3 ~ N(0, 1)``."""
    return 0.5 * jnp.sum(x**2) + jnp.cosh(20.0 * x[0]) - 1.0


@pytest.mark.parametrize("kernel_cls", [AdjustedESH, ESH])
def test_leaves_a_start_on_a_steep_convex_wall(kernel_cls):
    """Warmup's descent phase (``core.metropolis.descent_accept``). From ``x0 = 2`` the
    isokinetic energy error is positive at every step size, so without it every chain kept
    its initial point for the whole run (measured: all 4 chains frozen, 100% divergent;
    posteriordb's ``arma11`` froze two of four chains the same way). With it the chains
    reach the typical set and the moments of the Gaussian coordinates are right."""
    init = jnp.tile(jnp.array([2.0, 0.5, -0.5, 1.0]), (4, 1))
    mcmc = MCMC(kernel_cls(potential_fn=steep_wall_potential), num_warmup=500, num_samples=1000,
                num_chains=4, chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(0), init_params=init)
    x = np.asarray(mcmc.get_samples(group_by_chain=True), np.float64)
    assert np.all(np.abs(x[..., 0]) < 0.2), "a chain stayed on the wall"
    m, se = estimate(x[..., 1:])
    assert np.all(np.abs(m) < N_SE * se), (m, se)
    v, se_v = estimate(x[..., 1:] ** 2)
    assert np.all(np.abs(v - 1.0) < N_SE * se_v), (v, se_v)


def long_narrow_draws(kernel_cls):
    """4 chains x (1000 + 1000) of ``kernel_cls`` on a 3-D Gaussian with correlation 0.9995
    between a wide and a narrow coordinate (sd 30 and 0.01), whitened by the true sds."""
    rho, sd = 0.9995, jnp.array([30.0, 0.01, 1.0])
    cov = jnp.array([[1.0, rho, 0.0], [rho, 1.0, 0.0], [0.0, 0.0, 1.0]]) * sd[:, None] * sd[None, :]
    precision = jnp.linalg.inv(cov)
    mcmc = MCMC(kernel_cls(potential_fn=lambda x: 0.5 * x @ precision @ x), num_warmup=1000,
                num_samples=1000, num_chains=4, chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(0), init_params=jnp.zeros((4, 3)) + 0.5)
    return np.asarray(mcmc.get_samples(group_by_chain=True), np.float64) / np.asarray(sd)


@pytest.mark.parametrize("kernel_cls", [AdjustedESH, TunedHMC])
def test_long_narrow_posterior(kernel_cls):
    """The Gaussian of :func:`long_narrow_draws`, which a diagonal metric leaves long and
    narrow, as posteriordb's ``kilpisjarvi`` and ``earnings`` are. AdjustedESH at the fixed
    ``sqrt(d)`` trajectory length random-walked (measured: R-hat 1.16, ESS 46 of 4000); the
    warmup rule lengthens the trajectories until ``x`` decorrelates in about 3 draws and
    ``x^2`` in 10, by at most ``sqrt(2)`` per metric window (``core.warmup._trajectory_update``;
    measured before that cap, with 10 draws for both: L 16-18, R-hat 1.0005, ESS 3700). TunedHMC's U-turn length gets the same stretch (``core.tuned_warmup``). Moments
    within Monte Carlo error of the truth."""
    x = long_narrow_draws(kernel_cls)
    m, se = estimate(x)
    assert np.all(np.abs(m) < N_SE * se), (m, se)
    v, se_v = estimate(x**2)
    assert np.all(np.abs(v - 1.0) < N_SE * se_v), (v, se_v)


def test_esh_lengthens_its_draws_on_a_long_narrow_posterior():
    """The same target for ESH: at ``steps_per_draw = 2`` steps per draw its chains
    random-walked (measured: R-hat 1.48, ESS 9 of 4000, 2.6 gradients per draw); the time
    per draw now grows until the slowest statistic decorrelates in about 3 draws, at most
    64x (``core.warmup.esh_warmup_update``; measured: R-hat 1.010, min ESS 510, 125
    gradients per draw; uncapped it reached ESS 1420 at 680 gradients per draw). ESH is
    unadjusted, so the check allows its bias: the sds within 10%."""
    import arviz as az

    x = long_narrow_draws(ESH)
    for j in range(3):
        assert float(az.rhat(x[..., j])) < 1.02
        assert float(az.ess(x[..., j], method="bulk")) > 300
    np.testing.assert_allclose(x.reshape(-1, 3).std(0), 1.0, rtol=0.1)


#: two means observed 100 times each at noise sd 30, about 2e4 and 3e4 (data in large units,
#: as posteriordb's earnings in dollars): from NumPyro's ``init_to_uniform`` start (|mu| < 2)
#: the potential is about 7e7, where float32's spacing is 8
_FAR_Y = np.random.default_rng(0).normal([2.0e4, 3.0e4], 30.0, size=(100, 2)).astype(np.float32)


def far_start_model():
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0e5).expand([2]))
    numpyro.sample("y", dist.Normal(mu, 30.0), obs=_FAR_Y)


@pytest.mark.parametrize("kernel_cls", [ESH, AdjustedESH])
def test_a_far_start_in_float32_is_not_frozen_by_rounding(kernel_cls):
    """Warmup's descent phase reads an energy error within the float32 rounding of the
    potential energies as 0 (``core.metropolis.beyond_rounding``). Without it, the rounding
    (energy errors of 1-100 at any step size) drove dual averaging's step to about 1e-9,
    where no position changes in float32, and chains stayed far out (posteriordb's
    ``earn_height`` at float32, ESH: R-hat 1.55). Conjugate truth: ``mu`` is Gaussian with
    the data's column means (the prior's pull is 1e-7 of them) and sd ``30 / sqrt(100)``."""
    mcmc = MCMC(kernel_cls(far_start_model), num_warmup=500, num_samples=500, num_chains=4,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(random.PRNGKey(0))
    mu = np.asarray(mcmc.get_samples(group_by_chain=True)["mu"], np.float64)
    assert mu.dtype == np.float64 and mcmc.get_samples()["mu"].dtype == jnp.float32
    post_mean, post_sd = _FAR_Y.astype(np.float64).mean(0), 3.0
    z = (mu - post_mean) / post_sd
    assert np.all(np.abs(z.mean(axis=1)) < 1.0), f"a chain is not at the posterior: {z.mean(axis=1)}"
    m, se = estimate(z)
    assert np.all(np.abs(m) < N_SE * se), (m, se)
    v, se_v = estimate(z**2)
    assert np.all(np.abs(v - 1.0) < N_SE * se_v + var_bias(kernel_cls)), (v, se_v)


def wall_model():
    """Two standard normal coordinates and an exponential wall in the first, ``exp(10 (x0 -
    2.5))``: negligible where the posterior is, a potential of 1.7e28 and a gradient of 1.7e29
    at ``x0 = 9``, whose squared norm overflows float32."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]))
    numpyro.factor("wall", -jnp.exp(10.0 * (x[0] - 2.5)))


def test_a_start_where_the_gradient_norm_overflows_float32_is_left():
    """``core.dynamics._geometry``: a float32 gradient above 1.8e19 has an infinite squared
    norm. Before the norm was taken in units of the largest entry there, every step from
    such a start diverged and the step size fell to 0: started at ``x0 = 9`` (potential
    1.7e28), three chains of four stayed at ``x0`` 6.9-8.7 (AdjustedESH, 300 + 300;
    posteriordb's ``arma11`` at float32 failed the same way with ESH). Now every chain
    reaches the posterior, whose second coordinate is exactly ``N(0, 1)``."""
    from numpyro.infer import init_to_value

    kernel = AdjustedESH(wall_model, init_strategy=init_to_value(values={"x": jnp.array([9.0, 0.5])}))
    mcmc = MCMC(kernel, num_warmup=300, num_samples=300, num_chains=4, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(random.PRNGKey(0))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"], np.float64)
    assert mcmc.get_samples()["x"].dtype == jnp.float32
    assert np.all(x[..., 0].mean(axis=1) < 1.0), f"a chain stayed at the wall: {x[..., 0].mean(axis=1)}"
    m, se = estimate(x[..., 1:])
    assert np.all(np.abs(m) < N_SE * se), (m, se)
    v, se_v = estimate(x[..., 1:] ** 2)
    assert np.all(np.abs(v - 1.0) < N_SE * se_v + var_bias(AdjustedESH)), (v, se_v)


def narrowing_model():
    """``a ~ N(0, 1)``, ``b | a ~ N(0, s(a))`` with ``s`` falling from 1 to ``e^{-1.2}`` (3.3x
    narrower) around ``a = 1.5``: 7% of the mass lies where the posterior is narrower than
    where a step size is tuned."""
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    numpyro.sample("b", dist.Normal(0.0, jnp.exp(-1.2 * jax.nn.sigmoid(4.0 * (a - 1.5)))))


@pytest.mark.parametrize("kernel_cls", [AdjustedESH, TunedHMC])
def test_step_curvature_shows_a_region_narrower_than_the_bulk(kernel_cls):
    """The sample statistic ``step_curvature`` (``esh_math.md`` §7.9): where the posterior
    narrows 3.3-fold over 7% of its mass, some proposals step beyond the leapfrog's stability
    limit, at 4x or more the largest reading on a 2-D standard Gaussian, because the step size
    is tuned where most of the mass is (this test's runs, float32: 6.2 for ``TunedHMC``, 71 for
    ``AdjustedESH``; 4 chains x (1000 + 1000), float64, two seeds: 4.5-14 and 16-50).
    ``TunedHMC``'s Euclidean leapfrog reads well within the limit on the Gaussian (0.8);
    ``AdjustedESH``'s isokinetic one reads up to 4 there, the scale of its statistic being
    loose in a few dimensions."""
    from esh_kernels.core.hmc import LEAPFROG_STABILITY_LIMIT

    def largest(model):
        mcmc = MCMC(kernel_cls(model), num_warmup=500, num_samples=500, num_chains=2,
                    chain_method="vectorized", progress_bar=False)
        mcmc.run(random.PRNGKey(0), extra_fields=("step_curvature",))
        c = np.asarray(mcmc.get_extra_fields()["step_curvature"])
        assert c.shape == (1000,) and np.all(c >= 0.0)
        return c.max()

    gaussian = largest(lambda: numpyro.sample("x", dist.Normal(jnp.zeros(2), 1.0)))
    narrowing = largest(narrowing_model)
    assert narrowing > max(LEAPFROG_STABILITY_LIMIT, 4.0 * gaussian), (gaussian, narrowing)
    if kernel_cls is TunedHMC:
        assert gaussian < 0.5 * LEAPFROG_STABILITY_LIMIT
