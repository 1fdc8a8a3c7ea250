#!/usr/bin/env bash
# Runs the whole test suite against PostgreSQL, MariaDB/MySQL and SQLite.
#
# It starts the local database servers when they are down (where it can), checks that
# each is reachable, and runs gofmt, go vet, staticcheck and `go test -race` on every
# module of the repository. Outside CI an unreachable server is reported loudly and its
# tests are skipped; under CI=true it is a failure.
#
# Servers: AM_POSTGRES_DSN  (default host=127.0.0.1 port=5432 user=postgres dbname=test)
#          AM_MYSQL_DSN     (default root:@tcp(127.0.0.1:3306)/)
#          AM_PGBOUNCER_DSN (default: a PgBouncer in transaction mode that this script
#                            starts on a free port, in front of 127.0.0.1:5432)
#          AM_CHROMIUM      (default /usr/bin/chromium, installed when missing)
set -uo pipefail
cd "$(dirname "$0")/.."

red() { printf '\033[1;31m%s\033[0m\n' "$*"; }
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

export CGO_ENABLED=1 # the SQLite driver needs cgo

# 1. Database servers: start them if they are down and this machine has them.
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
my_up() { (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; }
if [ -z "${AM_POSTGRES_DSN:-}" ] && ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if [ -z "${AM_MYSQL_DSN:-}" ] && ! my_up && [ -x /usr/sbin/mariadbd ]; then
  say "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
for _ in $(seq 1 30); do
  { [ -n "${AM_POSTGRES_DSN:-}" ] || pg_up; } && { [ -n "${AM_MYSQL_DSN:-}" ] || my_up; } && break
  sleep 1
done
missing=""
[ -n "${AM_POSTGRES_DSN:-}" ] || pg_up || missing="$missing PostgreSQL(127.0.0.1:5432)"
[ -n "${AM_MYSQL_DSN:-}" ] || my_up || missing="$missing MariaDB(127.0.0.1:3306)"
if [ -n "$missing" ]; then
  red "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  red "!!! NOT REACHABLE:$missing"
  if [ "${CI:-}" = "true" ]; then
    red "!!! CI=true: an unreachable database is a failure."
    exit 1
  fi
  red "!!! Their tests will be SKIPPED; only the rest runs."
  red "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
fi

# 1d. NATS JetStream for ./natsrelay (127.0.0.1:4222; AM_NATS_URL to use another server):
# installed (Debian's nats-server, as root) and started when down; unreachable is a
# failure under CI=true.
nats_up() { (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; }
if [ -z "${AM_NATS_URL:-}" ] && ! nats_up; then
  if [ ! -x /usr/sbin/nats-server ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    say "installing nats-server (apt-get)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server; } >/tmp/am-nats-apt.log 2>&1 || true
  fi
  if [ -x /usr/sbin/nats-server ]; then
    say "starting nats-server (JetStream)"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
    for _ in $(seq 1 30); do nats_up && break; sleep 0.5; done
  fi
  if ! nats_up; then
    red "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    red "!!! NOT REACHABLE: NATS JetStream (127.0.0.1:4222)"
    if [ "${CI:-}" = "true" ]; then
      red "!!! CI=true: an unreachable NATS is a failure."
      exit 1
    fi
    red "!!! The natsrelay tests will be SKIPPED."
    red "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    missing="$missing NATS"
  fi
fi

# 1b. PgBouncer in transaction mode, in front of the local PostgreSQL, for the pooler test
# (TestPgBouncerTransactionMode reads AM_PGBOUNCER_DSN). It is installed when missing (as
# root, from the distribution: Debian's pgbouncer package) and started on a free port with
# a config of its own in a temp dir; it is stopped when the script ends.
pgbouncer_problem=""
start_pgbouncer() {
  if ! command -v pgbouncer >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      say "installing pgbouncer (apt-get)"
      { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer; } >/tmp/am-pgbouncer-apt.log 2>&1 ||
        { pgbouncer_problem="apt-get install pgbouncer failed (see /tmp/am-pgbouncer-apt.log)"; return 1; }
    else
      pgbouncer_problem="pgbouncer is not installed (apt-get install pgbouncer, as root)"
      return 1
    fi
  fi
  pgb_dir=$(mktemp -d /tmp/am-pgbouncer.XXXXXX)
  printf '"postgres" ""\n' >"$pgb_dir/users.txt"
  local as_user=()
  if [ "$(id -u)" = "0" ]; then
    # PgBouncer refuses to run as root.
    id postgres >/dev/null 2>&1 || { pgbouncer_problem="running as root and there is no postgres user to run pgbouncer as"; return 1; }
    chown postgres "$pgb_dir"
    as_user=(-u postgres)
  fi
  local port
  for port in $(shuf -i 20000-29999 -n 10); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue # taken
    cat >"$pgb_dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $pgb_dir/users.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
logfile = $pgb_dir/pgbouncer.log
pidfile = $pgb_dir/pgbouncer.pid
INI
    chmod a+r "$pgb_dir"/*
    pgbouncer -d "${as_user[@]}" "$pgb_dir/pgbouncer.ini" >>"$pgb_dir/start.log" 2>&1 || continue
    for _ in $(seq 1 50); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && {
        export AM_PGBOUNCER_DSN="host=127.0.0.1 port=$port user=postgres sslmode=disable"
        say "PgBouncer $(pgbouncer --version | head -n1) (transaction mode) on 127.0.0.1:$port, config in $pgb_dir"
        return 0
      }
      sleep 0.1
    done
    stop_pgbouncer
  done
  pgbouncer_problem="pgbouncer did not start: $(tail -n 3 "$pgb_dir/start.log" "$pgb_dir/pgbouncer.log" 2>/dev/null | tr '\n' ' ')"
  return 1
}
stop_pgbouncer() {
  if [ -n "${pgb_dir:-}" ] && [ -s "$pgb_dir/pgbouncer.pid" ]; then
    kill "$(cat "$pgb_dir/pgbouncer.pid")" 2>/dev/null || true
    rm -f "$pgb_dir/pgbouncer.pid"
  fi
}
cleanup_pgbouncer() {
  stop_pgbouncer
  [ -z "${pgb_dir:-}" ] || rm -rf "$pgb_dir"
}
if [ -z "${AM_PGBOUNCER_DSN:-}" ]; then
  trap cleanup_pgbouncer EXIT
  if ! start_pgbouncer; then
    red "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    red "!!! NO PGBOUNCER: $pgbouncer_problem"
    if [ "${CI:-}" = "true" ]; then
      red "!!! CI=true: a PgBouncer that cannot be installed or started is a failure."
      exit 1
    fi
    red "!!! The PgBouncer test will be SKIPPED."
    red "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    missing="$missing PgBouncer"
  fi
fi

# 1c. Headless Chromium for the dashboard's browser tests (dashboard/browsertest finds it
# through AM_CHROMIUM, default /usr/bin/chromium). Installed when missing (as root, from
# the distribution: Debian's chromium package).
if [ -z "${AM_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  chromium_problem="chromium is not installed (apt-get install chromium, as root)"
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium (apt-get)"
    if { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } >/tmp/am-chromium-apt.log 2>&1; then
      chromium_problem=""
    else
      chromium_problem="apt-get install chromium failed (see /tmp/am-chromium-apt.log)"
    fi
  fi
  if [ -n "$chromium_problem" ]; then
    red "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    red "!!! NO CHROMIUM: $chromium_problem"
    if [ "${CI:-}" = "true" ]; then
      red "!!! CI=true: a browser that cannot be installed is a failure."
      exit 1
    fi
    red "!!! The dashboard's browser tests will be SKIPPED."
    red "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    missing="$missing Chromium"
  fi
fi

status=0
fail() { red "FAILED: $*"; status=1; }

# 2. Static checks.
modules=$(find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)
say "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$unformatted" ] || fail "not gofmt-formatted: $unformatted"
STATICCHECK_VERSION=v0.8.2
if ! command -v staticcheck >/dev/null 2>&1; then
  say "installing staticcheck $STATICCHECK_VERSION"
  go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" >/dev/null 2>&1 ||
    go install honnef.co/go/tools/cmd/staticcheck@latest || fail "could not install staticcheck"
  export PATH="$PATH:$(go env GOPATH)/bin"
fi
for m in $modules; do
  say "go vet + staticcheck ($m)"
  (cd "$m" && go vet ./...) || fail "go vet in $m"
  if command -v staticcheck >/dev/null 2>&1; then
    (cd "$m" && staticcheck ./...) || fail "staticcheck in $m"
  fi
done

# 3. Tests, with the race detector, on every module.
# The root package's conformance tests wait on databases, not on the CPU: -parallel 8 runs
# eight of them at a time instead of GOMAXPROCS (about 30 server connections at the peak,
# of PostgreSQL's default 100). The module's other packages (reliability/ kills processes
# and fills backlogs) keep the default.
for m in $modules; do
  say "go test -race ($m)"
  if [ "$m" = "." ]; then
    root=$(go list .)
    others=$(go list ./... | grep -vx "$root")
    { go test -race -count=1 -parallel 8 -timeout 15m . 2>&1 &&
      go test -race -count=1 -p 1 -timeout 15m $others 2>&1; } || fail "go test in $m"
  else
    (cd "$m" && go test -race -count=1 -p 1 -timeout 15m ./... 2>&1) || fail "go test in $m"
  fi
done

if [ -n "$missing" ]; then
  red "!!! Reminder: tests needing$missing were SKIPPED."
fi
[ $status -eq 0 ] && say "all checks passed" || red "some checks failed"
exit $status
