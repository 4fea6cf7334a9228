#!/usr/bin/env bash
# Install the load tools `make bench` uses when they are missing (Debian/Ubuntu, as root):
#   h2load          (nghttp2-client): raw HTTP/2 gRPC load for the echo-floor scenario
#   redis-benchmark (redis-tools):    EVALSHA baseline for the limiter scenario
# Missing tools are not fatal for the benchmark itself: the scenarios that need them say so.
set -euo pipefail

missing=()
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_bench_tools: missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_bench_tools: no apt-get here; install ${missing[*]} (h2load, redis-benchmark) yourself" >&2
    exit 0
fi
echo "ensure_bench_tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
