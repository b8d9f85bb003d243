#!/usr/bin/env bash
# Foundation benchmarks (issue: foundation): provisioning throughput, sign-in latency with the
# production scrypt cost, and server RSS at idle — each beside a reference run in the same script.
# Usage: bench/foundation.sh [UNITS] [SIGNINS]      (release build; takes a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
UNITS=${1:-400}
SIGNINS=${2:-200}

command -v mosquitto >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
python3 -c "import requests, cryptography" 2>/dev/null || pip install -q requests cryptography

echo "== building release"
swift build -c release --product hearth 2>&1 | tail -1
BIN=$(swift build -c release --show-bin-path)/hearth
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
data="$work/data"

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"

echo "== provisioning $UNITS units (scrypt N=2^16 r=8 p=1, P-256 keys and certificates, bundles to disk)"
cat > "$work/model.json" <<'JSON'
{"id": "bench-m1", "name": "Bench", "maker": "Bench", "supportEnds": "2031-12-31",
 "purposes": [{"id": "run", "essential": true, "description": "What the bench device is for."}],
 "telemetry": [{"name": "t", "type": "number", "min": 0, "max": 1,
   "data": {"category": "diagnostics", "purpose": "run", "personal": false, "recipients": ["you"], "retentionDays": 30}}],
 "commands": []}
JSON
"$BIN" model add --data "$data" --file "$work/model.json" >/dev/null
"$BIN" factory provision --data "$data" --model bench-m1 --count "$UNITS" --out "$work/bundles" 2>/dev/null | tail -1
echo "-- reference: the same work in Python (cryptography + hashlib.scrypt, OpenSSL underneath), 2 processes"
python3 bench/reference_provision.py "$UNITS"

echo "== server RSS and sign-in latency"
"$BIN" serve --data "$data" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 > "$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "Clients verify" "$work/serve.log" && break; sleep 0.1; done
base=$(grep -o 'https://127.0.0.1:[0-9]*' "$work/serve.log" | head -1)
sleep 3
echo "hearth idle RSS after start: $(awk '/VmRSS/{print $2, $3}' /proc/$pid/status)"
mosquitto -p $((20000 + RANDOM % 20000)) >/dev/null 2>&1 & mpid=$!
sleep 3
echo "-- reference: mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') idle RSS: $(awk '/VmRSS/{print $2, $3}' /proc/$mpid/status)"
kill $mpid 2>/dev/null || true
python3 bench/signin_latency.py "$base" "$data/root-ca.pem" "$SIGNINS"
sleep 3
echo "hearth idle RSS after the sign-ins: $(awk '/VmRSS/{print $2, $3}' /proc/$pid/status)"
kill -TERM $pid; wait $pid || true
