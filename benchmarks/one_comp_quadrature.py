#!/usr/bin/env python
"""Check of the ``one_comp_mm_elim_abs`` reference draws by quadrature (independent of any
sampler): the posterior of ``K_m`` has a heavy right tail, which NUTS and our kernels
under-sample in 4 x 1000 draws (``docs/benchmarks.md``, notes on ``one_comp``).

The model's log density is evaluated on a grid in the unconstrained space (log ``k_a``,
log ``K_m``, log ``V_m``: 36 x 120 x 120 points, with the Jacobians), the ODE solved by the
same diffrax set-up as ``pdb_models/one_comp_mm_elim_abs.py`` at tighter tolerances (1e-7),
and ``sigma`` integrated out on a 60-point log grid. Grid limits: ``k_a`` in [0.45, 1.4],
``K_m`` in [1e-3, 3e4], ``V_m`` in [1e-2, 3e3], ``sigma`` in [0.005, 0.2] (the reference's
``sigma`` reaches 0.27 and its ``K_m`` goes down to 1e-4: both cut a little mass at the
edges). Grid points where the solution is not positive get zero weight. About 11 minutes
on one CPU core.

    python benchmarks/one_comp_quadrature.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax; jax.config.update("jax_enable_x64", True)
import numpy as np, jax.numpy as jnp, diffrax
import posteriordb as pdb
from scipy import stats
name = "one_comp_mm_elim_abs-one_comp_mm_elim_abs"
data = pdb.load_data(name)
D, V = float(data['D']), float(data['V']); ts = jnp.asarray(data['times'], float); Ch = np.asarray(data['C_hat'], float)
ref = np.load(os.path.join(pdb.posterior_dir(name), 'reference_draws.npz'))
for k in ref.files: x=np.asarray(ref[k]); print(k, x.min(), x.max())
def dC(t, C, args):
    ka, Km, Vm = args
    return jnp.where(t > 0, jnp.exp(-ka*t)*D*ka/V, 0.0) - (Vm/V)*C/(Km+C)
def solve(ka, Km, Vm):
    sol = diffrax.diffeqsolve(diffrax.ODETerm(dC), diffrax.Dopri5(), t0=0.0, t1=ts[-1], dt0=None, y0=jnp.zeros(1),
        args=(ka, Km, Vm), saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=1e-7),
        max_steps=8192, throw=False)
    return sol.ys[:, 0]
la = np.linspace(np.log(0.45), np.log(1.4), 36)
lk = np.linspace(np.log(1e-3), np.log(3e4), 120)
lv = np.linspace(np.log(1e-2), np.log(3e3), 120)
ls = np.linspace(np.log(0.005), np.log(0.2), 60)
A, K, Vm = np.meshgrid(la, lk, lv, indexing='ij')
f = jax.jit(jax.vmap(solve))
C = np.concatenate([np.asarray(f(jnp.exp(a), jnp.exp(k), jnp.exp(v))) for a, k, v in zip(np.array_split(A.ravel(), 40), np.array_split(K.ravel(), 40), np.array_split(Vm.ravel(), 40))])
print('nonfinite', (~np.isfinite(C)).sum())
r = np.log(Ch)[None, :] - np.log(C)               # (G, 20) residuals
ssr = np.sum(r**2, 1); n = 20
s = np.exp(ls)[None, :]
# log lik over sigma grid: sum lognormal logpdf = -n log s - ssr/(2 s^2) - sum log Ch - n/2 log 2pi ; + halfcauchy(s) + log s (jacobian of log grid)
ll = -n*np.log(s) - ssr[:, None]/(2*s**2) + stats.halfcauchy.logpdf(s) + np.log(s)
ll = np.where(np.isfinite(ll), ll, -np.inf)
m = ll.max(1, keepdims=True); lsig = (m + np.log(np.exp(ll - m).sum(1, keepdims=True)))[:, 0]
lp = lsig + sum(stats.halfcauchy.logpdf(np.exp(g)) + g for g in (A.ravel(), K.ravel(), Vm.ravel()))
lp = np.where(np.isfinite(lp), lp, -np.inf)
w = np.exp(lp - lp.max()); w /= w.sum()
Kv = np.exp(K.ravel()); Vv = np.exp(Vm.ravel())
print('E[K_m] %.3f sd %.3f  P(K_m>20) %.4f P(K_m>84) %.5f  E[V_m] %.3f sd %.3f' % ((w*Kv).sum(), np.sqrt((w*Kv**2).sum()-(w*Kv).sum()**2), w[Kv>20].sum(), w[Kv>84].sum(), (w*Vv).sum(), np.sqrt((w*Vv**2).sum()-(w*Vv).sum()**2)))
# marginal mass at the edges of the grid
wk = w.reshape(A.shape).sum((0, 2)); print('mass at top K edge bins', wk[-5:])
ref_K = np.asarray(ref['K_m']).ravel(); print('reference P(K_m>20) %.4f P>84 %.5f' % ((ref_K>20).mean(), (ref_K>84).mean()))
