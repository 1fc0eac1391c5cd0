#!/usr/bin/env bash
# Molecule scenarios (default driver, localhost, each on its own simulated cluster).
#   scripts/molecule.sh              every scenario but baremetal (make molecule)
#   scripts/molecule.sh -s rolling   one (-s baremetal: the bare-metal test hosts; make hosts runs it beside
#                                    tests/hosts, scripts/test-hosts.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$(.venv/bin/simcluster bin-dir):$PATH"
if [ $# -eq 0 ]; then
  for config in molecule/*/molecule.yml; do
    scenario=$(basename "$(dirname "$config")")
    [ "$scenario" = baremetal ] && continue
    molecule test -s "$scenario"
  done
  exit 0
fi
exec molecule test "$@"
