#!/usr/bin/env bash
# Print the path of the Python interpreter named $1 (python3, python3.13, /usr/bin/python3.12): from PATH, else
# from pyenv's installed versions (whose shims fail for a version not selected). Exit 1, saying so, if none.
set -euo pipefail
name="$1"
if path=$(command -v "$name" 2>/dev/null) && "$path" -c '' 2>/dev/null; then
  exec "$path" -c 'import sys; print(sys.executable)'
fi
version="${name##*/}"
version="${version#python}"
if [ -n "$version" ] && root=$(pyenv root 2>/dev/null); then
  for dir in $(ls -d "$root/versions/$version"* 2>/dev/null | sort -V -r); do
    if [ -x "$dir/bin/python$version" ]; then
      echo "$dir/bin/python$version"
      exit 0
    fi
  done
fi
echo "no $name interpreter on this machine (not on PATH, not among pyenv's versions)" >&2
exit 1
