#!/usr/bin/env bash
# Static checks: Python (ruff), YAML (yamllint), playbooks and roles (ansible-lint, production profile),
# and that ansible-doc renders every module.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
yamllint --strict .
ansible-lint --offline -q
for module in library/*.py; do
  name=$(basename "$module" .py)
  ansible-doc -M library "$name" > /dev/null || { echo "ansible-doc cannot render $name"; exit 1; }
done
echo "lint: ok"
