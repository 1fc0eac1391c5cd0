#!/usr/bin/env bash
# ansible-test sanity on the collection: module documentation against argument specs (validate-modules),
# ansible-doc on every plugin, meta/runtime.yml, action plugins, YAML. ansible-test runs only inside an
# ansible_collections/<namespace>/<name> tree outside any git repository (inside one it lists files with
# git), so the checkout's files are copied into a temporary one.
#   scripts/sanity.sh                 the tests below
#   scripts/sanity.sh --test pep8     any other ansible-test sanity arguments
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
root=$PWD
work=$(mktemp -d "${TMPDIR:-/tmp}/nvidia-mig-rollout-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/nvidia_mig/rollout"
mkdir -p "$dest"
# Tracked and new files; collections/ (the checkout's link to itself) and library (a link) are not content.
git ls-files -co --exclude-standard | grep -v -e '^collections/' -e '^library$' | while read -r file; do
  [ -e "$file" ] && printf '%s\0' "$file"
done | tar --null -cf - -T - | tar -xf - -C "$dest"

# ansible-test bootstraps pip in each test's virtualenv with a script it downloads from a host this machine
# cannot reach; this stand-in installs the same pip from PyPI, after the interpreter's own bundled pip.
bootstrap="$HOME/.ansible/test/cache/get_pip_24_2.py"
if [ ! -f "$bootstrap" ]; then
  mkdir -p "$(dirname "$bootstrap")"
  cat > "$bootstrap" <<'PY'
import ensurepip, os, subprocess, sys
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
ensurepip.bootstrap(upgrade=True)
os.environ.pop("PIP_CONFIG_FILE", None)  # ensurepip isolates itself from pip's config; the install must not
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
PY
fi

cd "$dest"
if [ $# -eq 0 ]; then
  set -- --test validate-modules --test ansible-doc --test runtime-metadata --test action-plugin-docs \
    --test yamllint --test shebang --test line-endings --test no-smart-quotes --test empty-init
fi
ansible-test sanity --venv --python 3.11 --color no "$@"
