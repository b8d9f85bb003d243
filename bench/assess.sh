#!/usr/bin/env bash
# Assessment benchmark (issue 19): `hearth assess` against a served deployment of DEVICES devices
# over MODELS models (target: under 10 s for 100,000 devices and 10 models). The fleet is written
# straight to the store (placeholder certificates, each device reporting a firmware version); the
# server runs as in production and the assessment runs every live check against it.
# Usage: bench/assess.sh [DEVICES] [MODELS]      (release build; a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${1:-100000}
MODELS=${2:-10}

echo "== building release"
swift build -c release --product hearth --scratch-path .build-release 2>&1 | tail -1
BIN=$(swift build -c release --scratch-path .build-release --show-bin-path)/hearth
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"
"$BIN" bench assess-fleet --data "$work/data" --devices "$DEVICES" --models "$MODELS"
"$BIN" serve --data "$work/data" --listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do [ -f "$work/data/serving.json" ] && break; sleep 0.2; done
[ -f "$work/data/serving.json" ] || { cat "$work/serve.log"; exit 1; }
for run in 1 2 3; do
  start=$(date +%s.%N)
  "$BIN" assess --data "$work/data" --out "$work/out" > "$work/assess.log"
  end=$(date +%s.%N)
  printf "run %d: hearth assess took %.2f s (wall, whole process)\n" "$run" "$(echo "$end - $start" | bc)"
done
grep -E "provisions met|Assessed in" "$work/assess.log"
