#!/usr/bin/env bash
# e2e/mariadb-image.sh: build a small MariaDB image from this host's Debian packages, a
# stand-in for mysql:8 when no image registry is reachable. No pull, no network: the host's
# mariadbd, mariadb-admin (also as mysqladmin), their shared libraries, busybox for the
# entrypoint's /bin/sh, and e2e/mariadb/entrypoint.sh go into a root filesystem that
# `docker import` turns into an image. It takes the mysql:8 image's environment
# (MYSQL_ROOT_PASSWORD[_FILE], MYSQL_DATABASE, MYSQL_USER, MYSQL_PASSWORD[_FILE]).
#
#   e2e/mariadb-image.sh        prints the image tag, e.g. cohort-e2e-mariadb:3f2a...
#
# The tag is a hash of everything that goes in, so a second run finds the image and returns
# at once. Installs mariadb-server and busybox-static with apt when missing (root only).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
# shellcheck source=SCRIPTDIR/../scripts/lib/mariadb.sh
source scripts/lib/mariadb.sh

log() { printf 'mariadb-image: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

_cohort_mdb_install || die "no MariaDB on this host to build the image from"
busybox=""
for b in /bin/busybox /usr/bin/busybox; do
	if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then # static: ldd says "not a dynamic executable"
		busybox=$b
		break
	fi
done
if [ -z "$busybox" ]; then
	cohort_apt_install busybox-static || die "need a static busybox: apt-get install busybox-static"
	busybox=/bin/busybox
fi

mariadbd=$(_cohort_mdb_bin mariadbd)
admin=$(_cohort_mdb_bin mariadb-admin)
share=/usr/share/mysql
for f in english/errmsg.sys charsets/Index.xml mysql_system_tables.sql mysql_performance_tables.sql mysql_system_tables_data.sql; do
	[ -r "$share/$f" ] || die "missing $share/$f (is mariadb-server fully installed?)"
done

# Every file that goes in, as "source<TAB>destination".
files() {
	printf '%s\t%s\n' "$mariadbd" /usr/sbin/mariadbd
	printf '%s\t%s\n' "$admin" /usr/bin/mariadb-admin
	printf '%s\t%s\n' "$busybox" /bin/busybox
	printf '%s\t%s\n' "$root/e2e/mariadb/entrypoint.sh" /usr/local/bin/entrypoint.sh
	local lib
	# The shared libraries, and the dynamic loader itself, at the paths ldd resolves.
	ldd "$mariadbd" "$admin" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | sort -u |
		while read -r lib; do
			printf '%s\t%s\n' "$(readlink -f "$lib")" "$lib"
		done
	(cd "$share" && find english charsets -type f && ls mysql_system_tables.sql mysql_performance_tables.sql mysql_system_tables_data.sql) |
		while read -r f; do printf '%s\t%s\n' "$share/$f" "$share/$f"; done
}
list=$(files | LC_ALL=C sort -u)

hash=$({
	printf '%s\n' "$list"
	printf '%s\n' "$list" | cut -f1 | xargs sha256sum
	sha256sum "$0"
} | sha256sum | cut -c1-16)
tag=cohort-e2e-mariadb:$hash
if docker image inspect "$tag" >/dev/null 2>&1; then
	log "$tag exists"
	echo "$tag"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-mariadb-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{etc,tmp,run/mysqld,var/lib/mysql,usr/local/bin,usr/sbin,usr/bin,bin}
chmod 1777 "$rootfs/tmp"
while IFS=$'\t' read -r src dst; do
	mkdir -p "$rootfs$(dirname "$dst")"
	cp "$src" "$rootfs$dst"
done <<<"$list"
chmod 755 "$rootfs/usr/local/bin/entrypoint.sh"
for a in sh cat sed chown mkdir rm ls printf; do
	ln -s busybox "$rootfs/bin/$a"
done
ln -s mariadb-admin "$rootfs/usr/bin/mysqladmin"
printf 'root:x:0:0:root:/root:/bin/sh\nmysql:x:999:999:MariaDB:/var/lib/mysql:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nmysql:x:999:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\npasswd: files\ngroup: files\n' >"$rootfs/etc/nsswitch.conf"
chown 999:999 "$rootfs/var/lib/mysql" "$rootfs/run/mysqld"

log "docker import $tag ($(du -sh "$rootfs" | cut -f1))"
tar -C "$rootfs" --numeric-owner -cf - . |
	docker import \
		-c 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/bin' \
		-c 'EXPOSE 3306' \
		-c 'VOLUME ["/var/lib/mysql"]' \
		-c 'ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]' \
		- "$tag" >/dev/null
echo "$tag"
