#!/usr/bin/env bash
# Install digitlab into ./.venv (idempotent). With --test: also the test extras (pytest, ruff, pre-commit,
# Playwright, JAX), and Debian's Chromium for the browser tests when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
extras="all"
if [ "${1:-}" = "--test" ]; then
  extras="all,test"
  if [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium for the browser tests" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi
.venv/bin/python -m pip install -q -e ".[$extras]"
