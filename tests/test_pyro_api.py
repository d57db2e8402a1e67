"""The Pyro kernels as ``pyro.infer.MCMC`` kernels and in ``BatchedMCMC``: interface,
bad inputs, reproducibility, pickling, jit, float32, ArviZ. Small models, short runs."""

import json
import math
import pickle
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
pyro = pytest.importorskip("pyro")

import pyro.distributions as dist  # noqa: E402
from pyro import poutine  # noqa: E402
from pyro.infer import MCMC, NUTS  # noqa: E402
from pyro.ops.indexing import Vindex  # noqa: E402

import esh_kernels.pyro as ekp  # noqa: E402
from esh_kernels.pyro import ESH, AdjustedESH, BatchedMCMC, run_batched  # noqa: E402
from esh_kernels.pyro._model import SingleChainPotential  # noqa: E402
from moments import GAMMA_3_2_MOMENTS, raw_moment_z  # noqa: E402
import eight_schools_data  # noqa: E402

# Short warmups here: cap the steps per draw so that a poorly tuned draw length cannot make
# a test slow (before 7b5bfca, 40 warmup iterations sometimes tuned ESH's time per draw
# far too long, in NumPyro too).
CAP = {"max_steps": 64}

KERNELS = [AdjustedESH, ESH]
if hasattr(ekp, "TunedHMC"):
    KERNELS.append(ekp.TunedHMC)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def gauss_model(scale=(1.0, 2.0, 0.5)):
    s = torch.tensor(scale)

    def model():
        pyro.sample("x", dist.Normal(torch.zeros_like(s), s).to_event(1))

    return model


def eight_schools(y=None, sigma=None):
    y = torch.tensor(eight_schools_data.Y) if y is None else y
    sigma = torch.tensor(eight_schools_data.SIGMA) if sigma is None else sigma

    def model():
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("school", 8):
            theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)

    return model


def run_mcmc(kernel, warmup=30, samples=20, chains=1, **kw):
    mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, num_chains=chains,
                disable_progbar=True, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "chains drawn sequentially"
        mcmc.run()
    return mcmc


Y8 = torch.tensor(eight_schools_data.Y)
SIGMA8 = torch.tensor(eight_schools_data.SIGMA)


def eight_schools_module_level():  # picklable (multi-process chains pickle the kernel)
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", 8):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu + tau * theta_tilde, SIGMA8), obs=Y8)


# -- import ---------------------------------------------------------------------------


def test_import_does_not_import_jax():
    code = (
        "import sys, esh_kernels.pyro as p; p.AdjustedESH; p.ESH; p.BatchedMCMC; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'numpyro'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# -- bad inputs -----------------------------------------------------------------------


def _gamma_1d():
    pyro.sample("a", dist.Gamma(3.0, 2.0))


@pytest.mark.parametrize("cls", [AdjustedESH, ESH])
def test_one_dimensional_model_is_sampled(cls):
    """A 1-D model, as NUTS samples it: the ESH kernels add an auxiliary standard normal
    coordinate (``core/auxiliary.py``) that the user never sees. Gamma(3, 2): skewed and
    positive (an ``exp`` transform). Pyro's ``MCMC`` and ``BatchedMCMC``."""
    pyro.set_rng_seed(1)
    # 300 + 800 draws (was 500 + 1500; the suite's slowest test): over seeds 1-4 both kernels'
    # z-scores stayed within 1.7, the standard errors coming from the ESS
    mcmc = run_mcmc(cls(_gamma_1d, jit_compile=True), warmup=300, samples=800, chains=2)
    batched = run_batched(cls, _gamma_1d, num_chains=4, warmup_steps=300, num_samples=1000)
    for run in (mcmc, batched):
        a = run.get_samples(group_by_chain=True)["a"]
        mean_z, second_z = raw_moment_z(a, *GAMMA_3_2_MOMENTS)
        assert abs(mean_z) < 4 and abs(second_z) < 4, (type(run).__name__, mean_z, second_z)
    # the reported potential energy (ArviZ's lp) is the model's at the draw, without the
    # auxiliary coordinate's y^2 / 2 (mean 1/2: off by up to several nats per draw before)
    a = mcmc.get_samples(group_by_chain=True)["a"]
    model_pe = -(dist.Gamma(3.0, 2.0).log_prob(a) + a.log())  # with the log-Jacobian of exp
    for c in range(2):
        reported = torch.as_tensor(mcmc._diagnostics[c]["potential_energy"], dtype=a.dtype)
        assert torch.allclose(reported, model_pe[c], rtol=1e-5, atol=1e-4)
    kernel = mcmc.kernel
    assert kernel.inverse_mass_matrix[("a",)].numel() == 1


@pytest.mark.parametrize("cls", [AdjustedESH, ESH])
def test_one_dimensional_model_keeps_its_auxiliary_coordinate_when_moved(cls):
    """When someone else sets the position (a Gibbs step hands ``sample`` new parameters),
    the kernel restarts from it with its own auxiliary coordinate, not a reset one: a reset
    to 0 at every draw would change the chain's stationary distribution."""
    pyro.set_rng_seed(2)
    kernel = cls(_gamma_1d)
    kernel.setup(20)
    params = kernel.initial_params
    for _ in range(25):
        params = kernel.sample(params)
    aux = kernel._draw(kernel._state)[0, 1].item()
    assert aux != 0.0
    moved = {"a": params["a"] + 0.1}
    kernel._step_once = lambda: None  # look at the resynchronised state before it moves
    kernel.sample(moved)
    x = kernel._draw(kernel._state)[0]
    assert x[0].item() == pytest.approx(moved["a"].item()) and x[1].item() == aux


@pytest.mark.parametrize("cls", [ekp.TunedHMC])
def test_tuned_hmc_samples_a_one_dimensional_model(cls):
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))

    assert run_mcmc(cls(model), warmup=5, samples=5).get_samples()["a"].shape == (5,)
    assert run_batched(cls, model, num_chains=2, warmup_steps=5,
                       num_samples=5).get_samples()["a"].shape == (10,)


@pytest.mark.parametrize("site, match", [
    (lambda: pyro.sample("k", dist.Poisson(3.0)), r"'k' \(Poisson\) has no finite support"),
    (lambda: pyro.sample("k", dist.Bernoulli(0.3), infer={"enumerate": "sequential"}),
     r"'k' \(Bernoulli\) is marked .*'sequential'.*infer=\{'enumerate': 'parallel'\}.*"
     r"config_enumerate.*max_plate_nesting"),
])
@pytest.mark.parametrize("cls", KERNELS)
def test_discrete_site_that_cannot_be_summed_out_is_named(cls, site, match):
    """Discrete sites Pyro's NUTS cannot enumerate either: infinite support, or marked for
    another kind of enumeration (the message says how to mark it)."""
    def model():
        pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        site()

    with pytest.raises(ValueError, match=match):
        run_mcmc(cls(model))
    with pytest.raises(ValueError, match=match):
        run_batched(cls, model, num_chains=2, warmup_steps=5, num_samples=5)


Y_LATENT = torch.tensor([1.2, 0.9])


def bernoulli_latent_model():
    """A global enumerated site (unmarked, as NUTS accepts it)."""
    x = pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    k = pyro.sample("k", dist.Bernoulli(0.3))
    pyro.sample("y", dist.Normal(x + 1.5 * k[..., None], 1.0).to_event(1), obs=Y_LATENT)


Y_MIX = torch.tensor([-2.1, -1.5, 1.8, 2.2, 0.3])


def mixture_model():
    """A local enumerated site in a data plate, a constrained continuous site."""
    locs = pyro.sample("locs", dist.Normal(torch.tensor([-1.0, 1.0]), 2.0).to_event(1))
    w = pyro.sample("w", dist.Beta(2.0, 2.0))
    with pyro.plate("data", len(Y_MIX)):
        k = pyro.sample("k", dist.Bernoulli(w), infer={"enumerate": "parallel"})
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., k.long()], 1.0), obs=Y_MIX)


Y_HMM = torch.tensor([-1.1, -0.8, 0.9, 1.3, 1.1, -0.7])


def hmm_model():
    """A hidden Markov chain under pyro.markov: enumeration dimensions are recycled."""
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(2, 2)).to_event(1))
    locs = pyro.sample("locs", dist.Normal(torch.tensor([-1.0, 1.0]), 1.0).to_event(1))
    z = 0
    for t in pyro.markov(range(len(Y_HMM))):
        z = pyro.sample(f"z_{t}", dist.Categorical(Vindex(probs)[..., z, :]))
        pyro.sample(f"y_{t}", dist.Normal(Vindex(locs)[..., z], 0.5), obs=Y_HMM[t])


@pytest.mark.parametrize("model", [bernoulli_latent_model, mixture_model, hmm_model])
def test_enumerated_batched_potential_is_pyros(model):
    """BatchedMCMC's chain-plate potential with enumerated sites summed out per chain equals
    the potential pyro.infer.NUTS uses (initialize_model's), chain by chain, energies and
    gradients, at random points."""
    pyro.set_rng_seed(0)
    kernel = AdjustedESH(model)
    kernel.setup_batched(0, 5)
    x = torch.randn(5, kernel._layout.dim)
    energy, grad = kernel._value_and_grad(x)
    single = SingleChainPotential(kernel.potential_fn, kernel._layout)
    want = [single(x[c:c + 1]) for c in range(5)]
    assert torch.allclose(energy, torch.cat([e for e, _ in want]), rtol=1e-5, atol=1e-5)
    assert torch.allclose(grad, torch.cat([g for _, g in want]), rtol=1e-4, atol=1e-5)
    assert len(set(energy.tolist())) == 5  # the chains are told apart


@pytest.mark.parametrize("cls", KERNELS)
def test_enumerated_model_runs(cls):
    """An enumerated model in MCMC and BatchedMCMC: only continuous sites come back, as
    from NUTS (compiled runs: tests/test_pyro_statistics.py)."""
    pyro.set_rng_seed(0)
    # eager: recording this model's step (1300 operations) takes 1-5 s, more than these
    # 15 draws; enumerated models run recorded in tests/test_pyro_statistics.py
    s = run_mcmc(cls(hmm_model, jit_compile=False, **CAP), warmup=10, samples=5).get_samples()
    assert set(s) == {"probs", "locs"} and s["probs"].shape == (5, 2, 2)
    s = run_batched(cls, hmm_model, num_chains=3, warmup_steps=10, num_samples=5,
                    jit_compile=False, **CAP).get_samples()
    assert set(s) == {"probs", "locs"} and s["locs"].shape == (15, 2)


def empty_model():
    pass


def observed_and_deterministic_model():
    pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.tensor(0.5))
    pyro.deterministic("d", torch.tensor(2.0))


def discrete_only_model():
    k = pyro.sample("k", dist.Bernoulli(0.3))
    pyro.sample("y", dist.Normal(k, 1.0), obs=torch.tensor(0.5))


@pytest.mark.parametrize("model", [empty_model, observed_and_deterministic_model,
                                   discrete_only_model])
@pytest.mark.parametrize("cls", KERNELS)
def test_model_without_continuous_latent_sites(cls, model, capsys):
    """Nothing to sample: the draws are what pyro.infer.NUTS returns for such a model (an
    empty dict), in MCMC and in BatchedMCMC, with no divergences."""
    nuts = MCMC(NUTS(model), num_samples=5, warmup_steps=5, disable_progbar=True)
    nuts.run()
    mcmc = run_mcmc(cls(model), warmup=5, samples=5, chains=2)
    assert mcmc.get_samples() == nuts.get_samples() == {}
    assert mcmc.diagnostics()["divergences"] == {"chain 0": [], "chain 1": []}
    batched = run_batched(cls, model, num_chains=3, warmup_steps=5, num_samples=5)
    assert batched.get_samples(group_by_chain=True) == {}
    assert batched.diagnostics()["divergences"] == {f"chain {i}": [] for i in range(3)}
    batched.summary()
    assert "Number of divergences: 0" in capsys.readouterr().out


def factor_model(value, where):
    """A 2-D standard normal times ``pyro.factor("f")``, which is ``value`` where ``where(x)``."""
    def model():
        x = pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.factor("f", torch.where(where(x), torch.tensor(value), torch.tensor(0.0)))
        pyro.sample("y", dist.Normal(x.sum(-1), 1.0), obs=torch.tensor(0.5))

    return model


@pytest.mark.parametrize("cls", KERNELS)
def test_no_finite_start_from_init_strategy_names_the_site(cls):
    """Pyro's initialize_model finds no finite start ("Model specification seems
    incorrect"): the error names the site whose log density is not finite there."""
    model = factor_model(-math.inf, lambda x: x[..., 0] < 10.0)
    for run in (lambda: run_mcmc(cls(model)),
                lambda: run_batched(cls, model, num_chains=2, warmup_steps=5, num_samples=5)):
        with pytest.raises(ValueError, match=r"not finite.*init_strategy=init_to_uniform.*"
                                             r"site\(s\) 'f' is not finite") as info:
            run()
        assert "'x'" not in str(info.value) and "'y'" not in str(info.value)


@pytest.mark.parametrize("cls", KERNELS)
def test_invalid_initial_params_name_the_site(cls):
    """Explicit initial_params at which the log density is NaN: the error names the site
    and says the given initial_params are invalid (not "pick another init_strategy")."""
    model = factor_model(math.nan, lambda x: x[..., 0] > 0.5)
    with pytest.raises(ValueError, match=r"not finite.*site\(s\) 'f' is not finite.*given "
                                         r"`initial_params` are invalid") as info:
        run_mcmc(cls(model), initial_params={"x": torch.tensor([1.0, 0.0])})
    assert "now init_to" not in str(info.value)
    with pytest.raises(ValueError, match=r"chain 1 is not finite.*'f'.*given `initial_params`"):
        run_batched(cls, model, num_chains=3, warmup_steps=5, num_samples=5,
                    initial_params={"x": torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])})
    run_mcmc(cls(model), warmup=5, samples=5, initial_params={"x": torch.tensor([0.0, 1.0])})


@pytest.mark.parametrize("cls", KERNELS)
def test_non_finite_initial_point(cls):
    def potential(params):
        x = params["x"]
        return torch.where(x[0] > 0, torch.tensor(math.inf), 0.5 * (x * x).sum())

    kernel = cls(potential_fn=potential)
    with pytest.raises(ValueError, match="not finite.*given `initial_params` are invalid"):
        run_mcmc(kernel, initial_params={"x": torch.tensor([1.0, 0.0, 0.0])})


def test_potential_fn_needs_initial_params():
    with pytest.raises(ValueError, match="initial_params"):
        run_mcmc(AdjustedESH(potential_fn=lambda p: (p["x"] ** 2).sum()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"step_size": -0.1}, "step_size"),
        ({"step_size": float("nan")}, "step_size"),
        ({"trajectory_length": 0.0}, "trajectory_length"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"dense_mass": "yes"}, "dense_mass"),
        ({"full_mass": [("x", 3)]}, "list of tuples of site names"),
        ({"full_mass": True, "dense_mass": True}, "not both"),
        ({"adapt_mass_matrix": 1}, "adapt_mass_matrix"),
        ({"jit_compile": "sure"}, "jit_compile"),
        ({"init_strategy": "uniform"}, "init_strategy"),
        ({"max_plate_nesting": -1}, "max_plate_nesting"),
    ],
)
@pytest.mark.parametrize("cls", KERNELS)
def test_invalid_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(gauss_model(), **kwargs)


@pytest.mark.parametrize("cls", KERNELS)
def test_full_mass_is_pyros_name_for_dense_mass(cls):
    """``NUTS(model, full_mass=True)`` swapped for our kernel keeps working: the same
    draws as ``dense_mass=True`` for the same seed, and a dense (matrix) metric."""
    runs = []
    for kw in ({"full_mass": True}, {"dense_mass": True}):
        pyro.set_rng_seed(3)
        mcmc = run_mcmc(cls(gauss_model(), **kw), warmup=40, samples=10)
        runs.append(mcmc.get_samples()["x"])
        assert mcmc.kernel._dense_mass is True
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("cls", KERNELS)
def test_fixed_inverse_mass_matrix_is_used_as_given(cls):
    """``inverse_mass_matrix`` (the NumPyro kernels' argument) with
    ``adapt_mass_matrix=False``: after warmup the metric is the given one, as an array
    (diagonal) or as site blocks (a dense block of eight schools' ``mu`` and ``tau``)."""
    pyro.set_rng_seed(0)
    given = torch.tensor([1.0, 4.0, 0.25])
    kernel = cls(gauss_model(), inverse_mass_matrix=given, adapt_mass_matrix=False, **CAP)
    run_mcmc(kernel, warmup=20, samples=5)
    assert kernel._dense_mass is False  # "auto" is diagonal where a matrix is given
    (imm,) = kernel.inverse_mass_matrix.values()
    torch.testing.assert_close(imm, given)
    block = [[2.0, 0.5], [0.5, 1.0]]
    kernel = cls(eight_schools(), dense_mass=[("mu", "tau")], adapt_mass_matrix=False,
                 inverse_mass_matrix={("mu", "tau"): block, "theta_tilde": torch.full((8,), 3.0)}, **CAP)
    run_mcmc(kernel, warmup=20, samples=5)
    imm = kernel.inverse_mass_matrix
    torch.testing.assert_close(imm[("mu", "tau")], torch.tensor(block))
    torch.testing.assert_close(imm[("theta_tilde",)], torch.full((8,), 3.0))


@pytest.mark.parametrize("kwargs, match", [
    ({"inverse_mass_matrix": [1.0, 2.0]}, r"shape \(3,\) or \(3, 3\)"),
    ({"inverse_mass_matrix": torch.eye(3) + 0.1}, "needs `dense_mass=True`"),
    ({"inverse_mass_matrix": {"y": [1.0]}}, "unknown latent site"),
])
def test_bad_inverse_mass_matrix_is_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_mcmc(AdjustedESH(gauss_model(), **kwargs), warmup=2, samples=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"target_accept_prob": 1.0}, "target_accept_prob"),
    ({"target_accept_prob": 0}, "target_accept_prob"),
    ({"trajectory_factor": -1}, "trajectory_factor"),
])
def test_invalid_adjusted_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdjustedESH(gauss_model(), **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"refresh_rate": -1.0}, "refresh_rate"),
    ({"refresh_rate": math.inf}, "refresh_rate"),
    ({"steps_per_draw": 0}, "steps_per_draw"),
    ({"desired_energy_var": -1e-3}, "desired_energy_var"),
])
def test_invalid_esh_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ESH(gauss_model(), **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"cross_chain": "yes"}, "cross_chain"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"target_accept_prob": 1.5}, "target_accept_prob"),
])
def test_invalid_tuned_hmc_arguments(kwargs, match):
    if not hasattr(ekp, "TunedHMC"):
        pytest.skip("no TunedHMC")
    with pytest.raises(ValueError, match=match):
        ekp.TunedHMC(gauss_model(), **kwargs)


def test_model_and_potential_are_exclusive():
    with pytest.raises(ValueError, match="exactly one"):
        AdjustedESH(gauss_model(), potential_fn=lambda p: 0.0)
    with pytest.raises(ValueError, match="exactly one"):
        AdjustedESH()


def test_unbatchable_model_gives_a_clear_error():
    data = torch.tensor([0.5, -0.3])

    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        loc = torch.stack([a, b])  # breaks with a leading chain dimension
        pyro.sample("obs", dist.Normal(loc, 1.0).to_event(1), obs=data)

    run_mcmc(AdjustedESH(model), warmup=5, samples=5)  # fine one chain at a time
    with pytest.raises(ValueError, match="batch of 3 chains"):
        run_batched(AdjustedESH, model, num_chains=3, warmup_steps=5, num_samples=5)


def test_unbatchable_enumerated_model_points_to_vindex():
    def model():
        locs = pyro.sample("locs", dist.Normal(torch.tensor([-1.0, 1.0]), 2.0).to_event(1))
        with pyro.plate("data", len(Y_MIX)):
            k = pyro.sample("k", dist.Bernoulli(0.4))
            pyro.sample("obs", dist.Normal(locs[k.long()], 1.0), obs=Y_MIX)  # not Vindex

    run_mcmc(AdjustedESH(model), warmup=5, samples=5)  # fine one chain at a time
    with pytest.raises(ValueError, match=r"(?s)batch of 3 chains.*Vindex\(theta\)\[\.\.\., idx\]"):
        run_batched(AdjustedESH, model, num_chains=3, warmup_steps=5, num_samples=5)


# -- MCMC interface ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", KERNELS)
def test_fixed_num_steps_as_pyro_hmc(cls):
    """Pyro's ``HMC(model, num_steps=4)``: TunedHMC and AdjustedESH take ``num_steps`` and
    every draw is exactly that many steps; ESH's draws, each of one fixed physical time, take
    that many on average; the draws have the target's moments."""
    pyro.set_rng_seed(0)
    mcmc = run_mcmc(cls(gauss_model(), num_steps=4, jit_compile=True), warmup=200, samples=1000)
    steps = mcmc.diagnostics()["n_steps"]["chain 0"]
    if cls is ESH:
        mean_steps = sum(steps) / len(steps)
        assert 3.0 < mean_steps < 5.4 and len(set(steps)) > 1, mean_steps
    else:
        assert set(steps) == {4.0}
    x = mcmc.get_samples()["x"].double().numpy()[None]
    for j, sd in enumerate((1.0, 2.0, 0.5)):
        mean_z, second_z = raw_moment_z(x[..., j], 0.0, sd**2, 3 * sd**4)
        assert abs(mean_z) < 4.5 and abs(second_z) < 4.5, (j, mean_z, second_z)


@pytest.mark.parametrize("cls", KERNELS)
def test_mcmc_interface(cls):
    pyro.set_rng_seed(1)
    kernel = cls(eight_schools(), **CAP)
    mcmc = run_mcmc(kernel, warmup=40, samples=30, chains=2)
    samples = mcmc.get_samples(group_by_chain=True)
    assert samples["theta_tilde"].shape == (2, 30, 8)
    assert samples["tau"].shape == (2, 30)
    assert bool((samples["tau"] > 0).all())  # constrained space
    assert not torch.equal(samples["mu"][0], samples["mu"][1])
    diag = mcmc.diagnostics()
    for key in ("divergences", "step size", "gradient evaluations (warmup)", "n_steps"):
        assert set(diag[key]) == {"chain 0", "chain 1"}, key
    assert all(isinstance(v, list) for v in diag["divergences"].values())
    assert all(len(v) == 30 for v in diag["n_steps"].values())
    if cls is not ESH:
        assert 0.0 <= diag["acceptance rate"]["chain 0"] <= 1.0
    json.dumps(kernel.logging())  # the progress bar json-dumps it every iteration
    mcmc.summary()


@pytest.mark.parametrize("cls", KERNELS)
def test_same_seed_same_draws(cls):
    draws = []
    for _ in range(2):
        pyro.set_rng_seed(3)
        draws.append(run_mcmc(cls(eight_schools(), **CAP)).get_samples()["mu"])
    assert torch.equal(draws[0], draws[1])
    pyro.set_rng_seed(4)
    assert not torch.equal(draws[0], run_mcmc(cls(eight_schools(), **CAP)).get_samples()["mu"])


@pytest.mark.parametrize("cls", KERNELS)
def test_jit_compile_gives_the_eager_draws(cls):
    out = {}
    for jit in (False, True):
        pyro.set_rng_seed(5)
        kernel = cls(eight_schools(), jit_compile=jit, ignore_jit_warnings=True, **CAP)
        out[jit] = run_mcmc(kernel, warmup=30, samples=20).get_samples()["theta_tilde"]
        if jit:
            assert kernel.compiled_modes and set(kernel.compiled_modes.values()) == {"trace"}
    assert torch.allclose(out[False], out[True], atol=1e-8, rtol=1e-8)


def test_recorded_graph_drops_identity_views_only():
    """``_drop_identity_views`` removes the same-shape ``view``/``expand`` operations that
    ``make_fx`` records around a matrix product, keeps the ones that change a shape, and the
    graph computes what the function does."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from esh_kernels.pyro._model import _drop_identity_views

    def fn(x, m):
        return ((x[..., None, :] @ m)[..., 0, :] + x.expand(x.shape).view(x.shape)).reshape(-1)

    x, m = torch.randn(3, 4), torch.randn(3, 4, 4)
    gm = make_fx(fn)(x, m)
    aten = torch.ops.aten
    views = (aten.view.default, aten.expand.default, aten._unsafe_view.default, aten.reshape.default)

    def count(g):
        return sum(n.op == "call_function" and n.target in views for n in g.graph.nodes)

    before = count(gm)
    gm = _drop_identity_views(gm)
    after = count(gm)
    assert 0 < after < before
    assert any(n.target == aten.view.default and tuple(n.meta["val"].shape) == (12,) for n in gm.graph.nodes)
    assert torch.equal(gm(x, m), fn(x, m))


def test_recorded_graph_folds_known_results_only():
    """``_fold_trivial`` removes ``neg(neg(a))`` and ``a - sum(zeros_like(b))``, keeps
    ``a + 0`` (not bitwise ``a`` at ``-0.0``) and a subtraction that broadcasts, and the
    graph's outputs are bitwise the function's."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from esh_kernels.pyro._model import _fold_trivial

    def fn(x, y):
        zero = torch.zeros_like(x).sum()
        return (-(-x)) - zero, x + torch.zeros_like(x), y - torch.zeros_like(x), x * 2.0

    x, y = torch.tensor([-0.0, 1.5, -2.0]), torch.tensor(3.0)
    gm = make_fx(fn)(x, y)
    aten = torch.ops.aten

    def count(g, target):
        return sum(n.op == "call_function" and n.target == target for n in g.graph.nodes)

    assert count(gm, aten.neg.default) == 2 and count(gm, aten.sub.Tensor) == 2
    gm = _fold_trivial(gm)
    assert count(gm, aten.neg.default) == 0
    assert count(gm, aten.sub.Tensor) == 1  # y - zeros_like(x) broadcasts to x's shape: kept
    assert count(gm, aten.add.Tensor) == 1
    for got, want in zip(gm(x, y), fn(x, y)):
        assert got.shape == want.shape and torch.equal(got, want)
        assert torch.equal(torch.signbit(got), torch.signbit(want))


@pytest.mark.parametrize("cls", KERNELS)
def test_potential_fn_with_initial_params(cls):
    scale = torch.tensor([1.0, 3.0])

    def potential(params):
        return 0.5 * ((params["x"] / scale) ** 2).sum()

    pyro.set_rng_seed(0)
    kernel = cls(potential_fn=potential)
    mcmc = run_mcmc(kernel, warmup=150, samples=300, initial_params={"x": torch.tensor([2.0, -1.0])})
    x = mcmc.get_samples()["x"]
    assert x.shape == (300, 2)
    assert torch.isfinite(x).all()
    sd = x.std(0)
    assert 0.5 < float(sd[0]) < 1.6 and 1.5 < float(sd[1]) < 4.8


@pytest.mark.parametrize("cls", KERNELS)
def test_float32_runs_finite(cls):
    data = torch.randn(20, generator=torch.Generator().manual_seed(0)).float() + 1.0

    def model():
        loc = pyro.sample("loc", dist.Normal(torch.tensor(0.0), torch.tensor(10.0)))
        scale = pyro.sample("scale", dist.HalfNormal(torch.tensor(5.0)))
        with pyro.plate("n", 20):
            pyro.sample("obs", dist.Normal(loc, scale), obs=data)

    pyro.set_rng_seed(2)
    mcmc = run_mcmc(cls(model), warmup=60, samples=60)
    s = mcmc.get_samples()
    assert s["loc"].dtype == torch.float32
    assert torch.isfinite(s["loc"]).all() and torch.isfinite(s["scale"]).all()
    assert abs(float(s["loc"].mean()) - float(data.mean())) < 1.0
    res = run_batched(cls, model, num_chains=3, warmup_steps=40, num_samples=20)
    s = res.get_samples(group_by_chain=True)
    assert s["scale"].dtype == torch.float32 and torch.isfinite(s["scale"]).all()


@pytest.mark.parametrize("cls", KERNELS)
def test_pickle_round_trip(cls):
    kernel = cls(eight_schools_module_level, jit_compile=True, **CAP)
    clone = pickle.loads(pickle.dumps(kernel))
    pyro.set_rng_seed(0)
    run_mcmc(kernel, warmup=10, samples=5)
    after = pickle.loads(pickle.dumps(kernel))  # also after a run (compiled graphs dropped)
    for k in (clone, after):
        pyro.set_rng_seed(0)
        assert run_mcmc(k, warmup=10, samples=5).get_samples()["mu"].shape == (5,)


def test_cleanup_gives_each_chain_its_own_start():
    pyro.set_rng_seed(0)
    kernel = AdjustedESH(gauss_model())
    mcmc = MCMC(kernel, num_samples=1, warmup_steps=0, num_chains=2, disable_progbar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mcmc.run()
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert not torch.equal(x[0], x[1])
    assert kernel.initial_params is None


def test_arviz_from_pyro():
    az = pytest.importorskip("arviz")
    pyro.set_rng_seed(0)
    mcmc = run_mcmc(AdjustedESH(eight_schools()), warmup=20, samples=20, chains=2)
    idata = az.from_pyro(mcmc, log_likelihood=False)
    assert idata.posterior["mu"].shape == (2, 20)
    assert idata.sample_stats["diverging"].shape == (2, 20)
    batched = run_batched(AdjustedESH, eight_schools(), num_chains=3, warmup_steps=20, num_samples=20)
    idata = az.from_pyro(batched, log_likelihood=False)
    assert idata.posterior["theta_tilde"].shape == (3, 20, 8)
    assert idata.sample_stats["diverging"].shape == (3, 20)


# -- batched chains ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", KERNELS)
def test_batched_interface(cls, capsys):
    pyro.set_rng_seed(0)
    mcmc = BatchedMCMC(cls(eight_schools(), **CAP), num_samples=25, warmup_steps=40, num_chains=3,
                       disable_progbar=True).run()
    s = mcmc.get_samples(group_by_chain=True)
    assert s["theta_tilde"].shape == (3, 25, 8) and s["mu"].shape == (3, 25)
    assert bool((s["tau"] > 0).all())
    assert mcmc.get_samples()["mu"].shape == (75,)
    assert mcmc.get_samples(num_samples=10)["mu"].shape == (10,)
    diag = mcmc.diagnostics()
    assert set(diag["divergences"]) == {"chain 0", "chain 1", "chain 2"}
    assert "n_eff" in diag["mu"] and "r_hat" in diag["mu"]
    mcmc.summary()
    assert "Number of divergences" in capsys.readouterr().out


@pytest.mark.parametrize("cls", KERNELS)
def test_one_batched_chain_is_the_mcmc_chain(cls):
    """C = 1 in BatchedMCMC (chain-plate potential) equals pyro.infer.MCMC (Pyro's own
    potential) up to rounding: same algorithm, same random numbers."""
    pyro.set_rng_seed(7)
    a = run_mcmc(cls(eight_schools(), **CAP), warmup=25, samples=15).get_samples()["theta_tilde"]
    pyro.set_rng_seed(7)
    b = run_batched(cls, eight_schools(), num_chains=1, warmup_steps=25,
                    num_samples=15, **CAP).get_samples()["theta_tilde"]
    assert torch.allclose(a, b, atol=1e-7, rtol=1e-7)


def test_batched_potential_fn():
    scale = torch.tensor([1.0, 3.0])

    def potential(params):  # {site: (C, 2)} -> (C,)
        return 0.5 * ((params["x"] / scale) ** 2).sum(-1)

    pyro.set_rng_seed(0)
    init = {"x": torch.randn(4, 2)}
    res = run_batched(AdjustedESH, potential_fn=potential, num_chains=4, warmup_steps=100,
                      num_samples=100, initial_params=init)
    assert res.get_samples(group_by_chain=True)["x"].shape == (4, 100, 2)
    with pytest.raises(ValueError, match="one energy per chain"):
        run_batched(AdjustedESH, potential_fn=lambda p: (p["x"] ** 2).sum(), num_chains=4,
                    warmup_steps=5, num_samples=5, initial_params=init)


def test_batched_initial_params_shape_is_checked():
    with pytest.raises(ValueError, match="leading dimension"):
        run_batched(AdjustedESH, gauss_model(), num_chains=4, warmup_steps=5, num_samples=5,
                    initial_params={"x": torch.zeros(3, 3)})


def test_multiprocess_chains(monkeypatch):
    """One process per chain (Pyro's _MultiSampler, forced here: this machine has too few
    CPUs for Pyro to choose it): the kernel is pickled into each worker."""
    import pyro.infer.mcmc.api as api

    monkeypatch.setattr(api.mp, "cpu_count", lambda: 8)
    pyro.set_rng_seed(0)
    mcmc = MCMC(AdjustedESH(eight_schools_module_level), num_samples=20, warmup_steps=20,
                num_chains=2, disable_progbar=True, mp_context="fork")
    assert type(mcmc.sampler).__name__ == "_MultiSampler"
    mcmc.run()
    s = mcmc.get_samples(group_by_chain=True)
    assert s["theta_tilde"].shape == (2, 20, 8)
    assert not torch.equal(s["mu"][0], s["mu"][1])
    assert set(mcmc.diagnostics()["divergences"]) == {"chain 0", "chain 1"}


@pytest.mark.parametrize("cls", [AdjustedESH, ESH])
def test_batched_leaves_a_start_on_a_steep_convex_wall(cls):
    """The torch twin of ``tests/test_numpyro_hard_targets.py::
    test_leaves_a_start_on_a_steep_convex_wall``: warmup's descent phase takes the chains
    off ``cosh(20 x0) ~ 1e17`` (without it all four stay at their initial point)."""
    def potential(params):  # {site: (C, 4)} -> (C,)
        x = params["x"]
        return 0.5 * (x**2).sum(-1) + torch.cosh(20.0 * x[:, 0]) - 1.0

    pyro.set_rng_seed(0)
    init = {"x": torch.tensor([2.0, 0.5, -0.5, 1.0], dtype=torch.float64).repeat(4, 1)}
    res = run_batched(cls, potential_fn=potential, num_chains=4, warmup_steps=300,
                      num_samples=300, initial_params=init)
    x = res.get_samples(group_by_chain=True)["x"]
    assert bool((x[..., 0].abs() < 0.2).all()), "a chain stayed on the wall"
    assert float(x[..., 1:].var()) == pytest.approx(1.0, abs=0.25)


def _cholesky_potential(p):
    """A standard normal in 2-D whose potential also factorises ``[[1, x0/2], [x0/2, 1]]``:
    not positive definite for ``|x0| >= 2``, where ``torch.linalg.cholesky`` raises."""
    x = p["x"]
    m = torch.eye(2, dtype=x.dtype) + 0.5 * x[0] * (1.0 - torch.eye(2, dtype=x.dtype))
    chol = torch.linalg.cholesky(m)
    return 0.5 * (x**2).sum() + 0.0 * chol.diagonal().log().sum()


@pytest.mark.parametrize("cls", KERNELS)
def test_singular_matrix_in_the_recorded_step_is_a_rejection(cls):
    """A singular-matrix error raised inside the recorded (TorchScript) step is treated as
    Pyro's HMC treats it: that step runs eagerly, the potential is NaN, the proposal is
    rejected and flagged; the run does not crash and no draw leaves the region where the
    density is defined."""
    pyro.set_rng_seed(0)
    kernel = cls(potential_fn=_cholesky_potential, **CAP)
    mcmc = run_mcmc(kernel, warmup=100, samples=300,
                    initial_params={"x": torch.tensor([0.3, -0.2])})
    assert kernel.compiled_modes and set(kernel.compiled_modes.values()) == {"trace"}
    x = mcmc.get_samples()["x"]
    assert torch.isfinite(x).all() and float(x[:, 0].abs().max()) < 2.0
    assert float(x[:, 0].abs().max()) > 1.0  # the chains did go near the edge
    assert sum(mcmc.diagnostics()["diverging"]["chain 0"]) > 0


def test_custom_mass_matrix_adapter_is_ignored_with_a_warning():
    """Pyro ``HMC``'s ``mass_matrix_adapter`` does not apply (the kernels adapt their own
    metric, which changes efficiency, not the target): setting it warns and the run goes
    on, rather than being ignored silently."""
    from pyro.infer.mcmc.adaptation import ArrowheadMassMatrix

    kernel = AdjustedESH(gauss_model(), **CAP)
    assert kernel.mass_matrix_adapter is None
    with pytest.warns(UserWarning, match="mass_matrix_adapter.*ArrowheadMassMatrix.*ignored"):
        kernel.mass_matrix_adapter = ArrowheadMassMatrix()
    assert run_mcmc(kernel).get_samples()["x"].shape == (20, 3)


@pytest.mark.parametrize("cls", KERNELS)
def test_initial_trace_is_the_start(cls):
    """``kernel.initial_trace = trace`` (as Pyro's ``HMC`` takes it, e.g. from SVI): the
    chain starts at the trace's latent values, mapped to the unconstrained space."""
    def model():
        pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    trace = poutine.trace(poutine.condition(model, data={
        "scale": torch.tensor(7.0), "x": torch.tensor([3.0, -4.0])})).get_trace()
    kernel = cls(model, **CAP)
    kernel.initial_trace = trace
    assert kernel.initial_trace is trace
    kernel.setup(0)
    start = kernel._layout.unravel(kernel._draw(kernel._state)[0])
    torch.testing.assert_close(start["scale"], torch.log(torch.tensor(7.0)))
    torch.testing.assert_close(start["x"], torch.tensor([3.0, -4.0]))


def test_clear_cache_recomputes_the_potential_at_the_next_draw():
    """Pyro's ``test_unnormalized_normal`` loop calls ``kernel.clear_cache()`` before every
    ``kernel(samples)``: the potential energy kept for the current position is recomputed
    (here after the potential changed; the transition is stubbed to stay put, so the state
    after the draw is what the re-sync produced)."""
    target = {"mean": 0.0}

    def potential(p):
        return 0.5 * ((p["x"] - target["mean"]) ** 2).sum()

    for clear, mean in ((False, 0.0), (True, 5.0)):
        target["mean"] = 0.0
        kernel = ekp.TunedHMC(potential_fn=potential, jit_compile=False)
        kernel.initial_params = {"x": torch.ones(2)}
        kernel.setup(0)
        kernel._transition = lambda state, i: state
        target["mean"] = 5.0
        if clear:
            kernel.clear_cache()
        kernel(kernel.initial_params)
        expected = 0.5 * 2 * (1.0 - mean) ** 2
        assert float(kernel._state.potential_energy) == pytest.approx(expected)


def _two_d_pyro():
    pyro.sample("x", dist.Normal(torch.zeros(2), torch.tensor([1.0, 3.0])).to_event(1))


@pytest.mark.parametrize("cls", [AdjustedESH, ESH, ekp.TunedHMC])
def test_given_step_size_is_where_warmup_starts_as_for_nuts(cls):
    """As ``pyro.infer.NUTS(model, step_size=...)``: warmup adapts from a given step size;
    ``adapt_step_size=False`` fixes it (and needs it)."""
    def final_step(kernel):
        pyro.set_rng_seed(4)
        run = run_batched(kernel, num_chains=2, warmup_steps=200, num_samples=5)
        return torch.tensor(list(run.diagnostics()["step size"].values()))

    start = 1e-3
    tuned, default = final_step(cls(_two_d_pyro, step_size=start)), final_step(cls(_two_d_pyro))
    assert torch.all(tuned > 50 * start) and torch.all((tuned / default).log().abs() < math.log(3.0)), (tuned, default)
    fixed = final_step(cls(_two_d_pyro, step_size=0.25, adapt_step_size=False))
    assert torch.allclose(fixed, torch.tensor(0.25, dtype=fixed.dtype))
    with pytest.raises(ValueError, match="adapt_step_size=False.*step_size"):
        cls(_two_d_pyro, adapt_step_size=False)


@pytest.mark.parametrize("cls", [AdjustedESH, ESH, ekp.TunedHMC])
def test_clear_cache_recomputes_the_potential_without_moving_the_chain(cls):
    """``clear_cache()`` before every draw (Pyro's ``test_unnormalized_normal`` does it):
    the potential energy and gradient are recomputed where the dynamics are, nothing else.
    With an unchanged potential the draws are those of a run without it, exactly (ESH
    restarted its trajectory and clock at the picked draw instead: sd 0.82 on a standard
    normal). After the potential changes (an eager step), the chain follows the new one."""
    shift = {"loc": 0.0}

    def potential(p):
        return 0.5 * ((p["z"] - shift["loc"]) ** 2).sum()

    def run(clear, moved_at=None):
        pyro.set_rng_seed(0)
        shift["loc"] = 0.0
        # a recorded step (jit_compile) keeps the potential it recorded, as Pyro's HMC's
        kernel = cls(potential_fn=potential, jit_compile=moved_at is None)
        kernel.initial_params = {"z": torch.zeros(3)}
        kernel.setup(100)
        params, draws = kernel.initial_params, []
        for i in range(400):
            if i == moved_at:
                shift["loc"] = 5.0
            if clear:
                kernel.clear_cache()
            params = kernel.sample(params)
            draws.append(params["z"])
        return torch.stack(draws)

    assert torch.equal(run(clear=True), run(clear=False))
    late = run(clear=True, moved_at=200)[300:]
    assert torch.allclose(late.mean(), torch.tensor(5.0, dtype=late.dtype), atol=0.5), late.mean()
