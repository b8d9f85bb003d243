#!/usr/bin/env bash
# Security-monitoring benchmarks (issue 16), release build, loopback, mutual TLS, MQTT 5.0:
#   cost     the gateway with its detectors and metrics on, beside the same server with both off
#            (`--benchmark-monitoring-off`), alternating, ROUNDS each, same device identities:
#            (a) events fan-in (routed, not stored), (b) readings (validated, stored before the
#            PUBACK). The server pinned to CPU 0, mqload (closed loop, 16 in flight per device) to
#            CPU 1; the median PUBACKs/s of each and their ratio.
#   memory   the detectors' state per device at 100,000 devices (`hearth bench detectors`).
#   clone    time from a cloned identity's second connection (the first from a second address) to
#            the alert in the database (`hearth-device misbehave --kind clone`), ROUNDS times.
# Usage: ROUNDS=3 [PARTS="cost memory clone"] bench/monitoring.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; DEVICES=${DEVICES:-100}; PORT=${PORT:-18895}; PARTS=${PARTS:-"cost memory clone"}
MQLOAD_SRC=${MQLOAD_SRC:-../shared/tools/mqload}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
echo "== building mqload, hearth and hearth-device (release, .build-release)"
gcc -O2 -o "$work/mqload" "$MQLOAD_SRC/mqload.c" -lssl -lcrypto
swift build -c release --scratch-path .build-release --product hearth 2>&1 | tail -1
swift build -c release --scratch-path .build-release --product hearth-device 2>&1 | tail -1
BIN=$PWD/.build-release/release
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"
"$BIN/hearth" bench prepare --data "$work/data" --out "$work/out" --devices $(( DEVICES + ROUNDS )) 2>/dev/null | tail -1
ls -d "$work"/out/bundles/* | head -n "$DEVICES" | while read -r d; do echo "$(basename "$d") $d/device.pem $d/device.key.pem"; done > "$work/certs.txt"
CA=$(find "$work/out/bundles" -mindepth 1 -maxdepth 1 -type d -print -quit)/server-root-ca.pem
printf '{"seq":%%s,"values":{"temperature":21.5,"heating":false,"target":21}}' > "$work/reading.json"
printf 'event %%s' > "$work/event.txt"
ulimit -n 65000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

serve() {  # extra flags…
  taskset -c 0 "$BIN/hearth" serve --data "$work/data" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    --mqtt-listen 127.0.0.1:$PORT --max-connections 100000 --max-connects-per-second 100000 \
    --max-publishes-per-second 1000000 --max-bytes-per-second 1000000000 "$@" > "$work/server.log" 2>&1 &
  spid=$!
  for _ in $(seq 300); do ss -ltn | grep -q "127.0.0.1:$PORT " && break; sleep 0.1; done
  sleep 1
}
stop() { kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; }
rate() {  # topic payload → PUBACKs/s
  taskset -c 1 "$work/mqload" -m ingest -V 5 -p "$PORT" --ca "$CA" --certs "$work/certs.txt" -n "$DEVICES" -i 16 \
    --topic "$1" --payload "$2" -d 10 -W 2 2>&1 | grep -o 'puback/s=[0-9.]*' | head -1 | cut -d= -f2
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

for what in $( [[ " $PARTS " == *" cost "* ]] && echo events readings ); do
  if [ $what = events ]; then topic='devices/%c/events'; payload=$work/event.txt; else topic='devices/%c/telemetry'; payload=$work/reading.json; fi
  : > "$work/on.txt"; : > "$work/off.txt"
  for round in $(seq "$ROUNDS"); do
    serve; on=$(rate "$topic" "$payload"); stop
    serve --benchmark-monitoring-off; off=$(rate "$topic" "$payload"); stop
    echo "$on" >> "$work/on.txt"; echo "$off" >> "$work/off.txt"
    echo "   $what round $round: monitoring on $on/s, off $off/s"
  done
  on=$(median < "$work/on.txt"); off=$(median < "$work/off.txt")
  echo "== $what: median monitoring on $on/s, off $off/s, ratio $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.3f", a / b}')"
done

[[ " $PARTS " == *" memory "* ]] && echo "== memory: $("$BIN/hearth" bench detectors --devices 100000)"

[[ " $PARTS " == *" clone "* ]] || exit 0
serve
for round in $(seq "$ROUNDS"); do
  bundle=$(ls -d "$work"/out/bundles/* | sed -n "$(( DEVICES + round ))p")
  serial=$(basename "$bundle")
  out=$("$BIN/hearth-device" misbehave --kind clone --bundle "$bundle" --mqtt 127.0.0.1:$PORT --hardware-key "$work/hw-$round")
  second=$(echo "$out" | grep 'from 127.0.0.2' | head -1 | grep -oE '^[0-9]{12,}' || true)
  [ -n "$second" ] || { echo "clone round $round: no timestamped second connection in: $out"; continue; }
  for _ in $(seq 100); do
    raised=$(sqlite3 "$work/data/hearth.sqlite" "SELECT raised_at FROM alerts WHERE serial = '$serial' AND kind = 'clone'" 2>/dev/null || true)
    [ -n "$raised" ] && break; sleep 0.1
  done
  echo "== clone round $round: alert ${raised:-MISSING}, $(( ${raised:-0} - second )) ms after the clone's second connection (its third address switch raises it)"
done
stop
