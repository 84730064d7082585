# shellcheck shell=bash
# scripts/lib/chromium.sh: a headless Chromium for the browser tests.
#
# Source this file, then:
#
#   cohort_ensure_chromium  find Chromium, installing Debian's `chromium` package with apt when
#                           none is found (root only), and export
#                             COHORT_CHROMIUM  path of the browser executable
#
# A COHORT_CHROMIUM already set to an executable is kept. Otherwise the first of chromium,
# chromium-browser, google-chrome-stable, google-chrome on PATH is used. Debian's
# /usr/bin/chromium is a shell wrapper that sources /etc/chromium.d (and on some machines
# prints "[: ...: unexpected operator" on every start); when the real binary
# /usr/lib/chromium/chromium sits beside it, that binary is exported instead.
#
# Tests start it themselves, e.g. `$COHORT_CHROMIUM --headless --no-sandbox ...`
# (--no-sandbox is needed when running as root, as CI does).
#
# The function checks every step itself and returns non-zero on failure; it does not rely on
# the caller's `set -e`.

_cohort_chr_log() { printf 'chromium: %s\n' "$*" >&2; }

# _cohort_chr_find: print the path of a Chromium executable, or return 1.
_cohort_chr_find() {
	local n p
	for n in chromium chromium-browser google-chrome-stable google-chrome; do
		if p=$(command -v "$n" 2>/dev/null) && [ -n "$p" ]; then
			if [ "$p" = /usr/bin/chromium ] && [ -x /usr/lib/chromium/chromium ]; then
				p=/usr/lib/chromium/chromium
			fi
			echo "$p"
			return 0
		fi
	done
	return 1
}

# cohort_apt_install (the shared installer) comes from scripts/lib/apt.sh.
# shellcheck source=SCRIPTDIR/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

# cohort_ensure_chromium: see the header.
cohort_ensure_chromium() {
	local p
	if [ -n "${COHORT_CHROMIUM:-}" ] && [ -x "$COHORT_CHROMIUM" ]; then
		export COHORT_CHROMIUM
		return 0
	fi
	if p=$(_cohort_chr_find); then
		export COHORT_CHROMIUM=$p
		return 0
	fi
	if [ "$EUID" -ne 0 ]; then
		_cohort_chr_log "Chromium is not installed and this is not root, so it cannot be installed here."
		_cohort_chr_log "Install it (sudo apt-get install chromium), set COHORT_CHROMIUM=/path/to/chromium,"
		_cohort_chr_log "or skip the browser tests with COHORT_SKIP_BROWSER=1."
		return 1
	fi
	local t0=$SECONDS
	_cohort_chr_log "installing chromium with apt-get"
	if ! cohort_apt_install chromium; then
		_cohort_chr_log "apt-get install chromium failed"
		return 1
	fi
	if ! p=$(_cohort_chr_find); then
		_cohort_chr_log "no chromium executable found after installing the chromium package"
		return 1
	fi
	export COHORT_CHROMIUM=$p
	local ver
	ver=$("$p" --version 2>/dev/null) || ver=$p
	_cohort_chr_log "installed ${ver%% } in $((SECONDS - t0)) s"
	return 0
}
