"""Demo: ESH, AdjustedESH (and TunedHMC) next to NumPyro's NUTS on eight schools.

Eight schools (Rubin 1981; posteriordb ``eight_schools_noncentered``) is the classic
hierarchical model whose centred form has a funnel; this is the non-centred form. Each
sampler runs 4 chains of 1000 warmup + 1000 draws and we print the posterior summary,
the smallest bulk effective sample size over parameters, gradient evaluations of the kept
draws (warmup excluded) and ESS per 1000 of them. Changing the kernel is the only edit a
NumPyro user makes.

    python examples/demo.py            # full run (about a minute on 2 CPU cores)
    python examples/demo.py --quick    # small budgets, a smoke run for CI (not converged)
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS

import esh_kernels.numpyro as ek

# posteriordb eight_schools data (BDA3 Table 5.2)
Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", sigma.shape[0]):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def run(name, kernel, steps_field, num_warmup, num_samples, verbose):
    print(f"running {name} (4 chains x {num_warmup} warmup + {num_samples} draws)...",
          end=" ", flush=True)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=4,
                chain_method="vectorized", progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(0), SIGMA, y=Y, extra_fields=(steps_field,))
    jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - start
    print(f"done in {seconds:.1f} s", flush=True)
    if verbose:
        print(f"\n=== {name} ===")
        mcmc.print_summary(exclude_deterministic=True)
    samples = mcmc.get_samples(group_by_chain=True)
    ess = min(
        float(np.min(effective_sample_size(np.asarray(samples[k]))))
        for k in ("mu", "tau", "theta_tilde")
    )
    grads = int(np.sum(mcmc.get_extra_fields()[steps_field]))
    divergences = int(np.sum(mcmc.get_extra_fields(group_by_chain=True).get("diverging", 0)))
    return name, ess, grads, seconds, divergences, float(np.mean(samples["tau"]))


QUICK_NOTE = ("--quick: a smoke run with small budgets; these numbers are not converged "
              "(run without --quick for real results)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (CI smoke run)")
    args = parser.parse_args()
    warmup, draws = (200, 200) if args.quick else (1000, 1000)
    kernels = [
        ("NumPyro NUTS", NUTS(eight_schools), "num_steps"),
        ("ESH", ek.ESH(eight_schools), "n_steps"),
        ("AdjustedESH", ek.AdjustedESH(eight_schools), "n_steps"),
    ]
    if hasattr(ek, "TunedHMC"):
        kernels.append(("TunedHMC", ek.TunedHMC(eight_schools), "n_steps"))
    rows = [run(n, k, f, warmup, draws, verbose=not args.quick) for n, k, f in kernels]
    print(f"\nEight schools (non-centred), 4 chains, {warmup} warmup + {draws} draws each")
    print(f"{'sampler':<14} {'min ESS':>8} {'grads':>9} {'ESS/1k grads':>13} {'seconds':>8} {'diverging':>9} {'E[tau]':>7}")
    for name, ess, grads, seconds, div, tau in rows:
        print(f"{name:<14} {ess:8.0f} {grads:9d} {1000 * ess / grads:13.1f} {seconds:8.1f} {div:9d} {tau:7.2f}")
    print("min ESS: smallest bulk ESS over mu, tau and theta_tilde; grads: gradient evaluations\n"
          "of the kept draws, all 4 chains, warmup excluded; seconds: warmup + sampling + JIT")
    if args.quick:
        print(QUICK_NOTE)


if __name__ == "__main__":
    main()
