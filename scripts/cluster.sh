#!/usr/bin/env bash
# scripts/cluster.sh: three cohort nodes on this machine (127.0.0.1), each with its own ports
# and data dir, bootstrapped with --peers, sharing one business database.
#
#   scripts/cluster.sh up        build ./cohort, start the database and the three nodes, wait
#                                until every node is ready, print the URLs and the commands
#   scripts/cluster.sh status    processes, readiness and `cohort status` of the cluster
#   scripts/cluster.sh down      stop the nodes (graceful, then KILL after 30 s) and the
#                                MariaDB started here; data stays for the next `up`
#   scripts/cluster.sh purge     down, then delete ./data/cluster
#
# Everything lives under ./data/cluster/ (COHORT_CLUSTER_DIR): cluster.key and admin.token
# (generated once), n1/ n2/ n3/ (node data dirs), logs/, run/ (pid files), mariadb/.
#
# The business database must be ONE database all nodes share (the dev-mode SQLite file is
# per node, so it cannot serve a cluster). In order of preference:
#   COHORT_DB_DSN=DSN            a MySQL 8 / MariaDB you run, e.g.
#                                'cohort:secret@tcp(127.0.0.1:3306)/cohort?parseTime=true'
#   a private MariaDB            started here from the installed mariadbd (installed with apt
#                                when missing and running as root), data in ./data/cluster/mariadb
# With neither, `up` stops and says how to get one.
#
# Ports (environment):
#   COHORT_CLUSTER_HTTP_PORTS="8081 8082 8083"   public fronts of n1 n2 n3
#   COHORT_CLUSTER_RAFT_PORTS="7071 7072 7073"   cluster ports of n1 n2 n3
#   COHORT_CLUSTER_DB_PORT=3307                  the private MariaDB
#   COHORT_BIN=PATH                              run this binary instead of building ./cohort
#
# Every other COHORT_* variable reaches the nodes as their flag would (COHORT_BALANCE,
# COHORT_LOG_LEVEL, ...). With COHORT_PUBLIC_TLS_CERT_FILE and COHORT_PUBLIC_TLS_KEY_FILE the
# public ports speak TLS: this script then checks them over https (without verifying the
# certificate: it only asks a local node whether it is ready) and runs `cohort status` with
# SSL_CERT_FILE set to the certificate, which Go trusts in addition to the system's CAs.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
# shellcheck source=SCRIPTDIR/lib/mariadb.sh
source scripts/lib/mariadb.sh

dir=${COHORT_CLUSTER_DIR:-$root/data/cluster}
read -r -a http_ports <<<"${COHORT_CLUSTER_HTTP_PORTS:-8081 8082 8083}"
read -r -a raft_ports <<<"${COHORT_CLUSTER_RAFT_PORTS:-7071 7072 7073}"
db_port=${COHORT_CLUSTER_DB_PORT:-3307}
ids=(n1 n2 n3)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
	printf 'cluster: %s\n' "$*" >&2
	exit 1
}

[ "${#http_ports[@]}" -eq 3 ] || die "COHORT_CLUSTER_HTTP_PORTS needs three ports"
[ "${#raft_ports[@]}" -eq 3 ] || die "COHORT_CLUSTER_RAFT_PORTS needs three ports"

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

peers() {
	local i out=""
	for i in 0 1 2; do
		out+="${out:+,}${ids[$i]}=127.0.0.1:${raft_ports[$i]}"
	done
	echo "$out"
}

# pid_of NAME: the pid recorded for NAME, if that process still runs the command we started.
pid_of() {
	local f=$dir/run/$1.pid pid cmd
	[ -r "$f" ] || return 1
	pid=$(cat "$f")
	_cohort_pid_alive "$pid" || return 1
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	case "$cmd" in
	*"$dir"*) echo "$pid" ;;
	*) return 1 ;;
	esac
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- the business database ---------------------------------------------------------------

db_dsn() {
	if [ -n "${COHORT_DB_DSN:-}" ]; then
		echo "$COHORT_DB_DSN"
		return
	fi
	echo "cohort:$(cat "$dir/mariadb/cohort.password")@tcp(127.0.0.1:$db_port)/cohort?parseTime=true"
}

no_database() {
	cat >&2 <<MSG
cluster: a cohort cluster needs ONE business database that every node shares (MySQL 8 or
cluster: MariaDB); the dev-mode SQLite file is per node and cannot serve a cluster.
cluster: Either
cluster:   - install MariaDB here (sudo apt-get install mariadb-server) and run this again:
cluster:     it starts a private server on 127.0.0.1:$db_port with its data in $dir/mariadb; or
cluster:   - point the nodes at a MySQL you run:
cluster:       COHORT_DB_DSN='cohort:secret@tcp(127.0.0.1:3306)/cohort?parseTime=true' $0 up
cluster:     e.g. a container: docker run -d --name cohort-mysql -p 127.0.0.1:3306:3306 \\
cluster:       -e MYSQL_DATABASE=cohort -e MYSQL_USER=cohort -e MYSQL_PASSWORD=secret \\
cluster:       -e MYSQL_RANDOM_ROOT_PASSWORD=yes mysql:8
MSG
	exit 1
}

start_mariadb() {
	if [ -n "${COHORT_DB_DSN:-}" ]; then
		log "business database: COHORT_DB_DSN from the environment"
		return
	fi
	if pid_of mariadb >/dev/null; then
		log "MariaDB already running (pid $(pid_of mariadb), 127.0.0.1:$db_port)"
		return
	fi
	_cohort_mdb_install || no_database
	local mariadbd install_db client admin
	mariadbd=$(_cohort_mdb_bin mariadbd) || no_database
	install_db=$(_cohort_mdb_bin mariadb-install-db) || no_database
	client=$(_cohort_mdb_bin mariadb) || no_database
	admin=$(_cohort_mdb_bin mariadb-admin) || no_database

	local m=$dir/mariadb userflag=()
	if [ "$EUID" -eq 0 ]; then
		userflag=(--user=root) # mariadbd refuses to run as root without it
	fi
	mkdir -p "$m"
	local fresh=""
	if [ ! -d "$m/data/mysql" ]; then
		log "initialising MariaDB in $m/data"
		"$install_db" --no-defaults "${userflag[@]}" --datadir="$m/data" \
			--auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
			>"$m/install-db.log" 2>&1 || {
			cat "$m/install-db.log" >&2
			die "mariadb-install-db failed"
		}
		fresh=1
	fi
	port_busy "$db_port" && die "127.0.0.1:$db_port is taken; pick another with COHORT_CLUSTER_DB_PORT"
	# The unix socket path must stay short (~107 bytes): keep it in /tmp when the dir is deep.
	local sock=$m/mysql.sock
	if [ "${#sock}" -gt 100 ]; then
		sock=/tmp/cohort-cluster-$EUID-$db_port.sock
	fi
	echo "$sock" >"$m/socket.path"
	mkdir -p "$dir/run"
	setsid "$mariadbd" --no-defaults "${userflag[@]}" \
		--datadir="$m/data" --socket="$sock" --pid-file="$m/mariadbd.pid" \
		--log-error="$m/error.log" --tmpdir="$m" \
		--bind-address=127.0.0.1 --port="$db_port" --skip-name-resolve \
		--character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
		--max-connections=500 </dev/null >>"$m/error.log" 2>&1 &
	echo $! >"$dir/run/mariadb.pid"
	local deadline=$((SECONDS + 60))
	until "$admin" --no-defaults --protocol=socket --socket="$sock" -uroot --connect-timeout=2 ping >/dev/null 2>&1; do
		pid_of mariadb >/dev/null || {
			tail -n 30 "$m/error.log" >&2
			die "mariadbd exited during start (log: $m/error.log)"
		}
		[ "$SECONDS" -lt "$deadline" ] || die "mariadbd did not answer within 60 s (log: $m/error.log)"
		sleep 0.2
	done
	if [ -n "$fresh" ] || [ ! -s "$m/cohort.password" ]; then
		local pw
		pw=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
		(umask 077 && echo "$pw" >"$m/cohort.password")
		"$client" --no-defaults --protocol=socket --socket="$sock" -uroot >/dev/null <<SQL || die "creating the cohort database and user failed"
CREATE DATABASE IF NOT EXISTS cohort CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE OR REPLACE USER 'cohort'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON cohort.* TO 'cohort'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
	fi
	log "MariaDB on 127.0.0.1:$db_port (pid $(pid_of mariadb), data $m/data)"
}

stop_mariadb() {
	local pid
	pid=$(pid_of mariadb) || return 0
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + 30))
	while _cohort_pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
	if _cohort_pid_alive "$pid"; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/run/mariadb.pid"
	log "MariaDB stopped"
}

# ---- the nodes -----------------------------------------------------------------------------

binary() {
	if [ -n "${COHORT_BIN:-}" ]; then
		echo "$COHORT_BIN"
		return
	fi
	command -v go >/dev/null 2>&1 || die "go not found: install Go, or set COHORT_BIN to a cohort binary"
	log "go build -o ./cohort ."
	CGO_ENABLED=0 go build -o "$root/cohort" . || die "go build failed"
	echo "$root/cohort"
}

secrets() {
	(
		umask 077
		[ -s "$dir/cluster.key" ] || head -c 32 /dev/urandom | base64 >"$dir/cluster.key"
		[ -s "$dir/admin.token" ] || head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' >"$dir/admin.token"
	)
}

# node_args I: the flags of node I (0-based), as the README spells them.
node_args() {
	local i=$1
	printf '%s\n' serve --node-id "${ids[$i]}" --data-dir "$dir/${ids[$i]}" \
		--http-addr "127.0.0.1:${http_ports[$i]}" --cluster-addr "127.0.0.1:${raft_ports[$i]}" \
		--peers "$(peers)" --cluster-key-file "$dir/cluster.key" --admin-token-file "$dir/admin.token"
}

# The public ports' scheme: https when the nodes get a public certificate.
scheme=http
if [ -n "${COHORT_PUBLIC_TLS_CERT_FILE:-}" ]; then
	scheme=https
fi

# cohort_cli runs the CLI, trusting the public certificate when there is one.
cohort_cli() {
	if [ "$scheme" = https ]; then
		SSL_CERT_FILE=$COHORT_PUBLIC_TLS_CERT_FILE "$@"
	else
		"$@"
	fi
}

ready() { curl -fsS -k -m 3 -o /dev/null "$scheme://127.0.0.1:$1/_cohort/ready" 2>/dev/null; }

up() {
	command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"
	mkdir -p "$dir/run" "$dir/logs"
	local bin i id pid
	bin=$(binary)
	secrets
	start_mariadb
	local dsn
	dsn=$(db_dsn)
	for i in 0 1 2; do
		id=${ids[$i]}
		if pid=$(pid_of "$id"); then
			log "$id already running (pid $pid)"
			continue
		fi
		for p in "${http_ports[$i]}" "${raft_ports[$i]}"; do
			port_busy "$p" && die "127.0.0.1:$p (for $id) is taken; choose ports with COHORT_CLUSTER_HTTP_PORTS / COHORT_CLUSTER_RAFT_PORTS"
		done
		mapfile -t args < <(node_args "$i")
		# The DSN holds a password: pass it in the environment, not on the command line.
		COHORT_DB_DSN=$dsn setsid "$bin" "${args[@]}" </dev/null >>"$dir/logs/$id.log" 2>&1 &
		echo $! >"$dir/run/$id.pid"
		log "$id started (pid $!, log $dir/logs/$id.log)"
	done
	local deadline=$((SECONDS + 90))
	for i in 0 1 2; do
		until ready "${http_ports[$i]}"; do
			pid_of "${ids[$i]}" >/dev/null || {
				tail -n 20 "$dir/logs/${ids[$i]}.log" >&2
				die "${ids[$i]} exited (log: $dir/logs/${ids[$i]}.log)"
			}
			if [ "$SECONDS" -ge "$deadline" ]; then
				curl -sS -k -m 3 "$scheme://127.0.0.1:${http_ports[$i]}/_cohort/ready" >&2 || true
				die "${ids[$i]} not ready within 90 s (log: $dir/logs/${ids[$i]}.log)"
			fi
			sleep 0.3
		done
	done
	cat <<MSG

cohort cluster is up: three nodes on 127.0.0.1, data under $dir
  n1: $scheme://127.0.0.1:${http_ports[0]}/   n2: $scheme://127.0.0.1:${http_ports[1]}/   n3: $scheme://127.0.0.1:${http_ports[2]}/
  status:  ${COHORT_PUBLIC_TLS_CERT_FILE:+SSL_CERT_FILE=$COHORT_PUBLIC_TLS_CERT_FILE }$bin status --addr $scheme://127.0.0.1:${http_ports[0]} --token-file $dir/admin.token
  console: $scheme://127.0.0.1:${http_ports[0]}/_cohort/ui/  (admin token in $dir/admin.token)
  stop:    $0 down

The same three nodes by hand (on three machines, put each machine's address in place of
127.0.0.1 and copy cluster.key and admin.token to every machine); COHORT_DB_DSN names the
shared database:
MSG
	for i in 0 1 2; do
		mapfile -t args < <(node_args "$i")
		printf '  cohort'
		printf ' %s' "${args[@]}"
		printf '\n'
	done
	echo
}

down() {
	local id pid pids=()
	for id in "${ids[@]}"; do
		if pid=$(pid_of "$id"); then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
	done
	local deadline=$((SECONDS + 30))
	for pid in "${pids[@]}"; do
		while _cohort_pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
		if _cohort_pid_alive "$pid"; then
			log "pid $pid ignored SIGTERM for 30 s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for id in "${ids[@]}"; do rm -f "$dir/run/$id.pid"; done
	log "nodes stopped (${#pids[@]} were running)"
	stop_mariadb
}

status() {
	local i id pid state
	for i in 0 1 2; do
		id=${ids[$i]}
		if pid=$(pid_of "$id"); then
			if ready "${http_ports[$i]}"; then state=ready; else state="running, not ready"; fi
			printf '%s  pid %-7s http 127.0.0.1:%s  cluster 127.0.0.1:%s  %s\n' "$id" "$pid" "${http_ports[$i]}" "${raft_ports[$i]}" "$state"
		else
			printf '%s  stopped\n' "$id"
		fi
	done
	if pid=$(pid_of mariadb); then
		printf 'mariadb  pid %-7s 127.0.0.1:%s\n' "$pid" "$db_port"
	fi
	local bin=${COHORT_BIN:-$root/cohort}
	for i in 0 1 2; do
		if pid_of "${ids[$i]}" >/dev/null && [ -x "$bin" ]; then
			echo
			cohort_cli "$bin" status --addr "$scheme://127.0.0.1:${http_ports[$i]}" --token-file "$dir/admin.token" || true
			return 0
		fi
	done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
purge)
	down
	rm -rf "$dir"
	log "removed $dir"
	;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
	;;
esac
