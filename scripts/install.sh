#!/usr/bin/env bash
# One-command install: a virtual environment in .venv with atcrl and every extra.
# On a CPU-only machine the constraints file pins the CPU torch wheel; set
# ATCRL_CONSTRAINTS="" to let pip choose torch (e.g. a CUDA build) yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CONSTRAINTS=${ATCRL_CONSTRAINTS-constraints/cpu.txt}
EXTRAS=${ATCRL_EXTRAS:-all,dev}

# Headless rendering for DeepMind Control / MiniWorld needs an EGL or OSMesa library.
if ! ldconfig -p 2>/dev/null | grep -qE 'libEGL\.so\.1|libOSMesa\.so'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[install] no EGL/OSMesa found: installing libegl1 libgl1-mesa-dri libosmesa6"
    apt-get update -qq && apt-get install -y -qq libegl1 libgl1-mesa-dri libosmesa6 >/dev/null
  else
    echo "[install] warning: no EGL or OSMesa library; DMC rendering will fail until one is installed" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
args=(-e ".[${EXTRAS}]")
[ -n "$CONSTRAINTS" ] && args+=(-c "$CONSTRAINTS")
"$VENV/bin/python" -m pip install -q "${args[@]}"
"$VENV/bin/python" -c "import torch, atcrl; print(f'[install] atcrl {atcrl.__version__} with torch {torch.__version__} in $VENV')"
