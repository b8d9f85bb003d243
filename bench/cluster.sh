#!/usr/bin/env bash
# Scale-out benchmarks (issue 17), release build, loopback, one PostgreSQL (Debian's, started by
# scripts/postgres.sh):
#   storage  stored sealed readings/s on SQLite and on PostgreSQL side by side (`hearth bench
#            storage`), with one writer (one node's group commit) and with two (two nodes).
#   command  two `hearth serve` nodes on one database, a reference thermostat connected to node A;
#            COMMANDS commands through node A (the device is local) and through node B (relayed
#            through the database), alternating; p50/p99 of each round trip, HTTPS keep-alive.
#   failover DEVICES (10,000) devices (mqload, MQTT 5.0, mutual TLS, one certificate each) held
#            on node A; A killed with SIGKILL; the devices reconnect to node B from four
#            generators at once. Time from the kill until all are connected to B, and p50/p99 of
#            an API request (GET /readyz, a committed write) to B before and during it. B's
#            connect admission is raised for this (`--max-connects-per-second`): the default
#            (500/s, burst 1,000) bounds a real failover at DEVICES/500 s by design.
# Usage: [PARTS="storage command failover"] [COMMANDS=200] [DEVICES=10000] bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${PARTS:-"storage command failover"}; COMMANDS=${COMMANDS:-200}; DEVICES=${DEVICES:-10000}
work=$(mktemp -d)
pids=()
trap 'kill $(jobs -p) "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
echo "== building hearth and hearth-device (release, .build-release)"
swift build -c release --scratch-path .build-release --product hearth 2>&1 | tail -1
swift build -c release --scratch-path .build-release --product hearth-device 2>&1 | tail -1
BIN=$PWD/.build-release/release
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB; $(psql --version)"

fresh() {  # a new, empty database NAME for this run → its --database options
  runuser -u postgres -- psql -XqAt -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true
  bash scripts/postgres.sh deployment "$1"
}

if [[ " $PARTS " == *" storage "* ]]; then
  for writers in 1 2; do
    echo "== storage: $writers writer(s)"
    db=$(fresh hearth_bench)
    eval "\"$BIN/hearth\" bench storage --data \"$work/storage-$writers\" $db --devices 1000 --owners 100 --readings 100000 --rounds 5 --writers $writers" | tail -1
  done
fi

if [[ " $PARTS " == *" command "* ]]; then
  echo "== command round trip: local node beside the other node"
  db=$(fresh hearth_bench)
  eval "\"$BIN/hearth\" bench prepare --data \"$work/data\" --out \"$work/out\" --devices 1 $db" | tail -1
  node() {  # N → a node on HTTPS 1844N, MQTT 1888N
    eval "exec \"$BIN/hearth\" serve --data \"$work/data\" $db --listen 127.0.0.1:1844$1 --mqtt-listen 127.0.0.1:1888$1 --metrics-listen 127.0.0.1:0" > "$work/node$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 300); do grep -q "Clients verify it" "$work/node$1.log" && break; sleep 0.1; done
  }
  node 0; node 1
  bundle=$(find "$work/out/bundles" -mindepth 1 -maxdepth 1 -type d -print -quit)
  "$BIN/hearth-device" thermostat --bundle "$bundle" --mqtt 127.0.0.1:18880 --hardware-key "$work/hw" \
    --startup-delay 0 --verbose > "$work/device.log" 2>&1 &
  for _ in $(seq 300); do grep -q "connected (MQTT" "$work/device.log" && break; sleep 0.1; done
  python3 - "$work/data/root-ca.pem" "$bundle/bundle.json" "$COMMANDS" <<'PY'
import http.client, json, ssl, sys, time
ca, bundle, count = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
context = ssl.create_default_context(cafile=ca)
conns = [http.client.HTTPSConnection("127.0.0.1", 18440 + n, context=context) for n in (0, 1)]
def call(n, method, path, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token: headers["authorization"] = "Bearer " + token
    conns[n].request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = conns[n].getresponse(); data = r.read()
    return r.status, (json.loads(data) if data else None)
me = {"email": "bench@example.com", "password": "a long bench passphrase for commands"}
assert call(0, "POST", "/api/v1/accounts", me)[0] == 201
token = call(1, "POST", "/api/v1/sessions", me)[1]["token"]
status, body = call(0, "POST", "/api/v1/devices/claim", {"serial": bundle["serial"], "setupCode": bundle["setupCode"]}, token)
assert status == 201, (status, body)
times = {0: [], 1: []}
path = "/api/v1/devices/%s/commands" % bundle["serial"]
for i in range(count):
    for n in (0, 1):
        t = time.perf_counter()
        status, body = call(n, "POST", path, {"name": "setTarget", "parameters": {"target": 20 + (i % 5)}}, token)
        assert status == 200 and body["status"] == "ok", (n, status, body)
        times[n].append((time.perf_counter() - t) * 1000)
def q(v, p): v = sorted(v); return v[min(len(v) - 1, int(len(v) * p))]
for n, name in ((0, "device on this node (A)"), (1, "device on the other node (B -> A)")):
    print("command through %s: p50 %.1f ms, p99 %.1f ms (%d)" % (name, q(times[n], .5), q(times[n], .99), count))
PY
fi

if [[ " $PARTS " == *" failover "* ]]; then
  echo "== failover: $DEVICES devices on node A, A killed, all back on node B"
  gcc -O2 -o "$work/mqload" ../shared/tools/mqload/mqload.c -lssl -lcrypto
  db=$(fresh hearth_bench)
  eval "\"$BIN/hearth\" bench prepare --data \"$work/fdata\" --out \"$work/fout\" --devices $DEVICES $db" | tail -1
  for d in "$work"/fout/bundles/*; do echo "$(basename "$d") $d/device.pem $d/device.key.pem"; done > "$work/certs.txt"
  split -n l/4 -d "$work/certs.txt" "$work/certs."
  ca=$(find "$work/fout/bundles" -mindepth 1 -maxdepth 1 -type d -print -quit)/server-root-ca.pem
  fnode() {  # N → a node on HTTPS 1845N, MQTT 1889N
    eval "exec \"$BIN/hearth\" serve --data \"$work/fdata\" $db --listen 127.0.0.1:1845$1 --mqtt-listen 127.0.0.1:1889$1 --metrics-listen 127.0.0.1:0 --max-connects-per-second 100000 --max-connections 100000" > "$work/fnode$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 300); do grep -q "Clients verify it" "$work/fnode$1.log" && break; sleep 0.1; done
  }
  ulimit -n "$(ulimit -Hn)"  # 10,000 connections on a node, and as many on the generators
  fnode 0; nodeA=${pids[-1]}; fnode 1
  connect() {  # PORT SUFFIX SECONDS → the fleet connected from four generators (pids in $fleet)
    fleet=()
    for part in "$work"/certs.0?; do
      "$work/mqload" -m idle -V 5 -p "$1" --ca "$ca" --certs "$part" -n "$(wc -l < "$part")" -d "$3" > "$part.$2" 2>&1 &
      fleet+=($!)
    done
    for part in "$work"/certs.0?; do for _ in $(seq 6000); do grep -qs "mode=idle" "$part.$2" && break; sleep 0.05; done; done
  }
  connect 18890 onA 3600; hold=("${fleet[@]}")
  echo "on A: $(cat "$work"/certs.0?.onA | grep -o 'opened=[0-9]* in [0-9.]*s' | tr '\n' ' ')"
  # The API probe: GET /readyz on B with keep-alive, until told to stop; p50/p99 before and after the kill.
  python3 - "$work/fdata/root-ca.pem" "$work/probe" > "$work/probe.out" 2>&1 <<'PY' &
import http.client, os, ssl, sys, time
conn = http.client.HTTPSConnection("127.0.0.1", 18451, context=ssl.create_default_context(cafile=sys.argv[1]))
samples = []
while not os.path.exists(sys.argv[2] + ".stop"):
    t = time.time(); conn.request("GET", "/readyz"); r = conn.getresponse(); r.read()
    samples.append((t, (time.time() - t) * 1000, r.status)); time.sleep(0.01)
kill = float(open(sys.argv[2] + ".kill").read()); done = float(open(sys.argv[2] + ".stop").read() or "0")
def q(v, p): v = sorted(v); return v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")
for name, part in (("before the kill", [s for s in samples if s[0] < kill]), ("during the failover", [s for s in samples if kill <= s[0] <= done])):
    print("API on B %s: p50 %.1f ms, p99 %.1f ms, %d requests, %d not 200" % (name, q([s[1] for s in part], .5), q([s[1] for s in part], .99), len(part), sum(1 for s in part if s[2] != 200)))
PY
  probe=$!
  sleep 5
  date +%s.%N > "$work/probe.kill"; kill -9 "$nodeA"; t0=$(date +%s.%N)
  kill "${hold[@]}" 2>/dev/null || true
  connect 18891 onB 1
  t1=$(date +%s.%N); echo "$t1" > "$work/probe.stop"
  wait "$probe" || true; wait "${fleet[@]}" 2>/dev/null || true
  echo "on B: $(cat "$work"/certs.0?.onB | grep -o 'opened=[0-9]* in [0-9.]*s' | tr '\n' ' ')"
  grep -h "refused\|closed by broker" "$work"/certs.0?.onB | head -5 || true
  python3 -c "print('failover: %d devices back on B %.1f s after A was killed' % ($DEVICES, $t1 - $t0))"
  cat "$work/probe.out"
fi
