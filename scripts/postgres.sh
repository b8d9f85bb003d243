#!/usr/bin/env bash
# PostgreSQL for Hearth on this machine (Debian's `postgresql` package), on loopback.
#
#   bash scripts/postgres.sh test-env         start the local cluster and a test role that may create
#                                             databases (each test makes its own); prints the exports
#                                             the tests read: eval "$(bash scripts/postgres.sh test-env)"
#   bash scripts/postgres.sh deployment NAME  make role NAME (login, no superuser, no CREATEDB, no
#                                             CREATEROLE) owning database NAME; prints the --database
#                                             address and the password file for `hearth serve`
#   bash scripts/postgres.sh stop | start      stop (fast) or start the local cluster
#   bash scripts/postgres.sh two-nodes [DATA]  the deployment "hearth" and two `hearth serve` nodes on
#                                             loopback sharing it and the data folder DATA (default
#                                             hearth-data): HTTPS 8443 and 8444, MQTT 8883 and 8884;
#                                             Ctrl-C stops both
#
# Passwords are random, kept in files of mode 0600 under $HEARTH_POSTGRES_DIR (default
# ${TMPDIR:-/tmp}/hearth-postgres), and passed to psql on stdin, never on a command line.
set -euo pipefail

dir=${HEARTH_POSTGRES_DIR:-${TMPDIR:-/tmp}/hearth-postgres}
mkdir -p "$dir"
chmod 700 "$dir"

# Everything start() runs writes to stderr: stdout carries only the exports `test-env` prints for eval
# (pg_ctlcluster says "Removed stale pid file." on stdout after an unclean stop).
start() {
  if ! command -v pg_lsclusters >/dev/null 2>&1; then
    echo "postgres.sh: PostgreSQL is not installed: apt-get install postgresql" >&2
    exit 1
  fi
  if [ -z "$(pg_lsclusters -h | head -1)" ]; then
    version=$(ls /usr/lib/postgresql | sort -n | tail -1)
    echo "postgres.sh: creating cluster $version/main" >&2
    pg_createcluster "$version" main >/dev/null
  fi
  read -r version cluster port status _ < <(pg_lsclusters -h | head -1)
  if [ "$status" != online ]; then
    echo "postgres.sh: starting PostgreSQL $version/$cluster on port $port" >&2
    pg_ctlcluster "$version" "$cluster" start >&2
  fi
  # Plenty of connections for parallel test databases (each test opens a small pool).
  if [ "$(as_postgres -c 'SHOW max_connections')" -lt 300 ]; then
    as_postgres -c "ALTER SYSTEM SET max_connections = 300" >/dev/null
    pg_ctlcluster "$version" "$cluster" restart >&2
  fi
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -qAt -p "$port" "$@"
  else
    sudo -u postgres psql -X -v ON_ERROR_STOP=1 -qAt -p "$port" "$@"
  fi
}

# A random password kept in FILE (mode 0600), made once.
password() {
  local file=$1
  if [ ! -s "$file" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$file")
  fi
  cat "$file"
}

# ROLE with PASSWORD and the given attributes, created or brought up to date.
role() {
  local name=$1 pw=$2 attributes=$3
  as_postgres -v name="$name" -v pw="$pw" <<SQL >/dev/null
SELECT format('CREATE ROLE %I', :'name') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('ALTER ROLE %I LOGIN $attributes PASSWORD %L', :'name', :'pw') \gexec
SQL
}

case "${1:-}" in
  test-env)
    start
    pw=$(password "$dir/hearth_test.password")
    role hearth_test "$pw" "NOSUPERUSER CREATEDB NOCREATEROLE"
    echo "export HEARTH_TEST_POSTGRES='postgres://hearth_test@127.0.0.1:$port/postgres?sslmode=disable'"
    echo "export HEARTH_TEST_POSTGRES_PASSWORD_FILE='$dir/hearth_test.password'"
    ;;
  deployment)
    name=${2:?usage: postgres.sh deployment NAME}
    [[ $name =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || { echo "postgres.sh: NAME must be lower-case letters, digits and _" >&2; exit 1; }
    start
    pw=$(password "$dir/$name.password")
    role "$name" "$pw" "NOSUPERUSER NOCREATEDB NOCREATEROLE"
    as_postgres -v name="$name" <<'SQL' >/dev/null
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name') \gexec
SQL
    echo "--database 'postgres://$name@127.0.0.1:$port/$name?sslmode=disable' --database-password-file '$dir/$name.password'"
    ;;
  two-nodes)
    data=${2:-hearth-data}
    database=$(bash "$0" deployment hearth)
    hearth=${HEARTH:-$(cd "$(dirname "$0")/.." && pwd)/.build/debug/hearth}
    [ -x "$hearth" ] || { echo "postgres.sh: build first (swift build), or set HEARTH to the hearth binary" >&2; exit 1; }
    echo "postgres.sh: two nodes on $data, $database" >&2
    trap 'kill $(jobs -p) 2>/dev/null; wait' INT TERM EXIT
    for n in 0 1; do
      eval "\"$hearth\" serve --data \"$data\" $database --listen 127.0.0.1:$((8443 + n)) \
        --mqtt-listen 127.0.0.1:$((8883 + n)) --metrics-listen 127.0.0.1:$((9464 + n))" 2>&1 | sed -u "s/^/node $n: /" &
      sleep 2
    done
    wait
    ;;
  stop)
    # For the test that stops the database under load (DatabaseRestartTests): a fast shutdown, as
    # an operator's restart or a failover does.
    read -r version cluster port _ < <(pg_lsclusters -h | head -1)
    echo "postgres.sh: stopping PostgreSQL $version/$cluster" >&2
    pg_ctlcluster "$version" "$cluster" stop -m fast >&2
    ;;
  start)
    start
    ;;
  *)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
