# shellcheck shell=bash
# scripts/lib/apt.sh: the one Debian package installer every scripts/lib/*.sh uses.
#
# Source this file (the other libraries source it themselves), then:
#
#   cohort_apt_install PKG...       apt-get install PKG... as root, quietly; the output is shown
#                                   only on failure. `apt-get update` runs once per shell.
#                                   Returns non-zero when not root or when apt-get fails.
#   cohort_apt_ensure CMD PKG...    install PKG... unless the command CMD is already on PATH,
#                                   e.g. `cohort_apt_ensure php php-cli php-redis`.
#
# A new installer (php, redis-tools, fuse3, ...) calls these instead of writing its own.
# _cohort_apt_install is the older name of cohort_apt_install, kept for existing callers.

cohort_apt_install() {
	if [ "$EUID" -ne 0 ]; then
		return 1
	fi
	local log
	log=$(mktemp "${TMPDIR:-/tmp}/cohort-apt.XXXXXX") || return 1
	if [ -z "${_COHORT_APT_UPDATED:-}" ]; then
		if ! apt-get -o DPkg::Lock::Timeout=300 update -qq >"$log" 2>&1; then
			cat "$log" >&2
			rm -f "$log"
			return 1
		fi
		_COHORT_APT_UPDATED=1
	fi
	if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >>"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$log"
		return 1
	fi
	rm -f "$log"
	return 0
}

cohort_apt_ensure() {
	local cmd=$1
	shift
	if command -v "$cmd" >/dev/null 2>&1; then
		return 0
	fi
	printf 'apt: %s not found; installing %s\n' "$cmd" "$*" >&2
	cohort_apt_install "$@"
}

_cohort_apt_install() { cohort_apt_install "$@"; }
