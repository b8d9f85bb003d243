#!/usr/bin/env bash
# Scale-out benchmarks (issue 17), release build, loopback, one PostgreSQL (Debian's, started by
# scripts/postgres.sh):
#   storage  stored sealed readings/s on SQLite and on PostgreSQL side by side (`hearth bench
#            storage`), with one writer (one node's group commit) and with two (two nodes).
#   command  two `hearth serve` nodes on one database, a reference thermostat connected to node A;
#            COMMANDS commands through node A (the device is local) and through node B (relayed
#            through the database), alternating; p50/p99 of each round trip, HTTPS keep-alive.
# Usage: [PARTS="storage command"] [COMMANDS=200] bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${PARTS:-"storage command"}; COMMANDS=${COMMANDS:-200}
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
