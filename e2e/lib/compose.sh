# shellcheck shell=bash
# e2e/lib/compose.sh: what the compose end-to-end tests share (e2e/compose_test.sh, the plain
# demo; e2e/compose_app_test.sh, the app variant). Source it from a script that has
# `set -euo pipefail`, then:
#
#   e2e_init NAME TAG [PREFIX]   checks the preconditions (skip when there is no Docker engine
#                                or no compose), picks three ports, makes the temp dir and sets
#                                the EXIT trap that tears everything down. NAME is the script's
#                                (e2e/NAME.sh, in SKIP lines), TAG starts every progress line;
#                                the ports come from ${PREFIX}_PORTS (default
#                                COHORT_E2E_PORTS), else 18181-18183 when free, else three
#                                free ones.
#   e2e_cohort_image             builds $COHORT_IMAGE (cohort:e2e) with scripts/image.sh
#   e2e_db_image                 sets COHORT_DB_IMAGE (COHORT_E2E_DB_IMAGE, mysql:8 when
#                                local, else e2e/mariadb-image.sh)
#   e2e_up FILE...               copies the compose FILEs into the temp dir, writes fresh
#                                secrets, brings the project up and waits until every node is
#                                ready and every container healthy (e2e_wait_all_ready)
#
# and the helpers below (http, admin, wait_for, is_ready, status_of, ...). Globals it sets:
# t0, project, work, jar, ports, ids, port_of, service_of, token, compose_cmd.

say() { printf '[%s %3ds] %s\n' "$e2e_name" "$((SECONDS - t0))" "$*"; }
skip() {
	printf 'SKIP: %s: %s\n' "$e2e_script" "$*"
	exit 0
}
fail() {
	printf '[%s %3ds] FAIL: %s\n' "$e2e_name" "$((SECONDS - t0))" "$*" >&2
	exit 1
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

e2e_init() {
	e2e_script=e2e/$1.sh
	e2e_name=$2
	local prefix=${3:-COHORT_E2E}
	local pvar=${prefix}_PORTS
	t0=$SECONDS

	command -v docker >/dev/null 2>&1 || skip "no docker command on PATH"
	timeout 60 docker info >/dev/null 2>&1 || skip "docker info fails: no Docker engine reachable"
	if timeout 30 docker compose version >/dev/null 2>&1; then
		compose_cmd=(docker compose)
	elif command -v docker-compose >/dev/null 2>&1; then
		compose_cmd=(docker-compose)
	else
		skip "neither 'docker compose' nor 'docker-compose' is installed"
	fi
	local tool
	for tool in curl jq; do
		command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed (apt-get install $tool)"
	done
	if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
		export PATH="/usr/local/go/bin:$PATH"
	fi
	if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
		export DOCKER_BUILDKIT=0
	fi

	read -r -a ports <<<"${!pvar:-18181 18182 18183}"
	[ "${#ports[@]}" -eq 3 ] || fail "$pvar needs three ports, got '${!pvar:-}'"
	if [ -z "${!pvar:-}" ] && { port_busy 18181 || port_busy 18182 || port_busy 18183; }; then
		# The defaults are taken (the compose demo, another run): three free ports instead.
		local i p
		for i in 0 1 2; do
			for _ in $(seq 1 50); do
				p=$((20000 + RANDOM % 12000))
				if ! port_busy "$p" && [[ " ${ports[*]:0:i} " != *" $p "* ]]; then
					ports[i]=$p
					break
				fi
			done
		done
	fi
	e2e_ports_var=$pvar
	project=cohort-e2e-$$
	work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-e2e.XXXXXX")
	# shellcheck disable=SC2034 # the cookie jar of the sourcing script
	jar=$work/cookies.txt
	compose_files=()

	ids=(n1 n2 n3)
	declare -gA port_of service_of
	local i
	for i in 0 1 2; do
		port_of[${ids[$i]}]=${ports[$i]}
		service_of[${ids[$i]}]=cohort$((i + 1))
	done

	trap e2e_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

compose() {
	local f args=()
	for f in "${compose_files[@]}"; do args+=(-f "$work/$f"); done
	"${compose_cmd[@]}" -p "$project" "${args[@]}" --project-directory "$work" "$@"
}

e2e_cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ "${#compose_files[@]}" -eq 0 ]; then # nothing was brought up
		rm -rf "$work"
		exit "$rc"
	fi
	if [ "$rc" -ne 0 ]; then
		say "failed; last log lines of every service:"
		compose logs --no-color --tail 30 2>&1 | tail -n 150 || true
		if [ -n "${COHORT_E2E_KEEP:-}" ]; then
			local f file_args=""
			for f in "${compose_files[@]}"; do file_args+=" -f $work/$f"; done
			say "COHORT_E2E_KEEP set: cluster $project left up; remove it with:"
			say "  ${compose_cmd[*]} -p $project$file_args down -v"
			exit "$rc"
		fi
	fi
	say "tearing down $project"
	compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
	# A network left behind by an interrupted down (containers still attached) goes too.
	docker network rm "${project}_default" >/dev/null 2>&1 || true
	rm -rf "$work"
	if [ "$rc" -eq 0 ]; then
		say "PASS in $((SECONDS - t0)) s"
	fi
	exit "$rc"
}

e2e_cohort_image() {
	export COHORT_IMAGE=cohort:e2e
	say "building $COHORT_IMAGE (scripts/image.sh)"
	# A build context of this run's own, so two runs at once do not share ./build/image.
	COHORT_IMAGE_BUILD_DIR=$work/image scripts/image.sh "$COHORT_IMAGE" || fail "scripts/image.sh failed"
}

e2e_db_image() {
	local db_image
	if [ -n "${COHORT_E2E_DB_IMAGE:-}" ]; then
		db_image=$COHORT_E2E_DB_IMAGE
	elif docker image inspect mysql:8 >/dev/null 2>&1; then
		db_image=mysql:8
	else
		say "no mysql:8 image here and no registry needed: building a MariaDB image from Debian packages"
		db_image=$(e2e/mariadb-image.sh) || fail "e2e/mariadb-image.sh failed"
	fi
	export COHORT_DB_IMAGE=$db_image
	say "business database image: $COHORT_DB_IMAGE"
}

e2e_up() {
	local f id p
	for f in "$@"; do
		cp "$f" "$work/$f"
		compose_files+=("$f")
	done
	scripts/compose-env.sh "$work" 2>/dev/null
	token=$(cat "$work/secrets/admin.token")
	export COHORT_PUBLISH_IP=127.0.0.1
	export COHORT_PORT1=${ports[0]} COHORT_PORT2=${ports[1]} COHORT_PORT3=${ports[2]}
	for p in "${ports[@]}"; do
		if port_busy "$p"; then
			fail "port $p on 127.0.0.1 is taken; pick others with $e2e_ports_var='P1 P2 P3'"
		fi
	done

	say "compose up (project $project, ${compose_files[*]}, ports ${ports[*]})"
	compose up -d --no-build >"$work/up.log" 2>&1 || {
		cat "$work/up.log" >&2
		fail "compose up failed"
	}
	e2e_wait_all_ready
}

# e2e_wait_all_ready: every node ready through its port, every container healthy.
e2e_wait_all_ready() {
	local id
	for id in "${ids[@]}"; do
		wait_for 240 "node $id ready through port ${port_of[$id]}" is_ready "$id"
	done
	say "all three nodes ready"
	for id in "${ids[@]}"; do
		wait_for 60 "container of $id healthy (HEALTHCHECK)" container_healthy "$id"
	done
	say "all three containers report healthy"
}

url() { echo "http://127.0.0.1:${port_of[$1]}$2"; }
container() { compose ps -q "${service_of[$1]}"; }

# http NODE METHOD PATH [curl args...]: prints "CODE BODY"; never fails the shell.
http() {
	local id=$1 method=$2 path=$3
	shift 3
	local out code
	out=$(curl -sS -m 10 -o "$work/body" -w '%{http_code}' -X "$method" "$@" "$(url "$id" "$path")" 2>"$work/curl.err") || true
	code=${out:-000}
	printf '%s %s' "$code" "$(head -c 1000000 "$work/body" 2>/dev/null || true)"
}
admin() { http "$1" "$2" "$3" -H "Authorization: Bearer $token" "${@:4}"; }
code_of() { echo "${1%% *}"; }
body_of() { echo "${1#* }"; }

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND every 0.5 s until it succeeds.
# COMMAND prints what it saw; the last of that goes into the failure message.
wait_for() {
	local limit=$1 what=$2
	shift 2
	local deadline=$((SECONDS + limit)) seen=""
	while :; do
		if seen=$("$@" 2>&1); then
			return 0
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail "$what: not within ${limit}s; last seen: ${seen:0:800}"
		fi
		sleep 0.5
	done
}

is_ready() {
	local r
	r=$(http "$1" GET /_cohort/ready)
	echo "$1: $r"
	[ "$(code_of "$r")" = 200 ]
}
status_of() { body_of "$(admin "$1" GET /_cohort/status)"; }
leader_seen_by() { status_of "$1" | jq -r '.leader_id // empty' 2>/dev/null; }

# all_agree_on_leader NODE...: every NODE names the same non-empty leader; prints it.
all_agree_on_leader() {
	local id l first=""
	for id in "$@"; do
		l=$(leader_seen_by "$id")
		if [ -z "$l" ] || { [ -n "$first" ] && [ "$l" != "$first" ]; }; then
			echo "leaders seen: $(for j in "$@"; do printf '%s->%s ' "$j" "$(leader_seen_by "$j")"; done)"
			return 1
		fi
		first=$l
	done
	echo "$first"
}

container_healthy() {
	local s
	s=$(docker inspect -f '{{.State.Health.Status}}' "$(container "$1")")
	echo "$1 container health: $s"
	[ "$s" = healthy ]
}

# caught_up NODE: NODE has applied at least what the leader ($leader) had committed.
# shellcheck disable=SC2154 # leader: set by the sourcing script
caught_up() {
	local want got
	want=$(status_of "$leader" | jq -r .commit_index)
	got=$(status_of "$1" | jq -r .applied_index)
	echo "$1 applied $got, leader $leader committed $want"
	[ -n "$want" ] && [ -n "$got" ] && [ "$want" != null ] && [ "$got" != null ] && [ "$got" -ge "$want" ]
}
