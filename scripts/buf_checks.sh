#!/usr/bin/env bash
# Contract checks for protos/ with the pinned buf from package.json (@bufbuild/buf):
#   1. buf format  (the files are formatted exactly as buf formats them)
#   2. buf lint    (STANDARD + COMMENTS, see buf.yaml)
#   3. buf breaking --against contract-baseline/openbank.binpb (FILE rules)
# Exits non-zero when any check fails (all checks run, so every failure is shown).
#
# Usage:
#   bash scripts/buf_checks.sh                    # run the checks
#   bash scripts/buf_checks.sh --update-baseline  # lint + format, then rewrite the baseline image
#
# Refresh the baseline only when a release of the contract is cut (or a breaking
# change was explicitly agreed): it is what `buf breaking` compares against.
# Requires `npm ci` (or `npm install`) first; no network is used by buf itself.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

BASELINE="contract-baseline/openbank.binpb"

buf() {
  npx --no-install buf "$@"
}

if ! buf --version >/dev/null 2>&1; then
  echo "buf_checks: buf not installed; run 'npm ci' (pinned @bufbuild/buf in package.json)" >&2
  exit 2
fi

update_baseline=0
case "${1:-}" in
  "") ;;
  --update-baseline) update_baseline=1 ;;
  -h | --help)
    sed -n '2,15p' "$0"
    exit 0
    ;;
  *)
    echo "buf_checks: unknown argument: $1 (use --update-baseline)" >&2
    exit 2
    ;;
esac

failed=0
run() {
  local label="$1"
  shift
  if "$@"; then
    echo "buf_checks: ${label}: ok"
  else
    echo "buf_checks: ${label}: FAILED" >&2
    failed=1
  fi
}

echo "buf_checks: buf $(buf --version 2>/dev/null)"
run "format" buf format --diff --exit-code
run "lint" buf lint

if [[ "$update_baseline" == 1 ]]; then
  if [[ "$failed" != 0 ]]; then
    echo "buf_checks: not updating the baseline: fix the failures above first" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$BASELINE")"
  run "build baseline" buf build --exclude-source-info -o "$BASELINE"
  [[ "$failed" == 0 ]] && echo "buf_checks: baseline written to $BASELINE"
  exit "$failed"
fi

if [[ -f "$BASELINE" ]]; then
  run "breaking (FILE) against $BASELINE" buf breaking --against "$BASELINE"
else
  echo "buf_checks: breaking: baseline $BASELINE missing (create it with --update-baseline)" >&2
  failed=1
fi

if [[ "$failed" != 0 ]]; then
  echo "buf_checks: FAILED" >&2
fi
exit "$failed"
