#!/usr/bin/env bash
# Static checks: Python (ruff), YAML (yamllint), playbooks and roles (ansible-lint, production profile), and
# ansible-test sanity on the collection (module docs against argument specs, ansible-doc on every plugin,
# meta/runtime.yml, YAML in plugin docs).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
yamllint --strict .
ansible-lint --offline -q
scripts/sanity.sh
echo "lint: ok"
