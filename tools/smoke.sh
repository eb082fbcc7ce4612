#!/usr/bin/env bash
# Smoke run on each given Python (default: the oldest and newest supported, 3.11 and 3.13), as a student without
# this repository's environment would meet the lab:
#   1. the README's entry point on a fresh copy of the repository (git's files only, no .venv, no default):
#      `python bootstrap.py lab notebooks/00_data.ipynb` creates .venv, installs the pins, builds the default
#      (BADNET_LAB_IDENTITIES=10 keeps it small) and executes the notebook; `python bootstrap.py test -- ...`
#      runs a part of the suite in that environment;
#   2. a fresh virtual environment with only a Jupyter kernel and nbclient (a Jupyter the student has);
#      00_data.ipynb copied into an empty folder and executed: its setup cell pip-installs this folder
#      (not editable; BADNET_LAB_SOURCE stands in for the git URL) and the default is built on first use
#      in ~/badnet-lab (HOME is a fresh folder);
#   3. the command line of the installed lab: evaluate that default, make-default a tiny one, a bad input.
# Then, once, on Python 3.13 if found (SMOKE_COLAB=0 skips it), Colab as it is: a fresh environment with Colab's
# versions (COLAB_PACKAGES below: IPython 7.34, whose autoreload needs the `imp` module Python 3.12 removed, and
# TensorFlow of the previous minor release), the lab installed there half-way (pip --no-deps, as an interrupted
# setup cell leaves it), then 00_data.ipynb and 01_badnet.ipynb in an empty folder: the setup cell must complete
# the install without the pins (Colab has no constraints file) and every cell must pass; each cell's outcome is
# printed.
# Installs in 1 and 2 use the exact pins (PIP_CONSTRAINT=requirements.txt) and pip's cache. Nothing outside
# build/smoke/.
# Usage: tools/smoke.sh [3.11 3.13 ...]    (make smoke; SMOKE_PYTHONS="3.12" make smoke); tools/smoke.sh colab
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
versions=("$@")
only_colab=0
if [ "${versions[*]:-}" = colab ]; then versions=(); only_colab=1; fi  # tools/smoke.sh colab: the Colab run alone
[ ${#versions[@]} -gt 0 ] || [ $only_colab = 1 ] || versions=(3.11 3.13)
noise='absl::InitializeLog|oneDNN custom operations|^[IWEF][0-9]{4} [0-9:.]+ |grappler|Kernel is running over TCP'

find_python() {  # python3.X on PATH if it runs (pyenv shims of inactive versions don't), else pyenv's install
  local v=$1 candidate
  for candidate in "python$v" "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/"$v"*/bin/python"$v"; do
    if "$candidate" -c 'import sys' >/dev/null 2>&1; then command -v "$candidate"; return 0; fi
  done
  return 1
}

ran=()
for v in "${versions[@]+"${versions[@]}"}"; do
  if ! py=$(find_python "$v"); then echo "smoke: Python $v not found; skipped"; continue; fi
  work=$ROOT/build/smoke/py$v
  rm -rf "$work" && mkdir -p "$work/home" "$work/notebook"
  echo "== smoke: $($py --version) ($py)"
  start=$SECONDS

  repo=$work/repo
  mkdir -p "$repo"
  # The repository as a clone has it: the committed tree plus uncommitted edits of tracked files (git stash
  # create makes that commit without touching the working tree; it prints nothing when there are none).
  tree=$(git stash create)
  git archive --format=tar "${tree:-HEAD}" | tar -x -C "$repo"
  ( cd "$repo" && env -u PYTHONPATH -u VIRTUAL_ENV -u BADNET_LAB_ROOT BADNET_LAB_IDENTITIES=10 \
      "$py" bootstrap.py lab notebooks/00_data.ipynb ) >"$work/bootstrap.txt" 2>&1 \
    || { echo "smoke: bootstrap.py lab failed:"; tail -30 "$work/bootstrap.txt"; exit 1; }
  test -f "$repo/models/bd_net.h5" && test -f "$repo/build/notebooks/00_data.html" \
    || { echo "smoke: bootstrap.py lab left no default or no executed notebook"; exit 1; }
  ( cd "$repo" && env -u PYTHONPATH -u VIRTUAL_ENV "$py" bootstrap.py test --workers 0 -- -q -p no:cacheprovider \
      tests/test_platforms.py tests/test_setup.py ) >"$work/bootstrap-test.txt" 2>&1 \
    || { echo "smoke: bootstrap.py test failed:"; tail -30 "$work/bootstrap-test.txt"; exit 1; }
  echo "   python bootstrap.py lab notebooks/00_data.ipynb on a fresh copy (venv, pins, default, notebook):" \
    "$((SECONDS - start)) s; bootstrap.py test: $(tail -1 "$work/bootstrap-test.txt")"
  rm -rf "$repo/.venv"  # a few GB; its pip downloads stay in pip's cache for step 2

  start=$SECONDS
  "$py" -m venv "$work/venv"
  bin=$work/venv/bin
  export PIP_CONSTRAINT=$ROOT/requirements.txt PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip}
  "$bin/python" -m pip install --quiet --upgrade pip
  "$bin/python" -m pip install --quiet nbclient ipykernel
  echo "   fresh venv with a Jupyter kernel: $((SECONDS - start)) s"

  cp notebooks/00_data.ipynb "$work/notebook/"
  t=$SECONDS
  env -u PYTHONPATH -u TF_CPP_MIN_LOG_LEVEL -u BADNET_LAB_ROOT PYDEVD_DISABLE_FILE_VALIDATION=1 HOME="$work/home" \
    BADNET_LAB_SOURCE="$ROOT" \
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
[ ${#ran[@]} -gt 0 ] || [ $only_colab = 1 ] || { echo "smoke: none of the Pythons ${versions[*]} found"; exit 1; }

# Colab's own versions of what it preinstalls and the lab uses (its package list of August 2026).
COLAB_PACKAGES=(ipython==7.34.0 ipykernel==6.17.1 tensorflow==2.20.0 keras==3.13.2 numpy==2.1.3 protobuf==5.29.6
                h5py==3.16.0 nbclient)
if [ "${SMOKE_COLAB:-1}" != 0 ]; then
  if py=$(find_python 3.13); then
    work=$ROOT/build/smoke/colab
    rm -rf "$work" && mkdir -p "$work/home" "$work/notebook"
    echo "== smoke: Colab as it is ($($py --version), ${COLAB_PACKAGES[*]})"
    start=$SECONDS
    "$py" -m venv "$work/venv"
    bin=$work/venv/bin
    unset PIP_CONSTRAINT
    "$bin/python" -m pip install --quiet --upgrade pip
    "$bin/python" -m pip install --quiet "${COLAB_PACKAGES[@]}" >"$work/pip.txt" 2>&1 \
      || { echo "smoke: Colab's packages did not install:"; tail -5 "$work/pip.txt"; exit 1; }
    "$bin/python" -m pip install --quiet --no-deps "$ROOT" >>"$work/pip.txt" 2>&1  # an interrupted setup cell
    echo "   Colab-like environment, the lab installed without its requirements: $((SECONDS - start)) s"
    for notebook in 00_data 01_badnet; do
      cp "notebooks/$notebook.ipynb" "$work/notebook/"
      t=$SECONDS
      env -u PYTHONPATH -u TF_CPP_MIN_LOG_LEVEL -u BADNET_LAB_ROOT PYDEVD_DISABLE_FILE_VALIDATION=1 HOME="$work/home" \
        BADNET_LAB_SOURCE="$ROOT" \
        BADNET_LAB_IDENTITIES=10 "$bin/python" tools/run_notebook_elsewhere.py "$work/notebook/$notebook.ipynb" \
        "$work/notebook/$notebook.executed.ipynb"
      echo "   $notebook.ipynb as on Colab: $((SECONDS - t)) s"
    done
    echo "   Colab-like run passed in $((SECONDS - start)) s"
  else
    echo "smoke: Python 3.13 not found; the Colab-like run skipped"
  fi
fi
echo "smoke passed on Python ${ran[*]+"${ran[*]}"}"
