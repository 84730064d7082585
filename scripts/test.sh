#!/usr/bin/env bash
# scripts/test.sh: the project's one test command (CI runs it through .ci/run).
#
#   ./scripts/test.sh                     gofmt check, go vet (root and bench modules, and the root
#                                         module for macOS, where cohort dev must build), then
#                                         every test: go test -race -count=1 -timeout 25m ./...
#                                         and the bench module's tests (cd bench; go test ./...)
#   ./scripts/test.sh ARGS...             same checks, then go test -race -count=1 ARGS...
#                                         e.g. ./scripts/test.sh -run TestElection ./raft/
#                                         (package paths are relative to the repository root;
#                                         with ARGS, go test's own 10m default timeout applies
#                                         unless ARGS has -timeout)
#
# Before the tests it makes sure a MariaDB, a headless Chromium and php-cli are there, installing them
# with apt when missing (root only; as another user install them yourself or skip them):
#
#   COHORT_TEST_MYSQL_DSN=DSN  use this MySQL/MariaDB (go-sql-driver DSN, e.g.
#                              'u:p@tcp(127.0.0.1:3306)/db?parseTime=true'); the user needs to
#                              create databases. Unset: a private mariadbd is started on a free
#                              127.0.0.1 port with its data in a temp dir, and stopped (and its
#                              data removed) when this script exits. A server this script did
#                              not start is never stopped.
#   COHORT_SKIP_MYSQL=1        no MariaDB: COHORT_TEST_MYSQL_DSN is unset, tests that need it skip.
#   COHORT_CHROMIUM=PATH       use this Chromium/Chrome executable.
#   COHORT_SKIP_BROWSER=1      no Chromium: COHORT_CHROMIUM is unset, browser tests skip.
#   COHORT_SKIP_KV_CLIENTS=1   do not install redis-cli, python3-redis/-pymemcache, php-redis/-memcached;
#                              the kv tests that drive them skip.
#   COHORT_LONG=1              long modes (soak, longer fuzzing); only read by the tests. Raises
#                              the default go test timeout to 120m.
#   COHORT_TEST_TIMEOUT=DUR    go test -timeout when no ARGS are given (default 25m).
#   COHORT_SKIP_FUZZ=1         skip the short run of every fuzz target (scripts/fuzz.sh)
#   COHORT_FUZZTIME=DUR        how long each fuzz target runs (default 3s)
#
# The tests see COHORT_TEST_MYSQL_DSN, COHORT_CHROMIUM, COHORT_SKIP_MYSQL, COHORT_SKIP_BROWSER,
# COHORT_LONG, and for a MariaDB started here also COHORT_MARIADB_PID, COHORT_MARIADB_DIR,
# COHORT_MARIADB_PORT and COHORT_MARIADB_SOCKET (root, no password, over the unix socket).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"

# shellcheck source=SCRIPTDIR/lib/mariadb.sh
source scripts/lib/mariadb.sh
# shellcheck source=SCRIPTDIR/lib/chromium.sh
source scripts/lib/chromium.sh
# shellcheck source=SCRIPTDIR/lib/apps.sh
source scripts/lib/apps.sh
# shellcheck source=SCRIPTDIR/lib/fuse.sh
source scripts/lib/fuse.sh
# shellcheck source=SCRIPTDIR/lib/kvclients.sh
source scripts/lib/kvclients.sh

# Stop only the MariaDB started below (cohort_stop_mariadb ignores any other). Turning INT
# and TERM into exit makes the EXIT trap run on Ctrl-C and on a CI cancel too.
trap cohort_stop_mariadb EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n==> %s\n' "$*" >&2; }
die() {
	printf 'test.sh: %s\n' "$*" >&2
	exit 1
}

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || die "go not found on PATH (nor in /usr/local/go/bin)"

# Pass the switches on to the tests even when they were set without export.
for v in COHORT_SKIP_MYSQL COHORT_SKIP_BROWSER COHORT_SKIP_KV_CLIENTS COHORT_LONG; do
	if [ -n "${!v:-}" ]; then
		export "${v?}"
	fi
done

step "gofmt -l ."
if ! unformatted=$(gofmt -l .); then
	die "gofmt failed (see above)"
fi
if [ -n "$unformatted" ]; then
	printf '%s\n' "$unformatted" >&2
	die "the files above are not gofmt-ed: run gofmt -w on them"
fi

step "go vet ./... (root module and bench/, its own module)"
go vet ./...
(cd bench && go vet ./...)
step "GOOS=darwin go vet ./... (a developer's Mac runs cohort dev; everything but the files mount builds there)"
GOOS=darwin GOARCH=arm64 go vet ./...

# -race needs cgo, and cgo a C compiler; a minimal Debian has none.
cc=$(go env CC)
if ! command -v "${cc%% *}" >/dev/null 2>&1; then
	if [ "$EUID" -ne 0 ]; then
		die "go test -race needs a C compiler ($cc): install gcc (apt-get install gcc libc6-dev)"
	fi
	step "installing gcc and libc6-dev for go test -race"
	cohort_apt_install gcc libc6-dev || die "apt-get install gcc libc6-dev failed"
fi

if [ "${COHORT_SKIP_MYSQL:-}" = 1 ]; then
	step "MariaDB: skipped (COHORT_SKIP_MYSQL=1)"
	unset COHORT_TEST_MYSQL_DSN
elif [ -n "${COHORT_TEST_MYSQL_DSN:-}" ]; then
	step "MariaDB: using COHORT_TEST_MYSQL_DSN from the environment"
	export COHORT_TEST_MYSQL_DSN
else
	step "MariaDB: starting a private server"
	cohort_ensure_mariadb || die "no MariaDB for the tests (set COHORT_TEST_MYSQL_DSN, or COHORT_SKIP_MYSQL=1)"
fi

step "FUSE (fuse3) for the files mount tests"
cohort_ensure_fuse || die "no fuse3 for the files mount tests (apt-get install fuse3)"

if [ "${COHORT_SKIP_BROWSER:-}" = 1 ]; then
	step "Chromium: skipped (COHORT_SKIP_BROWSER=1)"
	unset COHORT_CHROMIUM
else
	step "Chromium"
	cohort_ensure_chromium || die "no Chromium for the browser tests (set COHORT_CHROMIUM, or COHORT_SKIP_BROWSER=1)"
	printf 'COHORT_CHROMIUM=%s\n' "$COHORT_CHROMIUM" >&2
fi

step "php-cli (example apps of the upstream mode)"
cohort_ensure_app_runtimes || printf 'test.sh: no php-cli: the PHP app tests skip (fail under CI)\n' >&2
if [ "${COHORT_SKIP_KV_CLIENTS:-}" = 1 ]; then
	step "Redis/memcached clients: skipped (COHORT_SKIP_KV_CLIENTS=1)"
else
	step "Redis/memcached clients (redis-cli, python3-redis, python3-pymemcache, php-redis, php-memcached)"
	cohort_ensure_kv_clients || die "the kv tests need these clients (or COHORT_SKIP_KV_CLIENTS=1)"
fi

if [ "$#" -gt 0 ]; then
	args=("$@")
else
	timeout=25m
	if [ -n "${COHORT_LONG:-}" ] && [ "${COHORT_LONG}" != 0 ]; then
		timeout=120m
	fi
	args=(-timeout "${COHORT_TEST_TIMEOUT:-$timeout}" ./...)
fi

step "go test -race -count=1 ${args[*]}"
t0=$SECONDS
if go test -race -count=1 "${args[@]}" && { [ "$#" -gt 0 ] || (cd bench && go test -race -count=1 ./...); }; then
	step "tests passed in $((SECONDS - t0)) s"
else
	rc=$?
	step "tests FAILED (exit $rc) after $((SECONDS - t0)) s"
	exit "$rc"
fi

# Every fuzz target briefly, unless asked for specific tests or skipped.
if [ "$#" -eq 0 ] && [ "${COHORT_SKIP_FUZZ:-0}" != 1 ]; then
	step "fuzz targets (${COHORT_FUZZTIME:-3s} each; COHORT_SKIP_FUZZ=1 skips)"
	t0=$SECONDS
	./scripts/fuzz.sh
	step "fuzzing passed in $((SECONDS - t0)) s"
fi
