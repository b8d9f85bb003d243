#!/usr/bin/env bash
# Page benchmarks (issue 13): the owner's device page (7-day charts) and the operator's fleet page,
# with 100,000 devices and 1,000,000 readings in the store, beside /healthz on the same server in
# the same run; and the chart's query alone. The server is pinned to core 0 and the client (one
# keep-alive connection, sequential requests) to core 1.
# Usage: bench/pages.sh [DEVICES] [READINGS] [REQUESTS]      (release build; a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${1:-100000}
READINGS=${2:-1000000}
N=${3:-300}

echo "== building release"
swift build -c release --product hearth --scratch-path .build-release 2>&1 | tail -1
BIN=$(swift build -c release --scratch-path .build-release --show-bin-path)/hearth
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
data="$work/data"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"

echo "== filling the store: $DEVICES devices, $READINGS readings"
"$BIN" bench pages --data "$data" --out "$work/bundle" --devices "$DEVICES" --readings "$READINGS" | tee "$work/seed.log"
serial=$(grep -o 'serial [0-9A-Z]*' "$work/seed.log" | cut -d' ' -f2)
code=$(grep -o 'setup code [0-9]*' "$work/seed.log" | cut -d' ' -f3)

taskset -c 0 "$BIN" serve --data "$data" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 > "$work/serve.log" 2>&1 &
for _ in $(seq 300); do grep -q "Clients verify" "$work/serve.log" && break; sleep 0.1; done
base=$(grep -o 'https://127.0.0.1:[0-9]*' "$work/serve.log" | head -1)
token=$(grep -o '/setup/[A-Za-z0-9_-]*' "$work/serve.log" | head -1 | cut -d/ -f3)
ca="$data/root-ca.pem"
json() { curl -s --cacert "$ca" -H 'content-type: application/json' -d "$2" "$base$1"; }
owner='{"email":"bench-owner@example.com","password":"a bench owner passphrase"}'
json /api/v1/accounts "$owner" >/dev/null
owner_token=$(json /api/v1/sessions "$owner" | sed 's/.*"token":"\([^"]*\)".*/\1/')
curl -s --cacert "$ca" -H "authorization: Bearer $owner_token" -H 'content-type: application/json' -d "{\"serial\":\"$serial\",\"setupCode\":\"$code\"}" "$base/api/v1/devices/claim" >/dev/null
json /api/v1/setup "{\"token\":\"$token\",\"email\":\"bench-op@example.com\",\"password\":\"a bench operator passphrase\"}" >/dev/null
op_token=$(json /api/v1/sessions '{"email":"bench-op@example.com","password":"a bench operator passphrase"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')

echo "== latency, $N sequential requests each over one keep-alive connection (server on core 0, client on core 1)"
taskset -c 1 python3 bench/pages_client.py "$base" "$ca" "" "$N" /healthz
taskset -c 1 python3 bench/pages_client.py "$base" "$ca" "__Host-hearth_session=$owner_token" "$N" "/devices/$serial?range=7d" "/devices/$serial?range=24h" /devices
taskset -c 1 python3 bench/pages_client.py "$base" "$ca" "__Host-hearth_session=$op_token" "$N" /console "/console?claimed=no&serial=Z"
echo "server RSS after the run: $(awk '/VmRSS/{print $2, $3}' /proc/$(pgrep -f "$BIN serve" | head -1)/status)"
