#!/usr/bin/env bash
# Gateway benchmarks (issue: MQTT gateway): Hearth beside Mosquitto 2.x in the same run — same load
# generator (`hearth bench run`), same machine, same device certificates, loopback, mutual TLS.
#   fan-in    DEVICES devices each publish MESSAGES QoS 1 messages (10 in flight), publish→PUBACK
#             latency; topic devices/S/events (routed only, as Mosquitto does) for the comparison,
#             and devices/S/telemetry on Hearth (validated and durably stored before PUBACK).
#   connect   CONNECTS full mutual-TLS connects (handshake, CONNECT, CONNACK, DISCONNECT), 50 at a time.
#   idle      IDLE idle mutual-TLS connections: server RSS per connection.
# Usage: RUNS=3 DEVICES=100 MESSAGES=2000 CONNECTS=2000 IDLE=10000 bench/gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}; DEVICES=${DEVICES:-100}; MESSAGES=${MESSAGES:-2000}; CONNECTS=${CONNECTS:-2000}; IDLE=${IDLE:-10000}
HPORT=${HPORT:-18884}; MPORT=${MPORT:-18883}

command -v mosquitto >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
echo "== building release (.build-release)"
swift build -c release --scratch-path .build-release --product hearth 2>&1 | tail -1
BIN=.build-release/release/hearth
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB; $(mosquitto -h 2>&1 | head -1)"

echo "== preparing $IDLE device identities (one deployment; Mosquitto gets the same CA and server certificate)"
"$BIN" bench prepare --data "$work/data" --out "$work/out" --devices "$IDLE" --mosquitto-port "$MPORT" 2>/dev/null | tail -1

start_hearth() {
  "$BIN" serve --data "$work/data" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --mqtt-listen "127.0.0.1:$HPORT" \
    --max-connections 100000 --max-connects-per-second 100000 --max-publishes-per-second 1000000 --max-bytes-per-second 1000000000 \
    > "$work/hearth.log" 2>&1 &
  hpid=$!
  for _ in $(seq 200); do grep -q "MQTT device listener" "$work/hearth.log" && break; sleep 0.1; done
}
start_mosquitto() {
  mosquitto -c "$work/out/mosquitto/mosquitto.conf" 2>"$work/mosquitto.log" &
  mpid=$!
  sleep 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
bench() {  # label port args…
  local label=$1 port=$2; shift 2
  "$BIN" bench run --label "$label" --port "$port" --bundles "$work/out/bundles" "$@" | grep '^JSON ' | sed 's/^JSON //' | tee -a "$work/results.jsonl"
}

start_hearth; start_mosquitto
for run in $(seq "$RUNS"); do
  echo "== run $run/$RUNS"
  bench hearth "$HPORT" --mode fanin --topic events --devices "$DEVICES" --messages "$MESSAGES" --server-pid "$hpid"
  bench mosquitto "$MPORT" --mode fanin --topic events --devices "$DEVICES" --messages "$MESSAGES" --server-pid "$mpid"
  bench hearth "$HPORT" --mode connect --devices "$CONNECTS"
  bench mosquitto "$MPORT" --mode connect --devices "$CONNECTS"
  bench hearth "$HPORT" --mode fanin --topic telemetry --devices "$DEVICES" --messages "$MESSAGES" --server-pid "$hpid"
done
stop "$hpid"; stop "$mpid"

echo "== idle connections: $IDLE each, fresh servers"
start_hearth; sleep 2
bench hearth "$HPORT" --mode idle --devices "$IDLE" --concurrency 100 --server-pid "$hpid"
stop "$hpid"
start_mosquitto; sleep 1
bench mosquitto "$MPORT" --mode idle --devices "$IDLE" --concurrency 100 --server-pid "$mpid"
stop "$mpid"

echo "== medians (runs: $RUNS)"
python3 - "$work/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(label, mode, key, topic=None):
    vals = [r[key] for r in rows if r["label"] == label and r["mode"] == mode and (topic is None or r.get("topic") == topic) and r.get(key) is not None]
    return statistics.median(vals) if vals else None
for topic in ("events", "telemetry"):
    for label in ("hearth", "mosquitto"):
        m = med(label, "fanin", "messagesPerSecond", topic)
        if m is None: continue
        print(f"fan-in {topic:9} {label:9} {m:>9.0f} msg/s  p50 {med(label,'fanin','p50ms',topic)} ms  p99 {med(label,'fanin','p99ms',topic)} ms  lost {med(label,'fanin','lost',topic)}")
for label in ("hearth", "mosquitto"):
    print(f"connect          {label:9} {med(label,'connect','connectsPerSecond'):>9.0f} connects/s")
for label in ("hearth", "mosquitto"):
    print(f"idle             {label:9} {med(label,'idle','kBPerConnection')} kB/connection ({med(label,'idle','connections')} connections)")
h, m = med("hearth","fanin","messagesPerSecond","events"), med("mosquitto","fanin","messagesPerSecond","events")
print(f"ratios hearth/mosquitto: fan-in {h/m:.2f}, connects {med('hearth','connect','connectsPerSecond')/med('mosquitto','connect','connectsPerSecond'):.2f}, idle memory {med('hearth','idle','kBPerConnection')/med('mosquitto','idle','kBPerConnection'):.2f}")
PY
