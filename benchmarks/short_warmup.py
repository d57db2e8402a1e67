#!/usr/bin/env python
"""Short warmups: each kernel's draws after ``num_warmup`` = 10-60 on a 2-D Gaussian with
sds 1 and 3 (NumPyro, one chain, float32 as NumPyro's default, 300 draws per seed), the
check behind ``core.warmup.MIN_ITERATIONS_AFTER_RESTART`` (``docs/benchmarks.md``, "Short
warmups"). Prints the sample sd of both coordinates per seed and the mean acceptance::

    python benchmarks/short_warmup.py
"""

import argparse
import warnings

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import random
from numpyro.infer import MCMC

import esh_kernels.numpyro as ek


def model():
    numpyro.sample("x", dist.Normal(jnp.zeros(2), jnp.array([1.0, 3.0])))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernels", nargs="+", default=["AdjustedESH", "ESH", "TunedHMC"])
    p.add_argument("--warmups", nargs="+", type=int, default=[10, 20, 30, 40, 60])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    args = p.parse_args()
    warnings.simplefilter("ignore")  # the self-check's warnings; the sds say what happened
    for name in args.kernels:
        for num_warmup in args.warmups:
            sds, accept = [], []
            for seed in args.seeds:
                mcmc = MCMC(getattr(ek, name)(model), num_warmup=num_warmup, num_samples=300,
                            progress_bar=False)
                fields = ("accept_prob",) if name != "ESH" else ()
                mcmc.run(random.PRNGKey(seed), extra_fields=fields)
                sds.append(np.round(np.asarray(mcmc.get_samples()["x"], dtype=np.float64).std(0), 2).tolist())
                if fields:
                    accept.append(float(np.mean(mcmc.get_extra_fields()["accept_prob"])))
            acc = f", mean acceptance {np.mean(accept):.2f}" if accept else ""
            print(f"{name} num_warmup={num_warmup}: sd per seed {sds}{acc}", flush=True)


if __name__ == "__main__":
    main()
