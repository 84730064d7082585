#!/usr/bin/env bash
# e2e/compose_app_test.sh: end-to-end test of the compose demo's app variant
# (docker-compose.yml + docker-compose.app.yml [+ docker-compose.python.yml]) on this
# machine's Docker engine: three cohort containers, each supervising the PHP example app
# (examples/php, php-cli from this host's Debian packages), then the Python one, in upstream
# mode, its sessions in cohort's Redis-protocol store, the shared directory FUSE-mounted at
# /shared in every container. .ci/run calls it after e2e/compose_test.sh when `docker info`
# answers.
#
#   bash e2e/compose_app_test.sh
#
# What it does, in order (each step fails the test with what it last saw), all from outside
# with curl through the published ports unless said otherwise:
#   1. builds cohort:e2e (scripts/image.sh) and cohort-php:e2e and cohort-python:e2e on it
#      (scripts/app-image.sh: PHP, Python from Debian packages, docker import, cached by
#      content hash), and the DB image;
#   2. brings the variant up with fresh secrets under a unique project name, waits until
#      every node is ready and healthy; in every container the mount is there
#      (/proc/mounts, /_cohort/status) and the app runs, as www-data;
#   3. login and a counter with a cookie jar, through n1, n2 and n3: one session, served by one
#      node, stored in the kv store;
#   4. an upload through n1 (no cookie: n1's app writes it) is read back, the same bytes,
#      through n3 (n3's app reads its own mount) and is in n2's mount (docker exec);
#   5. docker kill of the container serving the session while a loop POSTs the counter through
#      the other two: every acknowledged increment is counted (0 lost), the session stays on
#      one live node; the killed container starts again and its mount has the upload;
#   6. kill -9 of the app's PHP process inside the container now serving the session: cohort
#      restarts it (new pid, restarts + 1), the node is ready again, the session's counter
#      reads the same, and the killed app's orphans were reaped (no zombie);
#   7. switches the variant to the Python example (docker-compose.python.yml on top; the
#      containers are recreated, the cluster and its volumes stay): python3 runs as www-data
#      in every container, a session counts across the nodes on one node, an upload through
#      n1 is read through n3, and the PHP app's upload is still there for the Python app;
#   8. tears everything down (always, from a trap).
#
# Prints "SKIP: e2e/compose_app_test.sh: <reason>" and exits 0 when there is no Docker engine,
# no compose, or no /dev/fuse on this machine.
# Environment:
#   COHORT_E2E_APP_PORTS="P1 P2 P3"   host ports of n1..n3 (default as e2e/compose_test.sh)
#   COHORT_E2E_PHP_IMAGE=IMAGE        the PHP app image to test (e.g. one built with
#                                     Dockerfile.app); default: cohort-php:e2e, built by
#                                     scripts/app-image.sh php on cohort:e2e
#   COHORT_E2E_PYTHON_IMAGE=IMAGE     the same for the Python app (cohort-python:e2e)
#   COHORT_E2E_DB_IMAGE=IMAGE         business DB image (as e2e/compose_test.sh)
#   COHORT_E2E_KEEP=1                 leave the cluster up on failure, to look at it
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
# shellcheck source=SCRIPTDIR/lib/compose.sh
source e2e/lib/compose.sh

# ---- preconditions ----------------------------------------------------------------------------
[ -e /dev/fuse ] || {
	printf 'SKIP: e2e/compose_app_test.sh: no /dev/fuse on this machine: the app variant FUSE-mounts the shared directory (modprobe fuse; in a container --device /dev/fuse --cap-add SYS_ADMIN)\n'
	exit 0
}
e2e_init compose_app_test e2e-app COHORT_E2E_APP
# scripts/app-image.sh installs the interpreters it copies when root; others need them.
if [ "$EUID" -ne 0 ] && { ! command -v php >/dev/null 2>&1 || ! grep -qx redis <<<"$(php -m 2>/dev/null)" ||
	! /usr/bin/python3 -c 'import redis' >/dev/null 2>&1; }; then
	[ -n "${CI:-}" ] && fail "php-cli, php-redis and python3-redis are needed to build the app images"
	skip "php-cli, php-redis or python3-redis missing and not root to install them (apt-get install php-cli php-redis python3-redis)"
fi

# ---- 1. images --------------------------------------------------------------------------------
# app_image VAR GIVEN APP: the image of APP in VAR (COHORT_APP_IMAGE, COHORT_PYTHON_IMAGE, as
# the compose files read them): the image GIVEN names, else cohort-APP:e2e, built here.
cohort_built=""
app_image() {
	local var=$1 given=$2 app=$3
	if [ -n "${!given:-}" ]; then
		docker image inspect "${!given}" >/dev/null 2>&1 || fail "$given: no image ${!given}"
		export "$var=${!given}"
		say "$app image: ${!given} ($given)"
		return
	fi
	if [ -z "$cohort_built" ]; then
		e2e_cohort_image
		cohort_built=1
	fi
	export "$var=cohort-$app:e2e"
	say "building cohort-$app:e2e (scripts/app-image.sh $app)"
	scripts/app-image.sh "$app" "cohort-$app:e2e" || fail "scripts/app-image.sh $app failed"
}
app_image COHORT_APP_IMAGE COHORT_E2E_PHP_IMAGE php
app_image COHORT_PYTHON_IMAGE COHORT_E2E_PYTHON_IMAGE python
e2e_db_image

# ---- 2. up ------------------------------------------------------------------------------------
e2e_up docker-compose.yml docker-compose.app.yml

# app_pid NODE: the pid of the app's process group leader (cohort's guard shell), from status.
app_pid() { status_of "$1" | jq -r '.app.process.pid // empty'; }
# app_proc NODE PROG: the pid of the app's process PROG (php, python3) in NODE's container: the
# child of the guard shell (php -S's workers are its children).
app_proc() {
	local g
	g=$(app_pid "$1")
	[ -n "$g" ] || return 1
	# shellcheck disable=SC2016 # expanded in the container
	docker exec "$(container "$1")" sh -c 'for p in $(pidof '"$2"'); do set -- $(cat /proc/$p/stat); [ "$4" = "'"$g"'" ] && echo "$p"; done; true'
}
# check_containers PROG: in every container /shared is a cohort FUSE mount, and the app's PROG
# runs under cohort, as www-data.
check_containers() {
	local id c st m u
	for id in "${ids[@]}"; do
		c=$(container "$id")
		docker exec "$c" grep -q ' /shared fuse.cohort ' /proc/mounts ||
			fail "$id: /shared is not a cohort FUSE mount in its container: $(docker exec "$c" cat /proc/mounts | grep shared)"
		st=$(status_of "$id")
		[ "$(jq -r '.files_mount.mounted' <<<"$st")" = true ] || fail "$id status: files mount not mounted: $(jq -c .files_mount <<<"$st")"
		[ "$(jq -r '.app.process.state' <<<"$st")" = running ] || fail "$id status: app not running: $(jq -c .app <<<"$st")"
		m=$(app_proc "$id" "$1")
		[ -n "$m" ] || fail "$id: no $1 process under the app's guard $(app_pid "$id")"
		u=$(docker exec "$c" stat -c %U "/proc/$m")
		[ "$u" = www-data ] || fail "$id: the app ($1) runs as '$u', want www-data"
	done
	say "every container: /shared mounted (fuse.cohort), $1 running as www-data under cohort"
}
check_containers php

# ---- 3. one session across the three nodes -------------------------------------------------
json() { jq -er "$2" <<<"$(body_of "$1")" 2>/dev/null; }
r=$(http n1 POST /login -b "$jar" -c "$jar" -d user=e2e)
[ "$(code_of "$r")" = 200 ] && [ "$(json "$r" .user)" = e2e ] || fail "POST /login through n1: $r"
owner=$(json "$r" .node)
[ "$(json "$r" .store)" = redis ] || fail "the app keeps its sessions in '$(json "$r" .store)', want redis (cohort's store)"
count=0
for id in n1 n2 n3 n1 n2 n3; do
	r=$(http "$id" POST /counter -b "$jar" -c "$jar")
	[ "$(code_of "$r")" = 200 ] || fail "POST /counter through $id: $r"
	count=$((count + 1))
	[ "$(json "$r" .count)" = "$count" ] || fail "POST /counter through $id counted $(json "$r" .count), want $count: $r"
	[ "$(json "$r" .user)" = e2e ] || fail "POST /counter through $id lost the login: $r"
	[ "$(json "$r" .node)" = "$owner" ] || fail "POST /counter through $id served by $(json "$r" .node), want the session's node $owner"
done
say "session of user e2e: counted to $count through n1, n2, n3, every request served by $owner"

# ---- 4. an upload through n1, read through n3 ------------------------------------------------
name=e2e-upload-$$.bin
head -c 300000 /dev/urandom >"$work/$name"
sum=$(sha256sum <"$work/$name" | cut -d' ' -f1)
r=$(http n1 POST /upload -F "file=@$work/$name")
[ "$(code_of "$r")" = 200 ] && [ "$(json "$r" .size)" = 300000 ] || fail "POST /upload through n1: $r"
[ "$(json "$r" .node)" = n1 ] || fail "the upload through n1 (no session) was served by $(json "$r" .node)"
read_back() { # read_back NODE: the app on NODE (no cookie: served there) returns the bytes
	local code
	code=$(curl -sS -m 10 -o "$work/read.bin" -w '%{http_code}' "$(url "$1" "/files/$name")" 2>&1) || true
	local got
	got=$(sha256sum <"$work/read.bin" | cut -d' ' -f1)
	echo "GET /files/$name through $1: HTTP $code, sha256 $got (want $sum)"
	[ "$code" = 200 ] && [ "$got" = "$sum" ]
}
in_mount() { # in_mount NODE: the file is in NODE's mount, the same bytes
	local got
	got=$(docker exec "$(container "$1")" sha256sum "/shared/$name" 2>&1 | cut -d' ' -f1)
	echo "$1:/shared/$name sha256 $got (want $sum)"
	[ "$got" = "$sum" ]
}
wait_for 15 "upload of n1 read through n3's app" read_back n3
wait_for 15 "upload of n1 in n2's mount" in_mount n2
say "upload: 300000 bytes through n1's app, the same bytes through n3's app and in n2's /shared"

# ---- 5. docker kill of the session's node under a POST loop ----------------------------------
survivors=()
for id in "${ids[@]}"; do [ "$id" = "$owner" ] || survivors+=("$id"); done
loop_log=$work/loop.log
: >"$loop_log"
post_loop() { # POSTs the counter through the survivors in turn until $work/stop exists
	local i=0 out
	# It also ends with this script (a failed check) and after 3000 requests.
	while [ ! -e "$work/stop" ] && kill -0 $$ 2>/dev/null && [ "$i" -lt 3000 ]; do
		out=$(curl -sS -m 15 -o "$work/loop.body" -w '%{http_code}' -X POST -b "$jar" -c "$jar" \
			"$(url "${survivors[$((i % 2))]}" /counter)" 2>/dev/null) || true
		if [ "${out:-000}" = 200 ]; then
			printf '200 %s\n' "$(jq -c '[.count, .node]' "$work/loop.body" 2>/dev/null || echo '[null,null]')"
		else
			printf '%s %s\n' "${out:-000}" "$(head -c 200 "$work/loop.body" 2>/dev/null | tr -s '\n' ' ')"
		fi >>"$loop_log"
		i=$((i + 1))
	done
}
lines() { wc -l <"$loop_log"; }
at_least() { # at_least N: the loop has answered N requests
	echo "$(lines) answers, want $1"
	[ "$(lines)" -ge "$1" ]
}
post_loop &
loop_pid=$!
wait_for 30 "the POST loop's first answers" at_least 10
say "docker kill the session's node $owner (the loop POSTs through ${survivors[*]})"
docker kill "$(container "$owner")" >/dev/null
killed_at=$(lines)
wait_for 60 "30 answers after the kill" at_least $((killed_at + 30))
touch "$work/stop"
wait "$loop_pid"

acked=$(grep -c '^200 ' "$loop_log" || true)
failed=$(grep -vc '^200 ' "$loop_log" || true)
prev=$count
while read -r code ans; do # the acknowledged counts only grow
	[ "$code" = 200 ] || continue
	c=$(jq -r '.[0]' <<<"$ans")
	[ "$c" -gt "$prev" ] || fail "an acknowledged increment answered $c after $prev: $(cat "$loop_log")"
	prev=$c
done <"$loop_log"
r=$(http "${survivors[0]}" GET /counter -b "$jar" -c "$jar")
[ "$(code_of "$r")" = 200 ] || fail "GET /counter through ${survivors[0]} after the kill: $r"
final=$(json "$r" .count)
lost=$((count + acked - final))
say "loop: $(lines) POSTs ($acked acknowledged, $failed failed, $killed_at before the kill); counter $count -> $final"
if [ "$failed" -gt 0 ]; then # allowed: an increment of unknown outcome, checked below
	say "failed POSTs (count, answer): $(grep -v '^200 ' "$loop_log" | sort | uniq -c | tr '\n' ';')"
fi
[ "$final" -ge $((count + acked)) ] || fail "$lost acknowledged increments lost: counter $final, want $((count + acked)): $(cat "$loop_log")"
[ "$final" -le $((count + acked + failed)) ] || fail "counter $final is above the $((count + acked + failed)) requests sent"
[ "$(json "$r" .user)" = e2e ] || fail "the session lost its login after the kill: $r"
new_owner=$(json "$r" .node)
[ "$new_owner" != "$owner" ] || fail "GET /counter answered by the killed node $owner: $r"
last10=$(tail -n 10 "$loop_log")
[ "$(grep -c '^200 ' <<<"$last10")" = 10 ] || fail "the last 10 POSTs, long after the kill, did not all succeed: $last10"
tail_nodes=$(cut -d' ' -f2- <<<"$last10" | jq -r '.[1]' | sort -u | tr '\n' ' ')
[ "$tail_nodes" = "$new_owner " ] || fail "the last 10 answers came from '$tail_nodes', want only $new_owner (one node per session)"
count=$final
say "session survived the kill of $owner: counter $count, 0 lost increments, now served by $new_owner"

say "starting $owner's container again"
docker start "$(container "$owner")" >/dev/null
wait_for 120 "$owner ready after its restart" is_ready "$owner"
wait_for 30 "the upload in $owner's mount after its restart" in_mount "$owner"
say "$owner is back, its /shared has the upload"

# ---- 6. kill -9 of the app inside a container ------------------------------------------------
target=$new_owner
c=$(container "$target")
st=$(status_of "$target")
guard=$(jq -r '.app.process.pid' <<<"$st")
restarts=$(jq -r '.app.process.restarts' <<<"$st")
m=$(app_proc "$target" php)
[ -n "$m" ] || fail "$target: no php -S process under the app's guard $guard"
say "kill -9 of php -S (pid $m) inside $target's container"
docker exec "$c" sh -c "kill -9 $m"
restarted() {
	local st
	st=$(status_of "$target")
	echo "$target app: $(jq -c '.app | {healthy, process: (.process | {state, pid, restarts, last_exit})}' <<<"$st")"
	[ "$(jq -r '.app.process.restarts' <<<"$st")" -gt "$restarts" ] &&
		[ "$(jq -r '.app.process.pid' <<<"$st")" != "$guard" ] &&
		[ "$(jq -r '.app.process.state' <<<"$st")" = running ] &&
		[ "$(jq -r '.app.healthy' <<<"$st")" = true ]
}
wait_for 30 "cohort restarts the app on $target" restarted
wait_for 30 "$target ready after its app restarted" is_ready "$target"
last_exit=$(status_of "$target" | jq -r '.app.process.last_exit')
m2=$(app_proc "$target" php)
[ -n "$m2" ] && [ "$m2" != "$m" ] || fail "$target: php -S is not running again (master '$m2', killed $m)"
r=$(http "$target" GET /counter -b "$jar" -c "$jar")
[ "$(code_of "$r")" = 200 ] && [ "$(json "$r" .count)" = "$count" ] || fail "after the app restart, GET /counter through $target: $r (want count $count)"
no_zombies() {
	local z
	# shellcheck disable=SC2016 # expanded in the container
	z=$(docker exec "$c" sh -c 'for s in /proc/[0-9]*/stat; do set -- $(cat "$s" 2>/dev/null); [ "${3:-}" = Z ] && echo "$1$2"; done; true' | tr '\n' ' ')
	echo "zombies in $target's container: ${z:-none}"
	[ -z "$z" ]
}
wait_for 10 "the killed app's orphans reaped" no_zombies
say "app on $target restarted by cohort (php -S $m -> $m2, last exit: $last_exit); the session reads $count; no zombie"

# ---- 7. the Python example instead ------------------------------------------------------------
php_name=$name php_sum=$sum
cp docker-compose.python.yml "$work/"
compose_files+=(docker-compose.python.yml)
say "switching to the Python example (+ docker-compose.python.yml, $COHORT_PYTHON_IMAGE)"
compose up -d --no-build >"$work/up.log" 2>&1 || {
	cat "$work/up.log" >&2
	fail "compose up with docker-compose.python.yml failed"
}
e2e_wait_all_ready
check_containers python3
pyjar=$work/python-cookies.txt
owner=""
n=0
for id in n1 n2 n3 n1 n2 n3; do
	r=$(http "$id" POST /counter -b "$pyjar" -c "$pyjar")
	[ "$(code_of "$r")" = 200 ] || fail "Python app: POST /counter through $id: $r"
	n=$((n + 1))
	[ "$(json "$r" .count)" = "$n" ] || fail "Python app: POST /counter through $id counted $(json "$r" .count), want $n: $r"
	[ "$(json "$r" .store)" = redis ] || fail "Python app keeps its sessions in '$(json "$r" .store)', want redis: $r"
	owner=${owner:-$(json "$r" .node)}
	[ "$(json "$r" .node)" = "$owner" ] || fail "Python app: POST /counter through $id served by $(json "$r" .node), want the session's node $owner"
done
say "Python app: one session counted to $n through n1, n2, n3, every request served by $owner"
name=e2e-python-upload-$$.bin
head -c 200000 /dev/urandom >"$work/$name"
sum=$(sha256sum <"$work/$name" | cut -d' ' -f1)
r=$(http n1 POST /upload -F "file=@$work/$name")
[ "$(code_of "$r")" = 200 ] && [ "$(json "$r" .size)" = 200000 ] && [ "$(json "$r" .node)" = n1 ] ||
	fail "Python app: POST /upload through n1: $r"
wait_for 15 "the Python app's upload through n1 read through n3" read_back n3
wait_for 15 "the Python app's upload in n2's mount" in_mount n2
name=$php_name sum=$php_sum
wait_for 15 "the PHP app's upload read by the Python app on n2" read_back n2
say "Python app: 200000 bytes uploaded through n1 read through n3 and in n2's /shared; the PHP app's upload reads the same through n2"
