#!/usr/bin/env bash
# The benchmarks whose figures docs/benchmarks.md records; each starts its own simulated cluster and prints
# its figures (JSON last). Minutes each on 2 cores; run them on a quiet machine.
#   scripts/bench.sh                every benchmark
#   scripts/bench.sh rollout        one of them, by its name in bench/
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$(.venv/bin/simcluster bin-dir):$PATH"
if [ $# -eq 0 ]; then
  set -- $(for script in bench/*.py; do basename "$script" .py; done)
fi
for name in "$@"; do
  [ -f "bench/$name.py" ] || { echo "no benchmark bench/$name.py" >&2; exit 2; }
  echo "== bench/$name.py"
  python "bench/$name.py"
done
