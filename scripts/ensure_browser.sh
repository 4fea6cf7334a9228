#!/usr/bin/env bash
# Make sure Debian's headless Chromium and its WebDriver exist for the browser tests
# (tests/browser). Installs chromium + chromium-driver from Debian's packages when missing
# (as root), like scripts/ensure_test_servers.sh does for Redis and PostgreSQL. Browsers are
# never downloaded from anywhere else.
set -euo pipefail

have_browser() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if have_browser; then
  exit 0
fi
echo "browser tests: chromium or chromedriver missing; installing from Debian packages"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "not root and no sudo: install chromium and chromium-driver and run again" >&2; exit 1; fi
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
have_browser
