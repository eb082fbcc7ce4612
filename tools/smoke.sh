#!/usr/bin/env bash
# Smoke run on each given Python (default: the oldest and newest supported, 3.11 and 3.13), as a student without
# this repository's environment would meet the lab (Colab, their own Jupyter):
#   1. a fresh virtual environment with only a Jupyter kernel and nbclient (what Colab provides);
#   2. 00_data.ipynb copied into an empty folder and executed: its setup cell pip-installs this folder
#      (not editable; BADNET_LAB_SOURCE stands in for the git URL) and the default is built on first use
#      in ~/badnet-lab (HOME is a fresh folder; BADNET_LAB_IDENTITIES=10 keeps it small);
#   3. the command line of the installed lab: evaluate that default, make-default a tiny one, a bad input.
# Installs use the exact pins (PIP_CONSTRAINT=requirements.txt) and pip's cache. Nothing outside build/smoke/.
# Usage: tools/smoke.sh [3.11 3.13 ...]    (make smoke; SMOKE_PYTHONS="3.12" make smoke)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.11 3.13)
noise='absl::InitializeLog|oneDNN custom operations|^[IWEF][0-9]{4} [0-9:.]+ |grappler|Kernel is running over TCP'

find_python() {  # python3.X on PATH if it runs (pyenv shims of inactive versions don't), else pyenv's install
  local v=$1 candidate
  for candidate in "python$v" "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/"$v"*/bin/python"$v"; do
    if "$candidate" -c 'import sys' >/dev/null 2>&1; then command -v "$candidate"; return 0; fi
  done
  return 1
}

ran=()
for v in "${versions[@]}"; do
  if ! py=$(find_python "$v"); then echo "smoke: Python $v not found; skipped"; continue; fi
  work=$ROOT/build/smoke/py$v
  rm -rf "$work" && mkdir -p "$work/home" "$work/notebook"
  echo "== smoke: $($py --version) ($py)"
  start=$SECONDS
  "$py" -m venv "$work/venv"
  bin=$work/venv/bin
  export PIP_CONSTRAINT=$ROOT/requirements.txt PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip}
  "$bin/python" -m pip install --quiet --upgrade pip
  "$bin/python" -m pip install --quiet nbclient ipykernel
  echo "   fresh venv with a Jupyter kernel: $((SECONDS - start)) s"

  cp notebooks/00_data.ipynb "$work/notebook/"
  t=$SECONDS
  env -u PYTHONPATH -u TF_CPP_MIN_LOG_LEVEL -u BADNET_LAB_ROOT HOME="$work/home" BADNET_LAB_SOURCE="$ROOT" \
    BADNET_LAB_IDENTITIES=10 "$bin/python" tools/run_notebook_elsewhere.py "$work/notebook/00_data.ipynb" \
    "$work/notebook/00_data.executed.ipynb"
  test -f "$work/home/badnet-lab/models/bd_net.h5" || { echo "smoke: no default in ~/badnet-lab"; exit 1; }
  echo "   notebook in an empty folder (install + default build + run): $((SECONDS - t)) s"

  t=$SECONDS
  lab=$work/home/badnet-lab
  ( cd "$work" && env -u PYTHONPATH HOME="$work/home" "$bin/badnet-lab" evaluate --model "$lab/models/bd_net.h5" \
      --clean "$lab/data/cl/test.h5" --poisoned "$lab/data/bd/bd_test.h5" ) 2>"$work/stderr.txt"
  ( cd "$work" && env -u PYTHONPATH HOME="$work/home" "$bin/python" -m lab make-default --out "$work/tiny" \
      --identities 4 --quiet ) 2>>"$work/stderr.txt"
  set +e
  ( cd "$work" && env -u PYTHONPATH "$bin/python" -m lab evaluate --model "$work/tiny/models/bd_net.h5" \
      --clean "$work/tiny/models/bd_net.h5" ) 2>"$work/bad.txt"
  status=$?
  set -e
  [ "$status" = 2 ] && [ "$(wc -l <"$work/bad.txt")" = 1 ] && grep -q '^error: ' "$work/bad.txt" \
    || { echo "smoke: bad input gave status $status and:"; cat "$work/bad.txt"; exit 1; }
  if grep -E "$noise" "$work/stderr.txt" "$work/bad.txt"; then echo "smoke: log noise in the CLI's stderr"; exit 1; fi
  echo "   command line (evaluate, make-default --identities 4, a bad input): $((SECONDS - t)) s"
  echo "   Python $v: smoke passed in $((SECONDS - start)) s"
  ran+=("$v")
done
[ ${#ran[@]} -gt 0 ] || { echo "smoke: none of the Pythons ${versions[*]} found"; exit 1; }
echo "smoke passed on Python ${ran[*]}"
