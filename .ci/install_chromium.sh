#!/usr/bin/env bash
# Install Debian's Chromium for the report's browser test, only when it is missing (idempotent).
# The Playwright test drives this system binary; `playwright install` would download a browser build,
# which CI cannot do, so the browser comes from apt.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# fonts-dejavu-core: readable text in screenshots; the minimal images ship no fonts at all.
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
