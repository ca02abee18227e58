#!/usr/bin/env bash
# One entry point for a fresh clone: sets up .venv on first use, then runs the demo or the tests.
#
#   bash dev.sh demo [DEMO_DIR]   synthetic faces -> prepare -> split -> a CVAE run -> a small sweep
#   bash dev.sh test [PYTEST ARGS] the test suite
#   bash dev.sh setup             only create/refresh .venv
set -euo pipefail
cd "$(dirname "$0")"

VENV="${CELEB_VENV:-.venv}"

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "dev.sh: Python 3.11 or newer is needed (python3.11 / python3 not found or too old)" >&2
  exit 1
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$(find_python)" -m venv "$VENV"
  fi
  if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[test]'
    touch "$VENV/.installed"
  fi
}

demo() {
  local out="${1:-demo}"
  local n="${CELEB_DEMO_N:-3000}"
  "$VENV/bin/celeb" synth "$out/celeba" --n "$n" --seed 0
  "$VENV/bin/celeb" prepare "$out/celeba" --out "$out/data"
  "$VENV/bin/celeb" split "$out/data" --strategy balanced --seed 0
  "$VENV/bin/celeb" train cvae configs/cvae_debug.yaml --set "data.data_dir=$out/data" --run-dir "$out/runs/cvae"
  local resume=()
  [ -d "$out/runs/sweeps/smoke" ] && resume=(--resume)  # a rerun of the demo continues its sweep
  "$VENV/bin/celeb" sweep sweeps/smoke.yaml "${resume[@]}" \
    --set "data_dir=$out/data" --set "storage_path=$out/runs/sweeps"
  echo
  echo "Demo done. Look at:"
  echo "  $out/celeba/img_align_celeba/         the synthetic faces (CelebA layout)"
  echo "  $out/data/celeba.parquet              the typed annotation table"
  echo "  $out/data/splits/balanced/report.md   the split's balance report (+ prevalence.png, correlation.png)"
  echo "  $out/data/cache/                      the decode-once image cache"
  echo "  $out/runs/cvae/                       a CVAE run: reconstructions.png, metrics.csv, checkpoints/"
  echo "  $out/runs/sweeps/smoke/ranking.csv    the sweep's trials, ranked, with their checkpoints"
}

command="${1:-}"
shift || true
case "$command" in
  setup) setup ;;
  demo) setup; demo "$@" ;;
  test) setup; "$VENV/bin/python" -m pytest "$@" ;;
  *) echo "usage: bash dev.sh setup|demo [DIR]|test [PYTEST ARGS]" >&2; exit 2 ;;
esac
