#!/usr/bin/env bash
# Molecule scenarios (default driver, localhost, each on its own simulated cluster).
#   scripts/molecule.sh              every scenario
#   scripts/molecule.sh -s rolling   one
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$(.venv/bin/simcluster bin-dir):$PATH"
if [ $# -eq 0 ]; then
  exec molecule test --all
fi
exec molecule test "$@"
