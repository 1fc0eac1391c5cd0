#!/usr/bin/env bash
# Headless Chromium for the test that renders the rollout's timeline page (tests/integration/test_rollout_schedule.py):
# Debian's chromium package, installed when missing. Producing the page needs no browser; only viewing it does.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: chromium is missing and this is not a Debian-like system: install Chromium yourself" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "install-chromium: installing Debian's chromium (for the timeline page's rendering test)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
