# shellcheck shell=bash
# scripts/lib/fuse.sh: FUSE for the tests of --files-mount (files/mount).
#
# Source this file (after scripts/lib/mariadb.sh, whose _cohort_apt_install it uses), then:
#
#   cohort_ensure_fuse  install Debian's fuse3 (fusermount3, /etc/fuse.conf) when missing
#                       (root only); warn when /dev/fuse is absent: the mount tests then
#                       skip outside CI and fail in CI (in Docker: --device /dev/fuse
#                       --cap-add SYS_ADMIN).
#
# The function checks every step itself and returns non-zero on failure; it does not rely on
# the caller's `set -e`.

cohort_ensure_fuse() {
	if ! command -v fusermount3 >/dev/null 2>&1; then
		if ! _cohort_apt_install fuse3; then
			printf 'fuse: apt-get install fuse3 failed (or not root)\n' >&2
			return 1
		fi
	fi
	if [ ! -e /dev/fuse ]; then
		printf 'fuse: /dev/fuse is missing: the files mount tests need it (modprobe fuse; in Docker --device /dev/fuse --cap-add SYS_ADMIN)\n' >&2
	fi
	return 0
}
