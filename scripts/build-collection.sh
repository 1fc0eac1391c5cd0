#!/usr/bin/env bash
# Build the collection tarball users install (`ansible-galaxy collection install` it, then
# `pip install -r <installed collection>/requirements.txt`). The core package (src/, the one source) is built into
# a wheel under wheels/ for the tarball to carry, and removed from the checkout once the tarball holds it.
#   scripts/build-collection.sh [OUTPUT_DIR]    # default build/collection; prints the tarball's path
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/collection}"
bin="${VENV:-.venv}/bin"
rm -rf wheels
trap 'rm -rf wheels' EXIT
"$bin/python" -m pip wheel --quiet --no-deps --wheel-dir wheels . >&2
mkdir -p "$out"
"$bin/ansible-galaxy" collection build --force --output-path "$out" . >&2
version=$("$bin/python" -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["version"])')
echo "$(cd "$out" && pwd)/nvidia_mig-rollout-$version.tar.gz"
