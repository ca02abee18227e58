#!/usr/bin/env bash
# One entry point for a fresh clone: sets up .venv on first use, then runs the demo or the tests.
#
#   bash dev.sh demo [DEMO_DIR]   synthetic faces -> prepare -> split -> a CVAE run -> an ASHA+Optuna sweep
#                                 with offline W&B -> review page and exported best checkpoint
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
  local started=$SECONDS
  # 3 images per identity (CelebA has ~20): enough people in each split for identity-level attributes.
  "$VENV/bin/celeb" synth "$out/celeba" --n "$n" --identities $((n / 3)) --seed 0
  "$VENV/bin/celeb" prepare "$out/celeba" --out "$out/data"
  "$VENV/bin/celeb" split "$out/data" --strategy balanced --seed 0
  "$VENV/bin/celeb" train cvae configs/cvae_debug.yaml --set "data.data_dir=$out/data" --run-dir "$out/runs/cvae"
  local resume=()
  [ -d "$out/runs/sweeps/demo" ] && resume=(--resume)  # a rerun of the demo continues its sweep
  "$VENV/bin/celeb" sweep sweeps/demo.yaml "${resume[@]}" \
    --set "data_dir=$out/data" --set "storage_path=$out/runs/sweeps"
  "$VENV/bin/celeb" review "$out/runs/sweeps/demo" --metric val/mig_fixed --top 3 --export "$out/best.pt"
  "$VENV/bin/celeb" traverse "$out/best.pt" --out "$out/best_traverse"
  echo
  echo "Demo done in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s. Look at:"
  echo "  $out/runs/sweeps/demo/review/review.html   the review: top trials' traversals, labelled dims, leaderboard"
  echo "  $out/best.pt, $out/best_traverse/          the exported best checkpoint and its panels"
  echo "  $out/runs/sweeps/demo/ranking.csv          the sweep's trials, ranked, with their checkpoints"
  echo "  $out/runs/sweeps/demo/trial_*/wandb/       each trial's W&B record (offline): celeb wandb $out/runs/sweeps/demo --upload"
  echo "  $out/runs/cvae/                            a local debug run: traversal.png, reconstructions.png, metrics.csv"
  echo "  $out/data/splits/balanced/report.md        the split's balance report (+ prevalence.png, correlation.png)"
  echo "  $out/celeba/img_align_celeba/              the synthetic faces (CelebA layout)"
}

command="${1:-}"
shift || true
case "$command" in
  setup) setup ;;
  demo) setup; demo "$@" ;;
  test) setup; "$VENV/bin/python" -m pytest "$@" ;;
  *) echo "usage: bash dev.sh setup|demo [DIR]|test [PYTEST ARGS]" >&2; exit 2 ;;
esac
