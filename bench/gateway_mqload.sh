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
RATES=${RATES:-"20000 40000 60000 80000"}; IDLE=${IDLE:-10000}; DEVICES=${DEVICES:-100}
READING_RATES=${READING_RATES:-"20000 40000 60000"}
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
CA=$(ls -d "$work"/out/bundles/* | head -1)/server-root-ca.pem
printf '{"seq":%%s,"values":{"temperature":21.5,"humidity":40,"heating":false,"target":21}}' > "$work/reading.json"
printf 'event %%s' > "$work/event.txt"
HEARTH="$BIN serve --data $work/data --listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:$HPORT --max-connections 100000 --max-connects-per-second 100000 --max-publishes-per-second 1000000 --max-bytes-per-second 1000000000"
MOSQ="mosquitto -c $work/out/mosquitto/mosquitto.conf"
SBS="$MQLOAD_SRC/side_by_side.sh"
TLS=(--ca "$CA" --certs "$work/certs.txt" -V 5)

for rate in $RATES; do
  for who in hearth mosquitto; do
    if [ $who = hearth ]; then port=$HPORT cmd=$HEARTH; else port=$MPORT cmd=$MOSQ; fi
    bash "$SBS" "fanin-$who-$rate" "$port" "$cmd" -- -m ingest -p "$port" "${TLS[@]}" -n "$DEVICES" --topic 'devices/%c/events' --payload "$work/event.txt" -r "$rate" -d 10 -W 2
  done
done
for who in hearth mosquitto; do
  if [ $who = hearth ]; then port=$HPORT cmd=$HEARTH; else port=$MPORT cmd=$MOSQ; fi
  bash "$SBS" "connect-$who" "$port" "$cmd" -- -m conn -p "$port" "${TLS[@]}" -n 1 -d 10 -W 1
  bash "$SBS" "idle1-$who" "$port" "$cmd" -- -m idle -p "$port" "${TLS[@]}" -n 1 -d 12 -W 2
  bash "$SBS" "idle-$who" "$port" "$cmd" -- -m idle -p "$port" "${TLS[@]}" -n "$IDLE" -d 12 -W 2
done

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
