#!/usr/bin/env bash
# The test suite on any machine, fresh or not: installs what is missing (scripts/install.sh), then runs every
# test on two workers. Extra arguments go to the test runner (e.g. -k sac, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q -n 2 "$@"
