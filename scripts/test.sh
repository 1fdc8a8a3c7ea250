#!/usr/bin/env bash
# Runs the whole test suite against PostgreSQL, MariaDB/MySQL and SQLite.
#
# It starts the local database servers when they are down (where it can), checks that
# each is reachable, and runs gofmt, go vet, staticcheck and `go test -race` on every
# module of the repository. Outside CI an unreachable server is reported loudly and its
# tests are skipped; under CI=true it is a failure.
#
# Servers: AM_POSTGRES_DSN (default host=127.0.0.1 port=5432 user=postgres dbname=test)
#          AM_MYSQL_DSN    (default root:@tcp(127.0.0.1:3306)/)
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
for m in $modules; do
  say "go test -race ($m)"
  (cd "$m" && go test -race -count=1 -p 1 -timeout 15m ./... 2>&1) || fail "go test in $m"
done

if [ -n "$missing" ]; then
  red "!!! Reminder: tests needing$missing were SKIPPED."
fi
[ $status -eq 0 ] && say "all checks passed" || red "some checks failed"
exit $status
