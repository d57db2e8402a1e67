"""Tests of the batched ESH energy samplers, torch backend (``esh_kernels.torch``)."""

import gc
import math
import tracemalloc
import weakref

import pytest

torch = pytest.importorskip("torch")

from esh_kernels.core.energy_sampling import reflect  # noqa: E402
from esh_kernels.torch import ReplayBuffer, jarzynski, sample  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------
# 2-D mixture of 4 Gaussians (unequal weights, modes 4 sigma apart)

MOG_MU = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)
MOG_W = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
MOG_S = 0.5


def mog_energy(x):
    d2 = ((x[:, None, :] - MOG_MU.to(x.dtype)) ** 2).sum(-1)
    return -torch.logsumexp(-d2 / (2 * MOG_S**2) + MOG_W.to(x.dtype).log(), dim=-1)


def mog_features(x):
    x = x.double()
    return torch.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 0] * x[:, 1], x[:, 1] ** 2], 1)


def test_reservoir_draws_match_mixture():
    n_chains = 4000
    gen = torch.Generator().manual_seed(0)
    x0 = 1.5 * torch.randn(n_chains, 2, generator=gen, dtype=torch.float64)
    res = sample(mog_energy, x0, 800, 0.05, generator=gen, keep_diagnostics=False)
    mu, w = MOG_MU, MOG_W
    m2 = torch.einsum("k,ki,kj->ij", w, mu, mu) + MOG_S**2 * torch.eye(2, dtype=torch.float64)
    truth = torch.stack([(w @ mu)[0], (w @ mu)[1], m2[0, 0], m2[0, 1], m2[1, 1]])

    f = mog_features(res.samples)
    se = f.std(0) / math.sqrt(n_chains)
    assert torch.all((f.mean(0) - truth).abs() < 4 * se + 0.02), (f.mean(0) - truth) / se
    # the final (unweighted) states are far off: they follow p^(1/2) in 2-D
    g = mog_features(res.state.x)
    assert ((g.mean(0) - truth).abs() / (g.std(0) / math.sqrt(n_chains))).max() > 8


# ---------------------------------------------------------------------------------------
# The reservoir picks trajectory points with probability ∝ physical time spent there


def _quartic(x):
    return 0.5 * (x**2).sum(-1) + 0.25 * (x**4).sum(-1)


def test_reservoir_pick_frequencies_follow_half_step_times():
    n_copies, n_steps = 40000, 4
    x0 = torch.tensor([[1.5, -0.7, 0.3]], dtype=torch.float64).repeat(n_copies, 1)
    u0 = torch.tensor([[0.2, 1.0, -0.5]], dtype=torch.float64).repeat(n_copies, 1)
    gen = torch.Generator().manual_seed(1)
    res = sample(_quartic, x0, n_steps, 0.6, u0=u0, generator=gen, keep_trajectory=True)
    traj = res.trajectory[:, 0]  # every copy follows the same deterministic trajectory
    assert torch.allclose(res.trajectory, traj[:, None].expand_as(res.trajectory))
    probs = torch.softmax(res.log_time_weights[:, 0], 0)
    # which trajectory point did each copy keep?
    dist = ((res.samples[None] - traj[:, None]) ** 2).sum(-1)
    counts = torch.bincount(dist.argmin(0), minlength=n_steps + 1).double()
    expected = n_copies * probs
    chi2 = float((((counts - expected) ** 2) / expected).sum())
    assert chi2 < 25.0, (counts, expected)  # chi2 with 4 dof: P(> 25) < 1e-4
    # the point weights are not uniform (the test has power) ...
    assert float(probs.max() / probs.min()) > 1.5
    # ... and add up to the total physical time of each chain
    assert torch.allclose(torch.logsumexp(res.log_time_weights, 0), res.log_total_time)
    assert torch.allclose(res.log_times[-1], res.log_total_time)
    assert torch.isneginf(res.log_times[0]).all()
    # the reservoir also reports the energy of its draw
    assert torch.allclose(res.sample_energy, _quartic(res.samples))


def test_energy_error_is_second_order():
    x0 = torch.tensor([[1.5, -0.7, 0.3]], dtype=torch.float64)
    u0 = torch.tensor([[0.2, 1.0, -0.5]], dtype=torch.float64)
    errs = []
    for eps in (0.1, 0.05):
        res = sample(_quartic, x0, int(round(2.0 / eps)), eps, u0=u0,
                     uniforms=torch.full((int(round(2.0 / eps)), 2, 1), 0.5, dtype=torch.float64))
        errs.append(res.diagnostics.energy_error.abs().max().item())
        d = res.diagnostics
        assert torch.allclose(d.kinetic[-1], 3 * res.state.r)  # kinetic term d * r
        assert torch.allclose(d.energy_error, d.energy + d.kinetic - _quartic(x0))
    assert 2.5 < errs[0] / errs[1] < 6.0  # ~4 for a second-order integrator


# ---------------------------------------------------------------------------------------
# Jarzynski log Z


VAR3 = torch.tensor([0.12, 0.15, 0.19], dtype=torch.float64)


def test_jarzynski_log_z_3d_gaussian_with_energy_scale():
    gen = torch.Generator().manual_seed(2)
    for scale in (1.0, 2.5):
        truth = float((0.5 * torch.log(2 * math.pi * VAR3 / scale)).sum())
        out = jarzynski(lambda x: 0.5 * (x**2 / VAR3.to(x.dtype)).sum(-1), (20000, 3), 100, 0.1,
                        generator=gen, energy_scale=scale, keep_diagnostics=False)
        err = out.log_z.item() - truth
        assert abs(err) < 4 * out.log_z_se.item() + 0.01, (scale, err, out.log_z_se.item())
        assert 1000 < out.ess.item() <= 20000


def test_jarzynski_log_z_10d_shifted_gaussian():
    d = 10
    var = torch.linspace(0.3, 1.5, d, dtype=torch.float64)
    mu = 0.8 * torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    truth = float((0.5 * torch.log(2 * math.pi * var)).sum())
    gen = torch.Generator().manual_seed(3)
    out = jarzynski(lambda x: 0.5 * ((x - mu) ** 2 / var).sum(-1), (20000, d), 50, 0.2,
                    generator=gen, dtype=torch.float64, keep_diagnostics=False)
    err = out.log_z.item() - truth
    assert abs(err) < 4 * out.log_z_se.item() + 0.02, (err, out.log_z_se.item())


def test_jarzynski_custom_base_and_box():
    gen = torch.Generator().manual_seed(4)
    # base N(m, s^2 I) passed with its log density
    m, s = 0.3, 0.5
    x0 = m + s * torch.randn(20000, 3, generator=gen, dtype=torch.float64)
    base = (-0.5 * ((x0 - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)
    energy = lambda x: 0.5 * (x**2 / VAR3).sum(-1)  # noqa: E731
    truth = float((0.5 * torch.log(2 * math.pi * VAR3)).sum())
    out = jarzynski(energy, x0, 100, 0.1, generator=gen, base_log_prob=base)
    assert abs(out.log_z.item() - truth) < 4 * out.log_z_se.item() + 0.01
    # a Gaussian truncated to the box [-1, 1]^3 (reflection), uniform base on the box
    sig = 0.6
    z1 = sig * math.sqrt(2 * math.pi) * math.erf(1 / (sig * math.sqrt(2)))
    out = jarzynski(lambda x: 0.5 * (x**2).sum(-1) / sig**2, (20000, 3), 100, 0.1,
                    generator=gen, bounds=True, dtype=torch.float64)
    assert out.samples.abs().max().item() <= 1.0
    assert abs(out.log_z.item() - 3 * math.log(z1)) < 4 * out.log_z_se.item() + 0.01


# ---------------------------------------------------------------------------------------
# float32 image batches with a tiny conv net


class TinyConvEnergy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.out = torch.nn.Linear(8 * 4 * 4, 1)

    def forward(self, x):
        h = torch.nn.functional.silu(self.conv1(x))
        h = torch.nn.functional.silu(self.conv2(h))
        return self.out(h.flatten(1)).squeeze(-1) + 0.5 * (x**2).flatten(1).sum(-1)


def test_float32_image_batch_with_conv_net():
    torch.manual_seed(5)
    net = TinyConvEnergy()
    x0 = torch.rand(16, 3, 8, 8) * 2 - 1
    res = sample(net, x0, 50, 0.2, bounds=True, refresh_rate=0.1, keep_trajectory=True)
    for name, t in res._asdict().items():
        if torch.is_tensor(t) and t.is_floating_point():
            assert t.dtype == torch.float32, name
            assert not t.requires_grad, name
    assert torch.isfinite(res.samples).all() and torch.isfinite(res.state.x).all()
    assert torch.isfinite(res.diagnostics.energy_error).all()
    assert res.samples.abs().max() <= 1.0 and res.trajectory.abs().max() <= 1.0
    assert res.trajectory.shape == (51, 16, 3, 8, 8)
    norms = res.state.u.flatten(1).norm(dim=1)
    assert (norms - 1).abs().max() < 1e-5
    # parameters keep their requires_grad flags and get no .grad
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    # Jarzynski on the same net (energy_scale as a temperature)
    jr = jarzynski(net, x0, 20, 0.2, bounds=True, energy_scale=0.5)
    assert torch.isfinite(jr.log_weights).all() and torch.isfinite(jr.log_z)
    assert 1.0 <= jr.ess.item() <= 16.0


# ---------------------------------------------------------------------------------------
# Memory does not grow with n_steps; no autograd graph is retained


def _live_tensor_bytes():
    """Bytes of all distinct storages of live Python-visible tensors."""
    seen = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor):  # type(): no attribute access on proxies
            storage = obj.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def test_memory_independent_of_n_steps():
    net = TinyConvEnergy().double()
    x0 = torch.rand(8, 3, 8, 8, dtype=torch.float64) * 2 - 1
    n_steps = 400
    refs, alive, live_bytes = [], [], {}

    def energy(x):
        refs.append(weakref.ref(x))
        alive.append(sum(r() is not None for r in refs))
        if len(refs) in (6, n_steps + 1):  # early in the loop and at the last step
            live_bytes[len(refs)] = _live_tensor_bytes()
        return net(x)

    out = sample(energy, x0, n_steps, 0.1, keep_diagnostics=False)
    # inputs of old energy evaluations are freed as the loop goes on ...
    assert max(alive) <= 3
    # ... and the tensors alive at the last step take no more memory than at step 5
    assert live_bytes[n_steps + 1] <= live_bytes[6] + 4096, live_bytes
    # no autograd graph is attached to any output, parameters are left as they were
    for t in (out.samples, out.state.x, out.state.u, out.state.r, out.state.energy,
              out.state.grad, out.sample_energy, out.log_total_time):
        assert not t.requires_grad and t.grad_fn is None
    assert all(p.requires_grad and p.grad is None for p in net.parameters())

    # Python-side peak memory and the result sizes do not depend on n_steps. tracemalloc
    # sees every thread of the process (under pytest-xdist, the worker's I/O thread too), so
    # each peak is the smaller of two runs: a leak shows in both, a stray allocation in one
    outs, peaks = [], []
    sample(net, x0, 300, 0.1, keep_diagnostics=False)  # warm up torch's internal caches
    for n in (50, 400):
        runs = []
        for _ in range(2):
            gc.collect()
            tracemalloc.start()
            out = sample(net, x0, n, 0.1, keep_diagnostics=False)
            runs.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        outs.append(out)
        peaks.append(min(runs))
    assert peaks[1] < peaks[0] + 50_000, peaks  # a 150 B/step leak would add 52 kB
    for a, b in zip(outs[0], outs[1]):
        assert (a is None and b is None) or not torch.is_tensor(a) or a.shape == b.shape
    assert outs[0].trajectory is None and outs[0].diagnostics is None


# ---------------------------------------------------------------------------------------
# Reflection helper


def test_reflect_folds_any_number_of_crossings():
    x = torch.tensor([0.5, 1.2, -1.3, 3.5, -4.25, 1.0, -1.0, 5.0], dtype=torch.float64)
    u = torch.ones_like(x)
    xr, ur = reflect(x, u, -1.0, 1.0)
    # 3.5 -> crosses 1 (to -1.5), crosses -1 (to -0.5): two flips
    # -4.25 -> mirrored at -1 (2.25), then at 1 (-0.25): two flips
    expected = torch.tensor([0.5, 0.8, -0.7, -0.5, -0.25, 1.0, -1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(xr, expected)
    # an odd number of wall hits flips the velocity
    assert ur.tolist() == [1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0]
    assert xr.abs().max() <= 1.0


# ---------------------------------------------------------------------------------------
# Persistent chains


def test_replay_buffer():
    gen = torch.Generator().manual_seed(6)
    buf = ReplayBuffer(torch.zeros(50, 3), reinit_fraction=0.0, step_size=0.01,
                       use_reservoir=False, generator=gen)
    out = buf.sample(lambda x: 0.5 * (x**2).sum(-1), 20, 3)
    assert out.shape == (20, 3) and len(buf) == 50
    changed = (buf.buffer != 0).any(1)
    assert int(changed.sum()) == 20
    assert buf.buffer.abs().max() <= 0.03 + 1e-6
    assert torch.equal(torch.sort(buf.buffer[changed], 0).values, torch.sort(out, 0).values)

    buf2 = ReplayBuffer.uniform(50, (2, 3), bounds=(-2.0, 2.0), reinit_fraction=1.0,
                                generator=gen)
    buf2.buffer.zero_()
    out2 = buf2.sample(lambda x: 0.5 * (x**2).flatten(1).sum(-1), 20, 3)
    assert out2.shape == (20, 2, 3)
    assert out2.abs().mean() > 0.3 and out2.abs().max() <= 2.0
    assert buf2.last_result.samples.shape == (20, 2, 3)


# ---------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_clear_errors():
    e3 = lambda x: (x**2).sum(-1)  # noqa: E731
    with pytest.raises(ValueError, match="at least 2 elements"):
        sample(e3, torch.zeros(4, 1), 5)
    with pytest.raises(ValueError, match="one energy per chain"):
        sample(lambda x: x, torch.zeros(4, 3), 5)
    with pytest.raises(ValueError, match="step_size"):
        sample(e3, torch.zeros(4, 3), 5, 0.0)
    with pytest.raises(ValueError, match="n_steps"):
        sample(e3, torch.zeros(4, 3), 2.5)
    with pytest.raises(ValueError, match="energy_scale"):
        sample(e3, torch.zeros(4, 3), 5, energy_scale=-1.0)
    with pytest.raises(ValueError, match="inside bounds"):
        sample(e3, torch.full((4, 3), 2.0), 5, bounds=True)
    with pytest.raises(ValueError, match="normals"):
        sample(e3, torch.zeros(4, 3), 5, refresh_rate=1.0, normals=torch.zeros(5, 4))
    with pytest.raises(ValueError, match="floating"):
        sample(e3, torch.zeros(4, 3, dtype=torch.int64), 5)
    with pytest.raises(ValueError, match="base_log_prob"):
        jarzynski(e3, torch.zeros(4, 3), 5, base_log_prob=torch.zeros(3))
    with pytest.raises(ValueError, match="batch_size"):
        ReplayBuffer(torch.zeros(4, 3)).sample(e3, 10, 2)


def test_non_finite_energy_freezes_chain_and_flags_it():
    def energy(x):  # infinite outside the ball of radius 1.05
        return torch.where(x.norm(dim=-1) < 1.05, 0.5 * (x**2).sum(-1), math.inf)

    x0 = torch.tensor([[1.0, 0.0], [0.0, 0.1]], dtype=torch.float64)
    u0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    res = sample(energy, x0, 5, 0.1, u0=u0, generator=torch.Generator().manual_seed(0))
    assert res.diverged.tolist() == [True, False]
    assert torch.isfinite(res.samples).all() and torch.isfinite(res.state.x).all()
    assert res.state.x[0].norm() < 1.05


def test_works_under_inference_mode_and_with_energy_args():
    scale = torch.tensor([1.0, 2.0, 3.0])

    def energy(x, s):
        return 0.5 * (x**2 * s).sum(-1)

    with torch.inference_mode():
        x0 = torch.rand(6, 3)
        res = sample(energy, x0, 5, 0.1, energy_args=(scale,))
    assert torch.isfinite(res.samples).all() and not res.diverged.any()
    assert torch.allclose(res.state.energy, energy(res.state.x, scale))
    assert torch.allclose(res.state.grad, res.state.x * scale)
