#!/usr/bin/env bash
# ArviZ 1.x check: a Python 3.12 venv with arviz>=1 and NumPyro (no torch) runs
# tests/test_arviz.py (its Pyro parts skip themselves when torch is missing).
#
# ArviZ 1.x needs Python >= 3.12, the main suite runs on 3.11 (the local torch wheel is
# cp311), so this is a second, smaller run. The interpreter is, in order: $ESH_PYTHON312,
# pyenv's newest 3.12.x, `python3.12` on PATH, then the same for 3.13. The venv lives
# outside the repository ($ESH_ARVIZ1_VENV, default ~/.cache/esh_kernels/venv-arviz1) and
# is reused by the next run on the same machine (pip then only checks what is there).
#
# With no Python >= 3.12 found it prints why and exits 0 (the ArviZ 1.x check is
# skipped, the message says so); set ESH_ARVIZ1_REQUIRED=1 to make that an error.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

find_python() {
  local minor candidate version
  if [ -n "${ESH_PYTHON312:-}" ]; then
    echo "$ESH_PYTHON312"
    return 0
  fi
  for minor in 12 13; do
    if command -v pyenv >/dev/null 2>&1; then
      version=$(pyenv versions --bare 2>/dev/null | grep -E "^3\.${minor}(\.[0-9]+)?$" | sort -V | tail -n 1 || true)
      if [ -n "$version" ]; then
        candidate="$(pyenv root)/versions/${version}/bin/python"
        if [ -x "$candidate" ]; then
          echo "$candidate"
          return 0
        fi
      fi
    fi
    if command -v "python3.${minor}" >/dev/null 2>&1; then
      command -v "python3.${minor}"
      return 0
    fi
  done
  return 1
}

if ! PY=$(find_python); then
  msg="arviz1.sh: no Python >= 3.12 found (tried \$ESH_PYTHON312, pyenv 3.12.x/3.13.x, python3.12, python3.13); ArviZ 1.x needs Python >= 3.12."
  if [ "${ESH_ARVIZ1_REQUIRED:-0}" = "1" ]; then
    echo "$msg Failing because ESH_ARVIZ1_REQUIRED=1." >&2
    exit 1
  fi
  echo "$msg SKIPPING the ArviZ 1.x tests (install one, e.g. 'pyenv install 3.12', to run them)." >&2
  exit 0
fi
echo "arviz1.sh: using $PY ($("$PY" --version 2>&1))"

VENV="${ESH_ARVIZ1_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/esh_kernels/venv-arviz1}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q -e ".[numpyro]" "arviz>=1" pytest pytest-xdist pytest-timeout matplotlib
"$VENV/bin/python" -c 'import arviz, numpyro, jax, sys; print("arviz", arviz.__version__, "numpyro", numpyro.__version__, "jax", jax.__version__, "python", sys.version.split()[0])'

set +e
"$VENV/bin/python" -m pytest tests/test_arviz.py -q -p no:cacheprovider
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "arviz1.sh: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
