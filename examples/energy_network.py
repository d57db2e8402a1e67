"""Sampling neural energy functions with batched ESH dynamics (torch).

Three things a user of energy-based models does with ``esh_kernels.torch``:

1. estimate log Z of a model with a known normaliser (Jarzynski sampler) and compare;
2. train a small energy network by persistent contrastive divergence, with the negative
   samples drawn by ESH from a replay buffer (``ReplayBuffer``);
3. sample a batch of image-shaped chains from a small conv-net energy in float32, with
   the box constraint x in [-1, 1] (``sample(..., bounds=True)``).

Run::

    python examples/energy_network.py            # about a minute on a laptop CPU
    python examples/energy_network.py --quick    # a few seconds (CI)
    python examples/energy_network.py --device cuda

See docs/energy_models.md.
"""

import argparse
import math
import time

import torch

from esh_kernels.torch import ReplayBuffer, jarzynski, sample


def log_z_of_a_known_model(n_particles, device):
    """A 10-D Gaussian with a shifted mean and unequal variances: log Z is known."""
    d = 10
    var = torch.linspace(0.3, 1.5, d, device=device)
    mu = 0.8 * torch.linspace(-1.0, 1.0, d, device=device)

    def energy(x):  # (batch, 10) -> (batch,)
        return 0.5 * ((x - mu) ** 2 / var).sum(-1)

    truth = (0.5 * torch.log(2 * math.pi * var)).sum().item()
    gen = torch.Generator(device).manual_seed(0)
    out = jarzynski(energy, (n_particles, d), n_steps=50, step_size=0.2, device=device,
                    generator=gen)
    print("1. log Z of a 10-D Gaussian (Jarzynski, standard-normal base, 50 steps)")
    print(f"   estimate {out.log_z.item():+.4f} ± {out.log_z_se.item():.4f}   "
          f"truth {truth:+.4f}   error {out.log_z.item() - truth:+.4f}")
    print(f"   Kish ESS {out.ess.item():.0f} of {n_particles} particles")
    # with a temperature: log Z of exp(-2 E)
    out2 = jarzynski(energy, (n_particles, d), 50, 0.2, energy_scale=2.0, device=device,
                     generator=gen)
    truth2 = (0.5 * torch.log(2 * math.pi * var / 2.0)).sum().item()
    print(f"   energy_scale=2: {out2.log_z.item():+.4f} ± {out2.log_z_se.item():.4f}   "
          f"truth {truth2:+.4f}")


MODES = torch.tensor([[1.5, 0.0], [0.0, 1.5], [-1.5, 0.0], [0.0, -1.5]])
MODE_STD = 0.15


def data_batch(n, generator, device):
    idx = torch.randint(len(MODES), (n,), generator=generator)
    x = MODES[idx] + MODE_STD * torch.randn(n, 2, generator=generator)
    return x.to(device)


def near_mode_fraction(x):
    """Fraction of points within 3 standard deviations of a data mode."""
    dist = torch.cdist(x.cpu().float(), MODES).min(1).values
    return (dist < 3 * MODE_STD).float().mean().item()


class MLPEnergy(torch.nn.Module):
    def __init__(self, width=64):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, width), torch.nn.SiLU(),
            torch.nn.Linear(width, width), torch.nn.SiLU(),
            torch.nn.Linear(width, 1),
        )

    def forward(self, x):  # (batch, 2) -> (batch,)
        # a weak quadratic term keeps the density normalisable from the start
        return self.net(x).squeeze(-1) + 0.05 * (x**2).sum(-1)


def train_with_replay_buffer(n_iters, device):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = MLPEnergy().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    buf = ReplayBuffer.uniform(4000, (2,), bounds=(-3.0, 3.0), device=device,
                               reinit_fraction=0.05, step_size=0.1)
    t0 = time.perf_counter()
    for it in range(n_iters):
        x_pos = data_batch(128, gen, device)
        x_neg = buf.sample(net, 128, n_steps=30)  # ESH negatives, written back to the buffer
        e_pos, e_neg = net(x_pos), net(x_neg)
        loss = e_pos.mean() - e_neg.mean() + 0.1 * (e_pos**2 + e_neg**2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - t0
    print(f"2. PCD training of a 2-D MLP energy, {n_iters} iterations, 30 ESH steps each "
          f"({elapsed:.1f} s)")
    # Fresh chains from noise: ergodic reservoir draws vs. final states
    net.eval()
    x0 = 6 * torch.rand(4000, 2, generator=gen).to(device) - 3
    res = sample(net, x0, n_steps=400, step_size=0.05)
    data = data_batch(4000, gen, "cpu")
    print(f"   fraction within 3 sd of a data mode: data {near_mode_fraction(data):.2f}, "
          f"ESH reservoir draws {near_mode_fraction(res.samples):.2f}, "
          f"buffer {near_mode_fraction(buf.buffer):.2f}")
    max_err = res.diagnostics.energy_error.abs().max().item()
    print(f"   max |energy error| over the run {max_err:.3f}, "
          f"diverged chains {int(res.diverged.sum())}")
    return net


class ConvEnergy(torch.nn.Module):
    def __init__(self, channels=16):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(channels, channels, 3, stride=2, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(channels, channels, 3, stride=2, padding=1), torch.nn.SiLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(channels, 1),
        )

    def forward(self, x):  # (batch, 3, H, W) -> (batch,)
        return self.body(x).squeeze(-1)


def sample_image_energy(batch, size, n_steps, device):
    torch.manual_seed(1)
    net = ConvEnergy().to(device).eval()
    x0 = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    # energy_scale acts as an inverse temperature (the paper's JEM runs use large values)
    res = sample(net, x0, n_steps, step_size=0.5, energy_scale=100.0, bounds=True)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    diag = res.diagnostics
    print(f"3. {batch} image chains of shape (3, {size}, {size}), float32, {n_steps} steps, "
          f"box [-1, 1]: {1e3 * elapsed / n_steps:.2f} ms/step")
    print(f"   scaled energy: start {100.0 * net(x0).mean().item():+.2f}, "
          f"end {diag.energy[-1].mean().item():+.2f}, reservoir draws "
          f"{res.sample_energy.mean().item():+.2f}")
    print(f"   max |energy error| {diag.energy_error.abs().max().item():.3f}, "
          f"all in box: {bool(res.samples.abs().max() <= 1)}, dtype {res.samples.dtype}")


QUICK_NOTE = ("--quick: a smoke run with tiny sizes; the trained energy (part 2, 30 "
              "iterations instead of 400) is not converged (run without --quick)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    log_z_of_a_known_model(20000, args.device)
    train_with_replay_buffer(30 if args.quick else 400, args.device)
    if args.quick:
        sample_image_energy(16, 8, 20, args.device)
    else:
        sample_image_energy(256, 32, 100, args.device)
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
