#!/usr/bin/env bash
# The bare-metal part of make test (make hosts): tests/hosts and the Molecule scenario baremetal, side by side.
# Each brings up a host set of its own (own state dir, own hub network namespace, own persisted SSH connections);
# their runs mostly wait on SSH, Slurm and the hosts' reboots, so together they take little more than the longer.
# Molecule's output goes to a log, printed when it ends; the wall time of each is printed too.
#   scripts/test-hosts.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$(.venv/bin/simcluster bin-dir):$PATH"
log=$(mktemp "${TMPDIR:-/tmp}/molecule-baremetal.XXXXXX.log")
started=$SECONDS
(status=0; scripts/molecule.sh -s baremetal || status=$?; echo "molecule-seconds $((SECONDS - started))"; exit "$status") \
    >"$log" 2>&1 &
molecule_pid=$!
pytest_status=0
pytest tests/hosts "$@" || pytest_status=$?
pytest_s=$((SECONDS - started))
molecule_status=0
wait "$molecule_pid" || molecule_status=$?
echo "--- Molecule scenario baremetal (ran beside tests/hosts) ---"
grep -v '^molecule-seconds ' "$log" || true
molecule_s=$(sed -n 's/^molecule-seconds //p' "$log" 2>/dev/null || true)
echo "test-hosts: tests/hosts ${pytest_s} s (exit ${pytest_status}); Molecule baremetal ${molecule_s:-?} s (exit ${molecule_status})"
rm -f "$log"
[ "$pytest_status" -eq 0 ] && [ "$molecule_status" -eq 0 ]
