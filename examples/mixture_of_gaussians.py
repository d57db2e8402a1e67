"""Sampling a plain energy function with ``potential_fn``: the ESH paper's 2-D mixture of
eight Gaussians.

No model, just an energy ``E(x) = -log p(x)`` in JAX: eight Gaussians with standard
deviation 0.075 whose means sit on a circle of radius 0.5,
``0.5 * (cos(2 pi k / 8), sin(2 pi k / 8))``, k = 0..7 (Ver Steeg & Galstyan 2021, the
"2D MOG" target). Neighbouring modes are five standard deviations apart, so a sampler has
to cross low-density gaps. ESH (``esh_kernels.numpyro.ESH``) is given the energy through
``potential_fn=`` and starting points through ``init_params``; many chains run at once
with ``chain_method="vectorized"``. The script prints the share of draws near each mode
(1/8 each for the target) and saves a picture of the draws.

    python examples/mixture_of_gaussians.py                     # ESH, 16 chains
    python examples/mixture_of_gaussians.py --kernel AdjustedESH
    python examples/mixture_of_gaussians.py --quick             # small budgets (CI)

Writes ``OUT/mixture_of_gaussians.png`` (``--out``, default ``example_output``).
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.special import logsumexp  # noqa: E402
from numpyro.infer import MCMC  # noqa: E402

import esh_kernels.numpyro as ek  # noqa: E402

NUM_MODES, RADIUS, SIGMA = 8, 0.5, 0.075
ANGLES = 2 * np.pi * np.arange(NUM_MODES) / NUM_MODES
MEANS = RADIUS * np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=-1)


def energy(x):
    """E(x) = -log sum_k N(x; mean_k, SIGMA^2 I) (up to a constant), x of shape (2,)."""
    sq_dist = jnp.sum((x - MEANS) ** 2, axis=-1)
    return -logsumexp(-0.5 * sq_dist / SIGMA**2)


QUICK_NOTE = ("--quick: a smoke run with small budgets; these numbers are not converged "
              "(run without --quick for real results)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="ESH", choices=["ESH", "AdjustedESH", "TunedHMC"])
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="small budgets (CI smoke run)")
    parser.add_argument("--out", default="example_output", help="directory for the output files")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warmup, draws = (200, 200) if args.quick else (1000, 2000)
    chains = args.chains

    kernel = getattr(ek, args.kernel)(potential_fn=energy)
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    # starting points: uniform on the square [-1, 1]^2, one row per chain
    init = jax.random.uniform(jax.random.PRNGKey(1), (chains, 2), minval=-1.0, maxval=1.0)
    mcmc.run(jax.random.PRNGKey(0), init_params=init, extra_fields=("n_steps", "diverging"))

    x = np.asarray(mcmc.get_samples(group_by_chain=True))  # (chains, draws, 2)
    nearest = np.argmin(((x[..., None, :] - MEANS) ** 2).sum(-1), axis=-1)
    share = np.bincount(nearest.ravel(), minlength=NUM_MODES) / nearest.size
    modes_per_chain = [len(np.unique(c)) for c in nearest]
    grads = int(np.sum(mcmc.get_extra_fields()["n_steps"]))
    print(f"{args.kernel}: {chains} chains x {draws} draws, {grads} gradient evaluations, "
          f"{int(np.sum(mcmc.get_extra_fields()['diverging']))} divergences")
    print("share of draws nearest each mode (target 0.125 each):", np.round(share, 3))
    print(f"modes visited per chain: min {min(modes_per_chain)}, max {max(modes_per_chain)}")
    radius = np.linalg.norm(x, axis=-1)
    print(f"radius mean {radius.mean():.3f} (target about {RADIUS:.3f})")

    flat = x.reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(5, 5))
    alpha = min(0.5, 6000 / len(flat))  # keep dense clouds readable
    ax.scatter(flat[:, 0], flat[:, 1], s=3, alpha=alpha, lw=0, color="C0")
    ax.scatter([], [], s=10, color="C0", label=f"{args.kernel} draws")
    circles = [plt.Circle(m, 2 * SIGMA, fill=False, color="k", lw=0.8) for m in MEANS]
    for circle in circles:
        ax.add_patch(circle)
    ax.plot([], [], "ko", mfc="none", label="mode, 2 sd")
    ax.set(xlim=(-0.9, 0.9), ylim=(-0.9, 0.9), aspect="equal",
           title=f"2-D mixture of 8 Gaussians: {chains} chains x {draws} draws")
    ax.legend(loc="upper right", fontsize=8)
    path = out / "mixture_of_gaussians.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"wrote {path}")
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
