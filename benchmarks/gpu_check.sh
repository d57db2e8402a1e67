#!/usr/bin/env bash
# The GPU run of issue 17, as sent to a lent accelerator (the device tool runs it in the
# repository root; its output goes to $OUT). Python packages the machine lacks travel as
# wheels in .whl/ (blackjax, pyro-ppl, arviz and their small dependencies), the shared data
# as .gpu_shared/ (ESH_KERNELS_SHARED). Each part has its own time limit, so that one slow
# part cannot take the others' results with it.
set -u
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  SITE=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    && export PYTHONPATH=$SITE:$PWD
fi
[ -d .gpu_shared ] && export ESH_KERNELS_SHARED=$PWD/.gpu_shared
nvidia-smi -L
python3 -c "import jax, numpyro, torch, pyro, blackjax, arviz; print('jax', jax.__version__, jax.devices(), 'numpyro', numpyro.__version__, 'torch', torch.__version__, torch.cuda.is_available(), 'pyro', pyro.__version__, 'blackjax', blackjax.__version__)"
run() { local limit=$1 name=$2; shift 2; echo "== $name: $*"; local t=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v -i "warn" | tee "$OUT/$name.txt"; echo "== $name: $((SECONDS - t)) s"; }
run ${LIMIT_LAPS_GAUSS:-120} laps_gauss python3 benchmarks/ensemble_vs_laps.py --chains 2048 --targets std_gauss ill_gauss
run ${LIMIT_LAPS_HIER:-150} laps_hier python3 benchmarks/ensemble_vs_laps.py --chains 1024 --targets eight_schools hier_500
run ${LIMIT_ENSEMBLE:-70} ensemble_f32 python3 benchmarks/gpu_check.py ensemble
run ${LIMIT_PYRO:-150} pyro_batched python3 benchmarks/gpu_check.py pyro --dtypes float32
