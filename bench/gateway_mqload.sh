#!/usr/bin/env bash
# Gateway benchmarks with a C load generator (mqload, from ../shared/tools/mqload; built here), Hearth
# beside Mosquitto 2.x in the same run, same device certificates, mutual TLS, MQTT 5.0, loopback.
# Per core: each server pinned to CPU 0 (taskset), the generator to CPU 1 (side_by_side.sh).
#   fan-in   100 devices publish QoS 1 to devices/S/events (routed; no subscriber) at rising open-loop
#            rates: PUBACKs/s, p99 PUBLISH->PUBACK, lost.
#   connect  full mutual-TLS connects (handshake, CONNECT/CONNACK/DISCONNECT) per second.
#   idle     RSS per idle mutual-TLS connection at IDLE connections (minus the server's RSS with one).
#   readings QoS 1 readings to devices/S/telemetry, validated and durably stored before the PUBACK;
#            Hearth unpinned on both cores, the generator beside it.
# Usage: RATES="20000 40000 60000" IDLE=10000 bench/gateway_mqload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${RATES-"40000 60000 80000 100000"}; IDLE=${IDLE:-10000}; DEVICES=${DEVICES:-100}
READING_RATES=${READING_RATES-"20000 40000 60000"}
HPORT=${HPORT:-18894}; MPORT=${MPORT:-18893}
MQLOAD_SRC=${MQLOAD_SRC:-../shared/tools/mqload}
command -v mosquitto >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
echo "== building mqload and hearth (release, .build-release)"
gcc -O2 -o "$work/mqload" "$MQLOAD_SRC/mqload.c" -lssl -lcrypto
export MQLOAD="$work/mqload" OUT="$work/logs"
swift build -c release --scratch-path .build-release --product hearth 2>&1 | tail -1
BIN=$PWD/.build-release/release/hearth
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB; $(mosquitto -h 2>&1 | head -1)"
echo "== preparing $IDLE device identities"
"$BIN" bench prepare --data "$work/data" --out "$work/out" --devices "$IDLE" --mosquitto-port "$MPORT" 2>/dev/null | tail -1
for d in "$work"/out/bundles/*; do echo "$(basename "$d") $d/device.pem $d/device.key.pem"; done > "$work/certs.txt"
# mqload loads every identity of its list at start (seconds for 10,000): the timed runs get only
# the identities they use, the idle run all of them.
head -n 1000 "$work/certs.txt" > "$work/certs-small.txt"
CA=$(find "$work/out/bundles" -mindepth 1 -maxdepth 1 -type d -print -quit)/server-root-ca.pem
printf '{"seq":%%s,"values":{"temperature":21.5,"heating":false,"target":21}}' > "$work/reading.json"
printf 'event %%s' > "$work/event.txt"
HEARTH="$BIN serve --data $work/data --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:$HPORT --max-connections 100000 --max-connects-per-second 100000 --max-publishes-per-second 1000000 --max-bytes-per-second 1000000000"
MOSQ="mosquitto -c $work/out/mosquitto/mosquitto.conf"
TLS=(--ca "$CA" --certs "$work/certs-small.txt" -V 5)
ALL=(--ca "$CA" --certs "$work/certs.txt" -V 5)
ulimit -n 65000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The server pinned to CPU 0, the generator to CPU 1. The server's PID is the one listening on its
# port; its CPU (utime+stime ticks) is sampled over the measured window, its RSS at the end.
start_server() {  # who
  if [ "$1" = hearth ]; then port=$HPORT cmd=$HEARTH; else port=$MPORT cmd=$MOSQ; fi
  taskset -c 0 $cmd > "$work/server-$1.log" 2>&1 &
  for _ in $(seq 300); do ss -ltn | grep -q "127.0.0.1:$port " && break; sleep 0.1; done
  spid=$(ss -ltnpH "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  sleep 1
}
stop_server() { kill "$spid" 2>/dev/null || true; while kill -0 "$spid" 2>/dev/null; do sleep 0.1; done; }
ticks() { awk '{print $14+$15}' "/proc/$spid/stat"; }
rss() { awk '/VmRSS/{print $2}' "/proc/$spid/status"; }
run() {  # label who mqload-args… (-d 10 -W 2: the window is seconds 3..11)
  local label=$1 who=$2; shift 2
  start_server "$who"
  ( sleep 3; a=$(ticks); sleep 8; b=$(ticks); echo "server_cpu=$(( (b - a) * 100 / 8 / $(getconf CLK_TCK) ))% of one core" ) > "$work/cpu.txt" &
  local sampler=$!
  taskset -c 1 "$MQLOAD" "$@" > "$work/gen.txt" 2>&1 || true
  wait $sampler
  echo "== $label ($who): mqload $*"; grep -E "puback/s|rejected|latency_ms|connects/s" "$work/gen.txt" || true; cat "$work/cpu.txt"
  echo "server_rss_kB=$(rss)"
  stop_server
}
idle() {  # who N: RSS with N idle connections minus RSS with one, per connection
  local who=$1 n=$2
  start_server "$who"
  taskset -c 1 "$MQLOAD" -m idle -p "$port" "${TLS[@]}" -n 1 -d 10 > "$work/idle1.txt" 2>&1 &
  local g=$!; sleep 5; local one; one=$(rss); wait $g || true
  taskset -c 1 "$MQLOAD" -m idle -p "$port" "${ALL[@]}" -n "$n" -d 600 > "$work/idle.txt" 2>&1 &
  g=$!
  for _ in $(seq 1200); do grep -q "holding" "$work/idle.txt" && break; sleep 0.5; done
  sleep 5
  local many; many=$(rss)
  echo "== idle $who: $(grep -o 'opened=[0-9]* in [0-9.]*s' "$work/idle.txt"); RSS $one kB with one, $many kB with $n: $(( (many - one) * 1000 / n / 1000 )).$(( (many - one) * 1000 / n % 1000 )) kB per connection"
  kill $g 2>/dev/null || true; wait $g 2>/dev/null || true
  stop_server
}

for rate in $RATES; do
  for who in hearth mosquitto; do
    if [ $who = hearth ]; then port=$HPORT; else port=$MPORT; fi
    run "fan-in $rate/s" $who -m ingest -p "$port" "${TLS[@]}" -n "$DEVICES" --topic 'devices/%c/events' --payload "$work/event.txt" -r "$rate" -d 10 -W 2
  done
done
for who in hearth mosquitto; do
  if [ $who = hearth ]; then port=$HPORT; else port=$MPORT; fi
  run "connects" $who -m conn -p "$port" "${TLS[@]}" -n 1 -P 4 -d 10 -W 1
done
for who in hearth mosquitto; do idle $who "$IDLE"; done

echo "== stored readings: Hearth on both cores, the generator beside it"
for rate in $READING_RATES; do
  $HEARTH > "$work/hearth-readings.log" 2>&1 &
  hp=$!
  for _ in $(seq 300); do ss -ltn | grep -q "127.0.0.1:$HPORT " && break; sleep 0.1; done
  sleep 1
  echo "== readings-$rate: mqload -m ingest -r $rate (telemetry)"
  "$MQLOAD" -m ingest -p "$HPORT" "${TLS[@]}" -n "$DEVICES" --topic 'devices/%c/telemetry' --payload "$work/reading.json" -r "$rate" -d 10 -W 2 || true
  kill $hp; wait $hp 2>/dev/null || true
done
