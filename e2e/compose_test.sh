#!/usr/bin/env bash
# e2e/compose_test.sh: end-to-end test of the docker-compose demo cluster on this machine's
# Docker engine. .ci/run calls it when `docker info` answers.
#
#   bash e2e/compose_test.sh
#
# What it does, in order (each step fails the test with what it last saw):
#   1. builds the cohort image from a host-compiled static binary (scripts/image.sh, cached by
#      a content hash) and, unless COHORT_E2E_DB_IMAGE names one or mysql:8 is already local,
#      a MariaDB image from this host's Debian packages (e2e/mariadb-image.sh, also cached);
#   2. brings docker-compose.yml up under a unique project name, with fresh secrets in a temp
#      dir, and waits until every node is ready;
#   3. through each node's published port: /_cohort/health, /_cohort/ready, /_cohort/status
#      (one leader, three members), the demo counter with a cookie jar, shared files, the
#      leader-only job; inside a container: cohort status and cohort backup;
#   4. docker kill the leader's container: a new leader, the session's counter and the files
#      survive, jobs run on the new leader; the killed node restarts and catches up;
#   5. docker network disconnect a follower: it stops being ready, the majority keeps
#      writing; after connect it rejoins and catches up;
#   6. stops a follower gracefully (SIGTERM must end it, exit 0) and starts it again, as a
#      rolling upgrade does;
#   7. tears everything down (always, from a trap): compose down -v, temp dir.
# Parts whose endpoints are not in this build (demo, files, jobs) print SKIP and are passed over.
#
# Prints "SKIP: <reason>" and exits 0 when there is no Docker engine or no compose.
# Environment:
#   COHORT_E2E_PORTS="18181 18182 18183"   host ports of n1..n3 (127.0.0.1); unset and the
#                                          defaults taken: three free ports are picked
#   COHORT_E2E_DB_IMAGE=IMAGE              business DB image (default: mysql:8 when present
#                                          locally, else the MariaDB image built here)
#   COHORT_E2E_KEEP=1                      leave the cluster up on failure, to look at it
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
# shellcheck source=SCRIPTDIR/lib/compose.sh
source e2e/lib/compose.sh

# ---- preconditions: skip, with the reason, when this machine cannot run the test ----------
e2e_init compose_test e2e

# ---- 1. images ----------------------------------------------------------------------------
e2e_cohort_image
size=$(docker image inspect -f '{{.Size}}' "$COHORT_IMAGE")
user=$(docker image inspect -f '{{.Config.User}}' "$COHORT_IMAGE")
say "image $COHORT_IMAGE: $((size / 1024 / 1024)) MB, user $user"
[ "$size" -lt $((40 * 1024 * 1024)) ] || fail "image is $size bytes; it must stay under 40 MB"
case "$user" in "" | 0 | 0:* | root | root:*) fail "image runs as root (USER '$user')" ;; esac
e2e_db_image

# ---- 2. up ----------------------------------------------------------------------------------
e2e_up docker-compose.yml

# ---- 3. through every node -----------------------------------------------------------------
for id in "${ids[@]}"; do
	r=$(http "$id" GET /_cohort/health)
	[ "$(code_of "$r")" = 200 ] || fail "$id GET /_cohort/health: $r"
	r=$(http "$id" GET /_cohort/status)
	[ "$(code_of "$r")" = 401 ] || [ "$(code_of "$r")" = 403 ] || fail "$id GET /_cohort/status without token must be refused: $r"
	st=$(status_of "$id")
	n=$(jq '.members | length' <<<"$st" 2>/dev/null) || fail "$id /_cohort/status is not JSON: $st"
	[ "$n" = 3 ] || fail "$id sees $n members, want 3: $st"
	[ "$(jq -r .node_id <<<"$st")" = "$id" ] || fail "port ${port_of[$id]} answers as $(jq -r .node_id <<<"$st"), want $id"
done
leader=$(wait_for 30 "one leader agreed by all" all_agree_on_leader n1 n2 n3 && all_agree_on_leader n1 n2 n3)
say "leader: $leader"

# The CLI inside the container finds the node and the token by itself (COHORT_ADMIN_TOKEN_FILE).
out=$(docker exec "$(container n2)" /cohort status 2>&1) || fail "docker exec cohort2 /cohort status: $out"
grep -q "leader $leader" <<<"$out" || fail "cohort status inside cohort2 does not name leader $leader: $out"
docker exec "$(container n3)" /cohort backup - >"$work/backup.cbk" 2>"$work/backup.err" ||
	fail "cohort backup - inside cohort3: $(cat "$work/backup.err")"
[ "$(head -n 1 "$work/backup.cbk")" = "COHORT-BACKUP 2" ] || fail "cohort backup wrote no backup: $(head -c 200 "$work/backup.cbk")"
say "in-container CLI: status names $leader; backup of $(wc -c <"$work/backup.cbk") bytes"

# The demo counter, one session (cookie jar) across all three nodes.
demo=""
probe=$(http n1 GET /demo/api/counter)
if [ "$(code_of "$probe")" = 200 ]; then
	demo=1
else
	say "SKIP demo counter checks: GET /demo/api/counter answers $(code_of "$probe") (demo app not in this build)"
fi
count=0
counter() { # counter NODE METHOD: prints the count; checks the answer's shape
	local r
	r=$(http "$1" "$2" /demo/api/counter -b "$jar" -c "$jar")
	[ "$(code_of "$r")" = 200 ] || {
		echo "$1 $2 /demo/api/counter: $r"
		return 1
	}
	jq -er .count <<<"$(body_of "$r")" || {
		echo "$1 $2 /demo/api/counter: not {count}: $r"
		return 1
	}
}
if [ -n "$demo" ]; then
	r=$(http n1 GET /)
	[ "$(code_of "$r")" = 200 ] || fail "GET / (demo page) on n1: $(code_of "$r")"
	for id in "${ids[@]}"; do
		r=$(http "$id" GET /)
		[ "$(code_of "$r")" = 200 ] || fail "GET / (demo page) on $id: $(code_of "$r")"
		c=$(counter "$id" POST) || fail "$c"
		count=$((count + 1))
		[ "$c" = "$count" ] || fail "POST counter through $id gave $c, want $count (one session across nodes)"
	done
	for id in "${ids[@]}"; do
		c=$(counter "$id" GET) || fail "$c"
		[ "$c" = "$count" ] || fail "GET counter through $id gave $c, want $count"
	done
	say "demo counter: one session counted to $count through n1, n2, n3"
fi

# Shared files through the admin API.
files=""
payload="cohort e2e $(date -u +%s) $$"
r=$(admin n1 PUT /_cohort/api/files/e2e/hello.txt --data-binary "$payload")
case "$(code_of "$r")" in
2??) files=1 ;;
404 | 405 | 501) say "SKIP files checks: PUT /_cohort/api/files answers $(code_of "$r") (files API not in this build)" ;;
*) fail "PUT /_cohort/api/files/e2e/hello.txt on n1: $r" ;;
esac
file_is_there() {
	local r
	r=$(admin "$1" GET /_cohort/api/files/e2e/hello.txt)
	echo "$1: $r"
	[ "$(code_of "$r")" = 200 ] && [ "$(body_of "$r")" = "$payload" ]
}
if [ -n "$files" ]; then
	for id in "${ids[@]}"; do
		wait_for 30 "file e2e/hello.txt readable through $id" file_is_there "$id"
	done
	say "files: e2e/hello.txt written on n1, read back through n1, n2, n3"
fi

# Jobs: the demo's leader-only job.
jobs=""
r=$(admin n1 GET /_cohort/api/jobs)
if [ "$(code_of "$r")" = 200 ] && jq -e . >/dev/null 2>&1 <<<"$(body_of "$r")"; then
	jobs=1
else
	say "SKIP jobs checks: GET /_cohort/api/jobs answers $(code_of "$r") (jobs API not in this build)"
fi
# newest_run_node NODE: the node of the newest demo-tick run, as NODE's API reports it.
newest_run_node() {
	local r
	r=$(admin "$1" GET /_cohort/api/jobs/demo-tick/runs)
	[ "$(code_of "$r")" = 200 ] || {
		echo "runs: $r"
		return 1
	}
	body_of "$r" | jq -r '(if type == "array" then . else (.runs // []) end)
		| map(select(.node != null)) | max_by([.fence.term, .fence.index]) | .node // empty'
}
job_runs_on() { # job_runs_on ASKED WANT: the newest run was on WANT
	local n
	n=$(newest_run_node "$1") || {
		echo "$n"
		return 1
	}
	echo "newest demo-tick run on '$n', want $2"
	[ "$n" = "$2" ]
}
if [ -n "$jobs" ]; then
	wait_for 30 "demo-tick runs on the leader $leader" job_runs_on "$leader" "$leader"
	say "jobs: demo-tick runs on the leader $leader"
fi

# ---- 4. kill the leader --------------------------------------------------------------------
old=$leader
others=()
for id in "${ids[@]}"; do [ "$id" = "$old" ] || others+=("$id"); done
say "docker kill the leader's container ($old)"
docker kill "$(container "$old")" >/dev/null

new_leader() {
	local l
	l=$(all_agree_on_leader "${others[@]}") || {
		echo "$l"
		return 1
	}
	echo "$l"
	[ "$l" != "$old" ]
}
tk=$SECONDS
wait_for 30 "a new leader among ${others[*]}" new_leader
leader=$(all_agree_on_leader "${others[@]}")
say "new leader $leader after $((SECONDS - tk)) s"
for id in "${others[@]}"; do
	wait_for 30 "$id ready after the leader died" is_ready "$id"
done

if [ -n "$demo" ]; then
	for id in "${others[@]}"; do
		c=$(counter "$id" GET) || fail "$c"
		[ "$c" = "$count" ] || fail "after killing $old, GET counter through $id gave $c, want $count (session lost?)"
	done
	c=$(counter "${others[0]}" POST) || fail "$c"
	count=$((count + 1))
	[ "$c" = "$count" ] || fail "after killing $old, POST counter gave $c, want $count"
	say "session survived: counter $count through ${others[*]}"
fi
if [ -n "$files" ]; then
	for id in "${others[@]}"; do
		wait_for 30 "file readable through $id after the leader died" file_is_there "$id"
	done
	say "files survived"
fi
if [ -n "$jobs" ]; then
	wait_for 30 "demo-tick moved to the new leader $leader" job_runs_on "$leader" "$leader"
	say "jobs moved to $leader"
fi

say "restarting $old's container"
docker start "$(container "$old")" >/dev/null
wait_for 120 "$old ready again after restart" is_ready "$old"
wait_for 60 "$old caught up with the leader" caught_up "$old"
if [ -n "$demo" ]; then
	c=$(counter "$old" GET) || fail "$c"
	[ "$c" = "$count" ] || fail "restarted $old reads counter $c, want $count"
fi
say "$old is back, follows $(leader_seen_by "$old") and has caught up"

# ---- 5. partition a follower ---------------------------------------------------------------
for id in "${ids[@]}"; do
	if [ "$id" != "$leader" ]; then
		cut_off=$id
		break
	fi
done
majority=()
for id in "${ids[@]}"; do [ "$id" = "$cut_off" ] || majority+=("$id"); done
net=${project}_default
cid=$(container "$cut_off")
say "docker network disconnect $net from $cut_off"
docker network disconnect "$net" "$cid"

# The published port goes with the network, so ask the cut-off node from inside.
not_ready_inside() {
	if docker exec "$cid" /cohort healthcheck --timeout 3s 2>&1; then
		echo "$cut_off still says ready"
		return 1
	fi
	return 0
}
wait_for 45 "$cut_off notices it is cut off (not ready)" not_ready_inside
say "$cut_off is not ready while cut off"
for id in "${majority[@]}"; do
	wait_for 30 "$id stays ready with $cut_off gone" is_ready "$id"
done
# A POST that a majority node forwarded to the cut-off node (say, the owner of the
# session) before it noticed it gone has been sent and may have run there: the front
# answers 502 rather than run it twice. So the writes below wait until the majority
# marked the node down, as a client that retries after such an answer would.
sees_down() { # sees_down NODE: NODE's status marks $cut_off unhealthy
	status_of "$1" | jq -e --arg id "$cut_off" '.members[] | select(.id == $id) | .healthy == false' >/dev/null 2>&1
}
for id in "${majority[@]}"; do
	wait_for 30 "$id marks $cut_off down" sees_down "$id"
done
if [ -n "$demo" ]; then
	c=$(counter "${majority[0]}" POST) || fail "$c"
	count=$((count + 1))
	[ "$c" = "$count" ] || fail "majority POST counter gave $c, want $count"
fi
if [ -n "$files" ]; then
	r=$(admin "${majority[0]}" PUT /_cohort/api/files/e2e/partition.txt --data-binary "written while $cut_off was away")
	case "$(code_of "$r")" in 2??) ;; *) fail "PUT file on the majority: $r" ;; esac
fi
# What the majority committed while the node was away: after rejoining it must apply all of it.
want_commit=$(status_of "$leader" | jq -r .commit_index)

say "docker network connect $net to $cut_off"
docker network connect --alias "${service_of[$cut_off]}" "$net" "$cid"
wait_for 60 "$cut_off ready again after reconnect" is_ready "$cut_off"
rejoined() {
	local st l a
	st=$(status_of "$cut_off")
	l=$(jq -r .leader_id <<<"$st")
	a=$(jq -r .applied_index <<<"$st")
	echo "$cut_off: leader $l applied $a (want >= $want_commit)"
	[ -n "$l" ] && [ "$l" != null ] && [ "$a" -ge "$want_commit" ]
}
wait_for 60 "$cut_off rejoined and caught up" rejoined
wait_for 30 "all three agree on a leader after the partition healed" all_agree_on_leader n1 n2 n3
if [ -n "$demo" ]; then
	c=$(counter "$cut_off" GET) || fail "$c"
	[ "$c" = "$count" ] || fail "$cut_off reads counter $c after rejoining, want $count"
fi
if [ -n "$files" ]; then
	r=$(admin "$cut_off" GET /_cohort/api/files/e2e/partition.txt)
	[ "$(code_of "$r")" = 200 ] || fail "$cut_off cannot read the file written while it was away: $r"
fi
say "$cut_off rejoined: leader $(leader_seen_by "$cut_off"), caught up"

# ---- 6. a rolling restart: stop one node gracefully, start it again ------------------------
# What an upgrade does to each node in turn. SIGTERM must end the process by itself (exit 0)
# well within the stop timeout; docker kills it at the timeout (exit 137), which is a failure.
rolled=""
for id in "${ids[@]}"; do
	if [ "$id" != "$(all_agree_on_leader n1 n2 n3 2>/dev/null || true)" ]; then
		rolled=$id
		break
	fi
done
say "graceful stop of $rolled (compose stop -t 40)"
ts=$SECONDS
compose stop -t 40 "${service_of[$rolled]}" >/dev/null 2>&1
took=$((SECONDS - ts))
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$(container "$rolled")")
[ "$exit_code" = 0 ] || fail "$rolled did not shut down by itself on SIGTERM: exit code $exit_code after ${took}s (137 = killed at the stop timeout)"
say "$rolled stopped gracefully in ${took}s"
compose up -d --no-build "${service_of[$rolled]}" >/dev/null 2>&1 || fail "compose up -d ${service_of[$rolled]} failed"
wait_for 120 "$rolled ready after its restart" is_ready "$rolled"
wait_for 60 "$rolled caught up after its restart" caught_up "$rolled"
if [ -n "$demo" ]; then
	c=$(counter "$rolled" GET) || fail "$c"
	[ "$c" = "$count" ] || fail "$rolled reads counter $c after its restart, want $count"
fi
say "$rolled restarted and caught up"
