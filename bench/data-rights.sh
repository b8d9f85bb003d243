#!/usr/bin/env bash
# Data-rights benchmarks (issue 15): one owner with DEVICES thermostats holding READINGS readings in
# all exports everything (the ZIP streamed and counted as the server sends it) and then deletes the
# account (after its grace period: devices released, readings deleted, WAL truncated, receipt
# signed). One process, no network: the work itself.
# Usage: bench/data-rights.sh [DEVICES] [READINGS]      (release build; a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${1:-10}
READINGS=${2:-1000000}

echo "== building release"
swift build -c release --product hearth --scratch-path .build-release 2>&1 | tail -1
BIN=$(swift build -c release --scratch-path .build-release --show-bin-path)/hearth
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"
"$BIN" bench data-rights --data "$work/data" --devices "$DEVICES" --readings "$READINGS"
echo "== ingest: readings sealed under per-owner keys beside the same appends in clear"
"$BIN" bench ingest --data "$work/ingest" --devices 1000 --owners 100 --readings 200000 --batch 256 --rounds 5
