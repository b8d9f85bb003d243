#!/usr/bin/env bash
# Update benchmarks (issue: secure software updates), release build, against a running `hearth serve`:
#   refresh    metadata refresh and verification on the device (root → timestamp → snapshot → targets,
#              every check of the TUF specification, trust persisted), from `hearth-device update`'s
#              phase timings; beside python-tuf's ngclient.Updater.refresh() on the same repository
#              (the reference TUF client), side by side, RUNS times each.
#   download   CLIENTS concurrent HTTPS downloads of a SIZE_MB image from the repository (as CLIENTS
#              devices would), aggregate MB/s; beside the loopback limit: one plain TCP stream over
#              127.0.0.1 (python sockets, no TLS), the most the machine moves through loopback.
#   switchover the reference thermostat updated by a rollout: how long its control loop stops while
#              it restarts into the new slot, and until the new version is committed (healthy).
# Usage: RUNS=5 CLIENTS=1000 SIZE_MB=1 bench/updates.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}; CLIENTS=${CLIENTS:-1000}; SIZE_MB=${SIZE_MB:-1}

echo "== building release (.build-release)"
swift build -c release --scratch-path .build-release --product hearth 2>&1 | tail -1
swift build -c release --scratch-path .build-release --product hearth-device 2>&1 | tail -1
BIN=.build-release/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"
json() { echo "JSON $1" | tee -a "$work/results.jsonl"; }
D="$work/data"; WS="$work/ws"
"$BIN/hearth" bench prepare --data "$D" --out "$work/out" --devices 1 >/dev/null 2>&1 || true
"$BIN/hearth" updates online-keys --data "$D" > "$work/online.json"
"$BIN/hearth" release init --workspace "$WS" --online-keys "$work/online.json" >/dev/null
image() { { printf 'HEARTH-FW thermostat-t1 %s\n' "$1"; head -c "$((SIZE_MB * 1048576))" /dev/urandom; } > "$work/fw-$1.bin"; }
publish() {
  image "$1"
  "$BIN/hearth" release publish --workspace "$WS" --image "$work/fw-$1.bin" --model thermostat-t1 --version "$1" --min-from "$2" \
    --fixes "Benchmark release $1 with plain-language notes." --severity low --support-ends 2031-12-31 >/dev/null
  "$BIN/hearth" updates import --data "$D" --from "$WS/publish" >/dev/null
}
publish 1.0.0 0.0.0
"$BIN/hearth" factory provision --data "$D" --model thermostat-t1 --count 1 --out "$work/units" --public-url https://127.0.0.1:1 >/dev/null 2>&1
publish 1.1.0 1.0.0
"$BIN/hearth" serve --data "$D" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 > "$work/server.log" 2>&1 &
for _ in $(seq 200); do grep -q 'mqtts://' "$work/server.log" && break; sleep 0.05; done
HTTPS=$(grep -o 'https://127.0.0.1:[0-9]*' "$work/server.log" | head -1 | cut -d: -f3)
MQTT=$(grep -o 'mqtts://127.0.0.1:[0-9]*' "$work/server.log" | head -1 | cut -d: -f3)
REPO="https://127.0.0.1:$HTTPS/tuf"
unit=$(ls -d "$work/units"/* | head -1)
target=thermostat-t1-1.1.0.img

for run in $(seq "$RUNS"); do
  rm -rf "$unit/update"
  out=$("$BIN/hearth-device" update --bundle "$unit" --target "$target" --repository "$REPO")
  refresh=$(echo "$out" | sed -n 's/^phase: downloading after \([0-9]*\) ms/\1/p')
  total=$(echo "$out" | sed -n 's/^switched: .* after \([0-9]*\) ms/\1/p')
  py=$(SSL_CERT_FILE="$D/root-ca.pem" python3 Sources/HearthTestSupport/Scripts/tuf_updater.py "https://127.0.0.1:$HTTPS" "$WS/publish/metadata/1.root.json" "$work/py-$run" "$target" | python3 -c 'import json,sys; print(json.load(sys.stdin)["refreshMs"])')
  json "{\"bench\":\"refresh\",\"run\":$run,\"hearthRefreshMs\":$refresh,\"hearthWholeUpdateMs\":$total,\"pythonTUFRefreshMs\":$py}"
done

sha=$(sha256sum "$work/fw-1.1.0.bin" | cut -c1-64)
for run in $(seq "$RUNS"); do
  r=$("$BIN/hearth-device" download-bench --repository "$REPO" --ca "$D/root-ca.pem" --path "targets/$sha.$target" --clients "$CLIENTS")
  limit=$(python3 - <<'PY'
import socket, threading, time
total = 2 << 30
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
def send():
    conn, _ = server.accept(); block = b"x" * (1 << 20); sent = 0
    while sent < total: conn.sendall(block); sent += len(block)
    conn.close()
threading.Thread(target=send).start()
client = socket.create_connection(server.getsockname()); start = time.perf_counter(); got = 0
while True:
    data = client.recv(1 << 20)
    if not data: break
    got += len(data)
print(round(got / (time.perf_counter() - start) / 1e6, 1))
PY
)
  json "{\"bench\":\"download\",\"run\":$run,\"hearth\":$r,\"loopbackTCPMBps\":$limit}"
done

rm -rf "$unit/update"
for run in $(seq "$RUNS"); do
  rm -rf "$unit/update"; rm -f "$unit/queue.log"
  "$BIN/hearth-device" thermostat --bundle "$unit" --mqtt "127.0.0.1:$MQTT" --repository "$REPO" --hardware-key "$work/hw.key" \
    --startup-delay 0 --report-every 0.1 --update-check 0.2 > "$work/dev-$run.log" 2>&1 &
  dpid=$!
  for _ in $(seq 200); do grep -q running "$work/dev-$run.log" && break; sleep 0.05; done
  id=$("$BIN/hearth" updates rollout start "$target" --data "$D" --stages 100 | cut -f1)
  for _ in $(seq 600); do grep -q 'committed' "$work/dev-$run.log" && break; sleep 0.05; done
  stopped=$(sed -n 's/^update: restarting at \([0-9]*\)/\1/p' "$work/dev-$run.log")
  booted=$(grep 'on trial until healthy' "$work/dev-$run.log" | sed -n 's/.* at \([0-9]*\)$/\1/p')
  committed=$(grep -c committed "$work/dev-$run.log")
  json "{\"bench\":\"switchover\",\"run\":$run,\"controlLoopStoppedMs\":$((booted - stopped)),\"committed\":$committed}"
  kill "$dpid"; wait "$dpid" 2>/dev/null || true
  "$BIN/hearth" updates rollout abort "$id" --data "$D" >/dev/null 2>&1 || true
done

echo "== medians"
python3 - "$work/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l[5:]) for l in open(sys.argv[1])]
def med(bench, key, sub=None):
    values = [(r[bench][key] if False else (r[sub][key] if sub else r[key])) for r in rows if r["bench"] == bench]
    return statistics.median(values)
h, p = med("refresh", "hearthRefreshMs"), med("refresh", "pythonTUFRefreshMs")
print(f"refresh: Hearth device {h} ms, python-tuf {p} ms (ratio {h / p:.2f}); whole update {med('refresh', 'hearthWholeUpdateMs')} ms")
d, l = med("download", "MBps", "hearth"), med("download", "loopbackTCPMBps")
print(f"download: {d} MB/s aggregate to concurrent devices, loopback TCP limit {l} MB/s (ratio {d / l:.2f})")
print(f"switch-over: control loop stopped {med('switchover', 'controlLoopStoppedMs')} ms (median)")
PY
