#!/usr/bin/env bash
# Every Molecule scenario (default driver, localhost, each on its own simulated cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$(.venv/bin/simcluster bin-dir):$PATH"
exec molecule test --all "$@"
