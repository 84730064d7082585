# shellcheck shell=bash
# scripts/lib/kvclients.sh: the real Redis and memcached clients the kv tests drive.
#
# Source this file (after scripts/lib/mariadb.sh, whose _cohort_apt_install it uses), then:
#
#   cohort_ensure_kv_clients  install, when missing (root only, via apt), Debian's
#                             redis-tools (redis-cli), python3-redis and python3-pymemcache
#                             (for /usr/bin/python3), php-cli, php-redis and php-memcached.
#
# The tests look for these themselves and skip with a message when one is missing and CI is
# not set. The function returns non-zero when something is missing and cannot be installed.

_cohort_kvc_log() { printf 'kv clients: %s\n' "$*" >&2; }

# _cohort_kvc_missing: print the Debian packages whose client is missing.
_cohort_kvc_missing() {
	command -v redis-cli >/dev/null 2>&1 || echo redis-tools
	if [ ! -x /usr/bin/python3 ]; then
		echo python3 python3-redis python3-pymemcache
	else
		/usr/bin/python3 -c 'import redis' >/dev/null 2>&1 || echo python3-redis
		/usr/bin/python3 -c 'import pymemcache' >/dev/null 2>&1 || echo python3-pymemcache
	fi
	if ! command -v php >/dev/null 2>&1; then
		echo php-cli php-redis php-memcached
	else
		# Not `php -m | grep -q`: php writes its list a line at a time, and
		# under pipefail its SIGPIPE after grep's early exit read as a missing
		# module (a third of the checks on a loaded machine).
		local mods
		mods=$(php -m 2>/dev/null) || true
		grep -qx redis <<<"$mods" || echo php-redis
		grep -qx memcached <<<"$mods" || echo php-memcached
	fi
}

cohort_ensure_kv_clients() {
	local missing
	missing=$(_cohort_kvc_missing | tr '\n' ' ')
	if [ -z "${missing// /}" ]; then
		return 0
	fi
	_cohort_kvc_log "installing $missing"
	# shellcheck disable=SC2086 # one word per package
	if ! _cohort_apt_install $missing; then
		_cohort_kvc_log "could not install $missing (not root, or apt failed)"
		return 1
	fi
	missing=$(_cohort_kvc_missing | tr '\n' ' ')
	if [ -n "${missing// /}" ]; then
		_cohort_kvc_log "still missing after install: $missing"
		return 1
	fi
}
