#!/usr/bin/env bash
# Install what the browser test needs: Debian's chromium + chromium-driver (apt) and the
# playwright Python package (pip, into the project venv). Playwright drives the system
# chromium through executable_path, so its own browser download is skipped.
# Idempotent: does nothing that is already in place. Run from the repository root.
set -euo pipefail

VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$PY" ]; then
    echo "setup_chromium: no virtual environment at $VENV (run 'make setup' first)" >&2
    exit 1
fi

if [ ! -x "$CHROMIUM" ] || ! command -v chromedriver >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    echo "setup_chromium: installing chromium and chromium-driver with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver fonts-dejavu-core >/dev/null
fi

if ! "$PY" -c "import playwright" >/dev/null 2>&1; then
    echo "setup_chromium: installing the playwright package (no browser download)"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$PY" -m pip install --quiet playwright
fi

"$CHROMIUM" --version
"$PY" -c "import playwright; from importlib.metadata import version; print('playwright', version('playwright'))"
