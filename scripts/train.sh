#!/usr/bin/env bash
# The main job on any machine, fresh or not: installs what is missing (scripts/install.sh), then runs
# `atcrl train` (decoupled ATC-SAC on dmc:cartpole-swingup, the paper's settings). Extra arguments go to it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/atcrl train "$@"
