# shellcheck shell=bash
# scripts/lib/mariadb.sh: a private, throw-away MariaDB for the tests.
#
# Source this file, then:
#
#   cohort_ensure_mariadb   install mariadb-server when missing (root only, via apt), start a
#                           private mariadbd on a free 127.0.0.1 port with its data in a temp
#                           dir, create database cohort_test and user cohort/cohort with ALL
#                           privileges on *.*, and export:
#                             COHORT_TEST_MYSQL_DSN  cohort:cohort@tcp(127.0.0.1:PORT)/cohort_test?parseTime=true
#                             COHORT_MARIADB_PID     pid of the mariadbd started here
#                             COHORT_MARIADB_DIR     its temp dir (data/, mysql.sock, error.log)
#                             COHORT_MARIADB_PORT    its TCP port
#                             COHORT_MARIADB_SOCKET  its unix socket (root, no password)
#   cohort_stop_mariadb     stop that mariadbd and remove its dir; never touches a server this
#                           shell did not start (the system service, another run's server).
#
# The server runs with --no-defaults, so no /etc/mysql config applies: utf8mb4, no binlog,
# relaxed durability (it is a test database), max_connections 1000.
#
# Both functions check every step themselves and return non-zero on failure; they do not
# rely on the caller's `set -e` (which bash disables inside `f || ...`).

_cohort_mdb_log() { printf 'mariadb: %s\n' "$*" >&2; }

# _cohort_mdb_bin NAME...: print the path of the first NAME found on PATH or in /usr/sbin,
# /usr/bin; return 1 if none.
_cohort_mdb_bin() {
	local n
	for n in "$@"; do
		if command -v "$n" >/dev/null 2>&1; then
			command -v "$n"
			return 0
		fi
		if [ -x "/usr/sbin/$n" ]; then
			echo "/usr/sbin/$n"
			return 0
		fi
		if [ -x "/usr/bin/$n" ]; then
			echo "/usr/bin/$n"
			return 0
		fi
	done
	return 1
}

# cohort_apt_install (the shared installer) comes from scripts/lib/apt.sh.
# shellcheck source=SCRIPTDIR/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

# _cohort_pid_alive PID: true while PID exists and is not a zombie.
_cohort_pid_alive() {
	local stat
	[ -n "${1:-}" ] || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != "Z" ]
}

# _cohort_free_port: print a TCP port on 127.0.0.1 that nothing listens on right now.
_cohort_free_port() {
	local p _
	if command -v python3 >/dev/null 2>&1; then
		if p=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' 2>/dev/null) && [ -n "$p" ]; then
			echo "$p"
			return 0
		fi
	fi
	# No python3: probe random ports below the kernel's ephemeral range (32768+), so a
	# port picked here cannot be taken by an outgoing connection or a test's :0 listener.
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# _cohort_mdb_install: make sure mariadbd, mariadb-install-db, mariadb and mariadb-admin exist.
_cohort_mdb_install() {
	if _cohort_mdb_bin mariadbd >/dev/null && _cohort_mdb_bin mariadb-install-db >/dev/null &&
		_cohort_mdb_bin mariadb >/dev/null && _cohort_mdb_bin mariadb-admin >/dev/null; then
		return 0
	fi
	if [ "$EUID" -ne 0 ]; then
		_cohort_mdb_log "MariaDB is not installed and this is not root, so it cannot be installed here."
		_cohort_mdb_log "Install it (sudo apt-get install mariadb-server mariadb-client), or point the tests"
		_cohort_mdb_log "at a server with COHORT_TEST_MYSQL_DSN='user:pass@tcp(host:port)/db?parseTime=true',"
		_cohort_mdb_log "or skip the MySQL tests with COHORT_SKIP_MYSQL=1."
		return 1
	fi
	_cohort_mdb_log "installing mariadb-server and mariadb-client with apt-get"
	if ! cohort_apt_install mariadb-server mariadb-client; then
		_cohort_mdb_log "apt-get install mariadb-server mariadb-client failed"
		return 1
	fi
	if ! _cohort_mdb_bin mariadbd >/dev/null; then
		_cohort_mdb_log "mariadbd still not found after installing mariadb-server"
		return 1
	fi
	return 0
}

# cohort_ensure_mariadb: see the header.
cohort_ensure_mariadb() {
	if [ -n "${_COHORT_MARIADB_STARTED:-}" ] && _cohort_pid_alive "${COHORT_MARIADB_PID:-}"; then
		return 0 # already running, started by this shell
	fi
	local t0=$SECONDS
	_cohort_mdb_install || return 1

	local mariadbd install_db client admin
	mariadbd=$(_cohort_mdb_bin mariadbd) || return 1
	install_db=$(_cohort_mdb_bin mariadb-install-db) || return 1
	client=$(_cohort_mdb_bin mariadb) || return 1
	admin=$(_cohort_mdb_bin mariadb-admin) || return 1

	# The unix socket path must stay under ~107 bytes: fall back to /tmp for a long TMPDIR.
	local base=${TMPDIR:-/tmp}
	if [ "${#base}" -gt 60 ] || [ ! -d "$base" ]; then
		base=/tmp
	fi
	local dir
	dir=$(mktemp -d "$base/cohort-mariadb.XXXXXX") || return 1
	local sock=$dir/mysql.sock
	local userflag=()
	if [ "$EUID" -eq 0 ]; then
		userflag=(--user=root) # mariadbd refuses to run as root without it
	fi

	if ! "$install_db" --no-defaults "${userflag[@]}" --datadir="$dir/data" \
		--auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
		>"$dir/install-db.log" 2>&1; then
		_cohort_mdb_log "mariadb-install-db failed:"
		cat "$dir/install-db.log" >&2
		rm -rf "$dir"
		return 1
	fi

	local attempt port pid="" up=""
	for attempt in 1 2 3; do
		if ! port=$(_cohort_free_port); then
			_cohort_mdb_log "found no free TCP port on 127.0.0.1"
			break
		fi
		: >"$dir/error.log"
		"$mariadbd" --no-defaults "${userflag[@]}" \
			--datadir="$dir/data" --socket="$sock" --pid-file="$dir/mariadbd.pid" \
			--log-error="$dir/error.log" --tmpdir="$dir" \
			--bind-address=127.0.0.1 --port="$port" --skip-name-resolve \
			--character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
			--max-connections=1000 \
			--innodb-flush-log-at-trx-commit=2 --innodb-doublewrite=0 --sync-binlog=0 \
			</dev/null >>"$dir/error.log" 2>&1 &
		pid=$!

		# Wait until it answers on its socket, at most 60 s; give up early if it exits.
		local deadline=$((SECONDS + 60))
		while [ "$SECONDS" -lt "$deadline" ]; do
			if ! _cohort_pid_alive "$pid"; then
				break
			fi
			if "$admin" --no-defaults --protocol=socket --socket="$sock" -uroot \
				--connect-timeout=2 ping >/dev/null 2>&1; then
				up=1
				break
			fi
			sleep 0.1
		done
		if [ -n "$up" ]; then
			break
		fi
		if _cohort_pid_alive "$pid"; then
			_cohort_mdb_log "mariadbd (pid $pid) did not answer within 60 s; its log:"
			tail -n 40 "$dir/error.log" >&2
			kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
			pid=""
			break
		fi
		wait "$pid" 2>/dev/null || true
		pid=""
		if grep -qiE 'address already in use|errno: 98' "$dir/error.log"; then
			_cohort_mdb_log "port $port was taken meanwhile, trying another (attempt $attempt)"
			continue
		fi
		_cohort_mdb_log "mariadbd exited during start; its log:"
		tail -n 40 "$dir/error.log" >&2
		break
	done
	if [ -z "$up" ]; then
		if [ -n "$pid" ]; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -rf "$dir"
		return 1
	fi

	# From here on the server is ours: record it so cohort_stop_mariadb can clean up.
	_COHORT_MARIADB_STARTED=1
	export COHORT_MARIADB_PID=$pid COHORT_MARIADB_DIR=$dir
	export COHORT_MARIADB_PORT=$port COHORT_MARIADB_SOCKET=$sock

	if ! "$client" --no-defaults --protocol=socket --socket="$sock" -uroot >/dev/null 2>"$dir/setup.err" <<'SQL'; then
CREATE DATABASE IF NOT EXISTS cohort_test CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'cohort'@'127.0.0.1' IDENTIFIED BY 'cohort';
CREATE USER IF NOT EXISTS 'cohort'@'localhost' IDENTIFIED BY 'cohort';
GRANT ALL PRIVILEGES ON *.* TO 'cohort'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'cohort'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
		_cohort_mdb_log "creating database and user failed:"
		cat "$dir/setup.err" >&2
		cohort_stop_mariadb
		return 1
	fi
	# Prove the DSN's credentials work over TCP, as the tests will connect.
	local version
	if ! version=$("$client" --no-defaults --protocol=tcp -h127.0.0.1 -P"$port" -ucohort -pcohort \
		-N -B -e 'SELECT VERSION()' cohort_test 2>"$dir/setup.err"); then
		_cohort_mdb_log "cannot log in as cohort over TCP:"
		cat "$dir/setup.err" >&2
		cohort_stop_mariadb
		return 1
	fi

	_COHORT_MARIADB_DSN="cohort:cohort@tcp(127.0.0.1:$port)/cohort_test?parseTime=true"
	export COHORT_TEST_MYSQL_DSN=$_COHORT_MARIADB_DSN
	_cohort_mdb_log "MariaDB $version ready on 127.0.0.1:$port (pid $pid, dir $dir) in $((SECONDS - t0)) s"
	return 0
}

# cohort_stop_mariadb: stop the server cohort_ensure_mariadb started in this shell, remove its
# dir, unset its variables (and COHORT_TEST_MYSQL_DSN if it still names that server).
# Does nothing when this shell started none. Always returns 0.
cohort_stop_mariadb() {
	if [ -z "${_COHORT_MARIADB_STARTED:-}" ]; then
		return 0
	fi
	local pid=${COHORT_MARIADB_PID:-} dir=${COHORT_MARIADB_DIR:-} cmd=""
	# Only signal the pid if it still is our mariadbd (its command line names our dir).
	if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
		cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || cmd=""
	fi
	if [ -n "$dir" ] && _cohort_pid_alive "$pid" && [[ $cmd == *"--datadir=$dir/data "* ]]; then
		kill -TERM "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + 30))
		while _cohort_pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
			sleep 0.1
		done
		if _cohort_pid_alive "$pid"; then
			_cohort_mdb_log "mariadbd (pid $pid) ignored SIGTERM for 30 s, killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	fi
	case "$dir" in
	*/cohort-mariadb.*) rm -rf "$dir" ;;
	esac
	if [ "${COHORT_TEST_MYSQL_DSN:-}" = "${_COHORT_MARIADB_DSN:-}" ]; then
		unset COHORT_TEST_MYSQL_DSN
	fi
	unset _COHORT_MARIADB_STARTED _COHORT_MARIADB_DSN COHORT_MARIADB_PID COHORT_MARIADB_DIR
	unset COHORT_MARIADB_PORT COHORT_MARIADB_SOCKET
	return 0
}
