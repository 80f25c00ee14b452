#!/usr/bin/env bash
# Sets up policy-qa in .venv/ (idempotent; fast when already installed).
#   ./setup.sh         the product
#   ./setup.sh --dev   plus test tools and Debian's chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")"

dev=0
[ "${1:-}" = "--dev" ] && dev=1

if [ "$dev" = 1 ] && [ ! -x /usr/bin/chromium ]; then
    echo "==> installing chromium (apt)"
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv (Python 3.11)"
    python3.11 -m venv .venv
fi

# torch first and pinned: 2.13.0 is the CPU build on this machine's disk; letting a
# dependency resolve torch on its own downloads a multi-GB CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
if [ "$dev" = 1 ]; then target=".[dev]"; else target="."; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$target"
echo "==> ready: .venv/bin/policyqa"
