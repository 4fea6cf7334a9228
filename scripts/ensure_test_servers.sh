#!/usr/bin/env bash
# Make sure redis-server and PostgreSQL's initdb/pg_ctl exist for the test fixtures.
# Installs them from Debian's packages when missing (as root), so nobody does it by hand.
set -euo pipefail

have_pg() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
have_redis() { command -v redis-server >/dev/null 2>&1; }

if have_pg && have_redis; then
  exit 0
fi
missing=()
have_redis || missing+=(redis-server)
have_pg || missing+=(postgresql)
echo "test servers missing: ${missing[*]}; installing from Debian packages"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "not root and no sudo: install ${missing[*]} and run again" >&2; exit 1; fi
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged servers; the tests start their own, so stop these.
$SUDO service redis-server stop >/dev/null 2>&1 || true
