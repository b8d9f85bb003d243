#!/usr/bin/env bash
# Device SDK benchmarks (issue: device SDK and reference devices), against a running `hearth serve`:
#   idle-one   one reference thermostat (`hearth-device thermostat`, a reading every 10 s): RSS and CPU
#              over WATCH seconds, beside an idle mosquitto_sub holding the same kind of mutual-TLS
#              session (the reference: a C MQTT client that does nothing else).
#   fleet      FLEET simulated thermostats in one process (`hearth-device fleet`, a reading every 30 s
#              each): RSS and CPU once all are connected.
#   storm      the server is stopped and started again; time from its return until 99% of the fleet
#              is reconnected, with the reconnect window WINDOW seconds (full jitter).
# Usage: FLEET=1000 WINDOW=30 WATCH=30 RUNS=3 bench/devices.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FLEET=${FLEET:-1000}; WINDOW=${WINDOW:-30}; WATCH=${WATCH:-30}; RUNS=${RUNS:-3}; PORT=${PORT:-18893}

echo "== building release (.build-release)"
swift build -c release --scratch-path .build-release --product hearth 2>&1 | tail -1
swift build -c release --scratch-path .build-release --product hearth-device 2>&1 | tail -1
BIN=.build-release/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"
"$BIN/hearth" bench prepare --data "$work/data" --out "$work/out" --devices "$((FLEET + 2))" 2>/dev/null | tail -1
mkdir -p "$work/fleet"
ls "$work/out/bundles" | head -n "$FLEET" | while read -r s; do mv "$work/out/bundles/$s" "$work/fleet/"; done
one=$(ls -d "$work/out/bundles"/* | head -1); ref=$(ls -d "$work/out/bundles"/* | tail -1)

start_server() {
  "$BIN/hearth" serve --data "$work/data" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --mqtt-listen "127.0.0.1:$PORT" >> "$work/server.log" 2>&1 &
  spid=$!
  for _ in $(seq 300); do [ "$(grep -c 'MQTT device listener (mutual' "$work/server.log")" -ge "$1" ] && break; sleep 0.05; done
}
# RSS in MB and CPU seconds (user+system) of a process.
rss() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"; }
json() { echo "JSON $1" | tee -a "$work/results.jsonl"; }
# (b - a) * 100 / seconds, and b - a.
percent() { awk -v a="$1" -v b="$2" -v s="$3" 'BEGIN{printf "%.3f", (b - a) * 100 / s}'; }
since() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b - a}'; }

start_server 1
for run in $(seq "$RUNS"); do
  echo "== run $run/$RUNS: one idle device beside mosquitto_sub"
  rm -f "$one/queue.log"
  "$BIN/hearth-device" thermostat --bundle "$one" --mqtt "127.0.0.1:$PORT" --hardware-key "$work/hw.key" --startup-delay 0 --report-every 10 > "$work/one.log" 2>&1 &
  dpid=$!
  serial=$(basename "$ref")
  mosquitto_sub -h 127.0.0.1 -p "$PORT" --cafile "$ref/server-root-ca.pem" --cert "$ref/device.pem" --key "$ref/device.key.pem" \
    -V mqttv5 -i "$serial" -q 1 -t "devices/$serial/commands/+" > /dev/null 2>&1 &
  mpid=$!
  sleep 5
  c0=$(cpu "$dpid"); m0=$(cpu "$mpid")
  sleep "$WATCH"
  kill -0 "$dpid" 2>/dev/null || { echo "the device stopped:"; cat "$work/one.log"; exit 1; }
  json "{\"bench\":\"idle-one\",\"run\":$run,\"hearthDeviceRSSMB\":$(rss "$dpid"),\"hearthDeviceCPUPercent\":$(percent "$c0" "$(cpu "$dpid")" "$WATCH"),\"mosquittoSubRSSMB\":$(rss "$mpid"),\"mosquittoSubCPUPercent\":$(percent "$m0" "$(cpu "$mpid")" "$WATCH")}"
  kill "$dpid" "$mpid"; wait "$dpid" "$mpid" 2>/dev/null || true

  echo "== run $run/$RUNS: $FLEET devices in one process"
  for d in "$work/fleet"/*; do rm -f "$d/queue.log"; done
  "$BIN/hearth-device" fleet --bundles "$work/fleet" --count "$FLEET" --hardware-key "$work/hw.key" --mqtt "127.0.0.1:$PORT" \
    --report-every 30 --startup-delay 10 --reconnect-window "$WINDOW" > "$work/fleet-$run.log" 2>&1 &
  fpid=$!
  for _ in $(seq 600); do grep -q "\"connected\":$FLEET," "$work/fleet-$run.log" && break; sleep 0.5; done
  sleep 5
  c0=$(cpu "$fpid")
  sleep "$WATCH"
  json "{\"bench\":\"fleet\",\"run\":$run,\"devices\":$FLEET,\"rssMB\":$(rss "$fpid"),\"cpuPercent\":$(percent "$c0" "$(cpu "$fpid")" "$WATCH")}"

  echo "== run $run/$RUNS: storm (server stopped and started again)"
  kill "$spid"; wait "$spid" 2>/dev/null || true
  start_server $((run + 1))
  back=$(date +%s.%N)
  target=$(( FLEET * 99 / 100 ))
  connected() { tail -1 "$work/fleet-$run.log" | sed -n 's/.*"connected":\([0-9]*\).*/\1/p'; }
  # First the fleet's status shows the loss, then count until 99% are back.
  for _ in $(seq 300); do n=$(connected); [ -n "$n" ] && [ "$n" -lt "$target" ] && break; sleep 0.1; done
  reached=""
  for _ in $(seq 3000); do
    n=$(connected)
    if [ -n "$n" ] && [ "$n" -ge "$target" ]; then reached=$(date +%s.%N); break; fi
    sleep 0.1
  done
  json "{\"bench\":\"storm\",\"run\":$run,\"devices\":$FLEET,\"windowSeconds\":$WINDOW,\"secondsTo99Percent\":$(since "$back" "${reached:-0}")}"
  kill "$fpid"; wait "$fpid" 2>/dev/null || true
done
kill "$spid"; wait "$spid" 2>/dev/null || true
echo "== results"; cat "$work/results.jsonl"
rm -rf "$work"
