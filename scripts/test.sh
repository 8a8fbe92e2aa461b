#!/usr/bin/env bash
# Install voxbus with its test and coqui extras into .venv (created if missing), then run the
# whole test suite. Works from a fresh clone: the only prerequisites are python3 (>= 3.11) and
# a C/C++ toolchain with cmake (llama-cpp-python compiles once; pip caches the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --progress-bar off -e '.[test,coqui]'
# nats.js for the test that a voxbus credential works from another language (needs node and npm)
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix tests/js --no-audit --no-fund --silent
fi
# Debian's chromium and chromedriver for the dashboard's browser test (as root, where apt is);
# elsewhere that test skips and says so, except under CI, where it fails.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium and chromium-driver (apt) for tests/test_dashboard.py"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  else
    echo "== no chromium/chromedriver: tests/test_dashboard.py will skip (apt-get install chromium chromium-driver)"
  fi
fi
exec .venv/bin/python -m pytest "$@"
