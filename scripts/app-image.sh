#!/usr/bin/env bash
# scripts/app-image.sh: build the image of the compose demo's app variant (docker-compose.app.yml):
# cohort plus one example app (examples/php or examples/python) and the interpreter that runs
# it, for machines that reach no image registry. Nothing is pulled:
#
#   1. a base image, `docker import`ed from a root filesystem assembled from this host's Debian
#      packages: for php, php-cli's binary, php.ini, conf.d and extensions (php-redis for the
#      sessions); for python, /usr/bin/python3 with its standard library and python3-redis
#      (with the Python packages it depends on); every shared library they load (ldd), a
#      static busybox for /bin/sh (--app-command runs under /bin/sh -c), util-linux's
#      setpriv (the app runs as www-data), the CA roots and the time zones. Tagged cohort-APP-base:HASH, HASH covering every file
#      that goes in: a second run finds it and skips this step.
#   2. the app image, FROM that base: the cohort binary copied from the cohort image,
#      examples/APP at /app. Labelled with a hash of its inputs: when TAG
#      already has that hash, nothing is rebuilt.
#
#   scripts/app-image.sh php|python [TAG]      default TAG: cohort-php:local, cohort-python:local
#
# Environment:
#   COHORT_IMAGE   the cohort image whose binary goes in (default cohort:local). It must exist:
#                  `make image` (scripts/image.sh) builds it; `make image-php` does both.
#
# Installs what it takes (php-cli, php-redis, python3-redis, busybox-static) with apt when
# missing (root only). The images run as root: see docker-compose.app.yml for why (the FUSE
# mount). Dockerfile.app builds the same images where a registry is reachable.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
# shellcheck source=SCRIPTDIR/lib/apt.sh
source scripts/lib/apt.sh

log() { printf 'app-image: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

app=${1:-}
case "$app" in
php | python) ;;
*) die "usage: scripts/app-image.sh php|python [TAG]" ;;
esac
tag=${2:-cohort-$app:local}
cohort_image=${COHORT_IMAGE:-cohort:local}

command -v docker >/dev/null 2>&1 || die "docker not found on PATH"
docker image inspect "$cohort_image" >/dev/null 2>&1 ||
	die "no image $cohort_image: build it first (make image, or scripts/image.sh $cohort_image)"
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
	export DOCKER_BUILDKIT=0
fi

# ---- what every base holds -----------------------------------------------------------------
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
setpriv=$(command -v setpriv) || die "no setpriv (Debian's util-linux) on this host"

# ---- the interpreter -------------------------------------------------------------------------
# Each sets elves (the binaries and libraries whose shared libraries go in too) and defines
# runtime_files, which prints "source<TAB>destination" lines.
case "$app" in
php)
	if ! command -v php >/dev/null 2>&1 || ! grep -qx redis <<<"$(php -m 2>/dev/null)"; then
		log "installing php-cli and php-redis (apt)"
		cohort_apt_install php-cli php-redis || die "need php-cli and php-redis: apt-get install php-cli php-redis (as root)"
	fi
	php=$(readlink -f "$(command -v php)")
	extdir=$(php -r 'echo ini_get("extension_dir");')
	ini=$(php -r 'echo php_ini_loaded_file();')
	[ -n "$ini" ] || die "php loads no php.ini (is php-cli fully installed?)"
	confd=$(dirname "$ini")/conf.d
	[ -d "$confd" ] && [ -d "$extdir" ] || die "no $confd or $extdir (is php-cli fully installed?)"
	elves=("$php" "$extdir"/*.so)
	runtime_files() {
		local f
		printf '%s\t%s\n' "$php" /usr/bin/php
		printf '%s\t%s\n' "$ini" "$ini"
		for f in "$confd"/*.ini; do # links into mods-available: the files they name
			printf '%s\t%s\n' "$(readlink -f "$f")" "$f"
		done
		for f in "$extdir"/*.so; do
			printf '%s\t%s\n' "$f" "$f"
		done
	}
	;;
python)
	py=/usr/bin/python3 # Debian's (a python3 earlier on PATH may be another one)
	if [ ! -x "$py" ] || ! "$py" -c 'import redis' >/dev/null 2>&1; then
		log "installing python3 and python3-redis (apt)"
		cohort_apt_install python3 python3-redis || die "need python3-redis: apt-get install python3-redis (as root)"
	fi
	pyexe=$(readlink -f "$py")
	stdlib=$("$py" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
	dynload=$stdlib/lib-dynload
	[ -d "$dynload" ] || die "no $dynload (is python3 fully installed?)"
	# python3-redis and the Python packages it depends on, as Debian installed them.
	pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
		--no-replaces --no-enhances python3-redis | grep -E '^python3-' | grep -vx python3-minimal | sort -u)
	elves=("$pyexe" "$dynload"/*.so)
	runtime_files() {
		local f p
		printf '%s\t%s\n' "$pyexe" /usr/bin/python3
		# The standard library, without what a server never imports; links (sitecustomize.py
		# into /etc) become the files they name.
		(cd "$stdlib" && find . \( -name __pycache__ -o -name test -o -name tests -o -name idlelib \
			-o -name tkinter -o -name turtledemo -o -name ensurepip -o -name lib2to3 -o -name 'config-*' \) -prune \
			-o \( -type f -o -type l \) -print) |
			while read -r f; do
				f=${f#./}
				if [ -e "$stdlib/$f" ]; then
					printf '%s\t%s\n' "$(readlink -f "$stdlib/$f")" "$stdlib/$f"
				fi
			done
		for p in $pkgs; do
			[ "$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || continue
			dpkg -L "$p" | { grep -e '^/usr/lib/python3/dist-packages/.*\.\(py\|so\|pth\)$' -e '\.\(dist\|egg\)-info/' || true; } |
				while read -r f; do
					if [ -f "$f" ]; then printf '%s\t%s\n' "$f" "$f"; fi
				done
		done
	}
	;;
esac

# Every file that goes into the base, as "source<TAB>destination".
runtime=$(runtime_files)
files() {
	printf '%s\t%s\n' "$busybox" /bin/busybox
	printf '%s\t%s\n' "$(readlink -f "$setpriv")" /usr/bin/setpriv
	printf '%s\n' "$runtime"
	# CA roots and time zones (as scripts/image.sh puts them into the cohort image), for cohort
	# and the app.
	local ca=/etc/ssl/certs/ca-certificates.crt f
	if [ -r "$ca" ]; then printf '%s\t%s\n' "$ca" "$ca"; fi
	if [ -d /usr/share/zoneinfo ]; then
		find /usr/share/zoneinfo -path /usr/share/zoneinfo/right -prune -o \( -type f -o -type l \) -print |
			while read -r f; do
				if [ -f "$f" ]; then printf '%s\t%s\n' "$(readlink -f "$f")" "$f"; fi
			done
	fi
	local lib
	# The shared libraries, and the dynamic loader itself, at the paths ldd resolves: of the
	# interpreter, its modules, and any other library among the runtime's files.
	{
		printf '%s\n' "$setpriv" "${elves[@]}"
		printf '%s\n' "$runtime" | cut -f1 | { grep '\.so$' || true; }
	} | sort -u | xargs ldd 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | sort -u |
		while read -r lib; do
			printf '%s\t%s\n' "$(readlink -f "$lib")" "$lib"
		done
}
list=$(files | LC_ALL=C sort -u)

hash=$({
	printf '%s\n' "$list"
	printf '%s\n' "$list" | cut -f1 | xargs sha256sum
	sha256sum "$0"
} | sha256sum | cut -c1-16)
base=cohort-$app-base:$hash

work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-app-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---- 1. the base, docker import --------------------------------------------------------------
if docker image inspect "$base" >/dev/null 2>&1; then
	log "$base exists"
else
	rootfs=$work/rootfs
	mkdir -p "$rootfs"/{etc,tmp,bin,usr/bin,var/www,data,app}
	chmod 1777 "$rootfs/tmp"
	if [ "$app" = php ]; then
		mkdir -p "$rootfs/var/lib/php/sessions"
		chmod 1733 "$rootfs/var/lib/php/sessions" # as Debian's php-common: PHP's file sessions
	fi
	while IFS=$'\t' read -r src dst; do
		mkdir -p "$rootfs$(dirname "$dst")"
		cp "$src" "$rootfs$dst"
	done <<<"$list"
	# The applets an operator (and e2e/compose_app_test.sh) uses in the container.
	for a in sh cat ls ps kill pidof sleep env id mkdir rm cp mv stat sha256sum wget grep head tail; do
		ln -s busybox "$rootfs/bin/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\n' >"$rootfs/etc/passwd"
	printf 'root:x:0:\nwww-data:x:33:\n' >"$rootfs/etc/group"
	printf 'hosts: files dns\npasswd: files\ngroup: files\n' >"$rootfs/etc/nsswitch.conf"
	log "docker import $base ($(du -sh "$rootfs" | cut -f1))"
	# The image's settings go in here, once: each instruction of the Dockerfile below is a
	# container committed by the classic builder, seconds apiece on some storage drivers.
	# root: the files mount calls mount(2) itself (go-fuse's direct mount, CAP_SYS_ADMIN); the
	# app is started as www-data by its --app-command (setpriv). See docker-compose.app.yml.
	tar -C "$rootfs" --numeric-owner -cf - . |
		docker import \
			-c 'ENV PATH=/usr/local/bin:/usr/bin:/bin COHORT_DATA_DIR=/data COHORT_HTTP_ADDR=:8080 COHORT_CLUSTER_ADDR=:7070' \
			-c 'USER 0:0' \
			-c 'WORKDIR /data' \
			-c 'VOLUME ["/data"]' \
			-c 'EXPOSE 8080 7070' \
			-c 'ENTRYPOINT ["/cohort"]' \
			-c 'CMD ["serve"]' \
			- "$base" >/dev/null
	# Earlier bases (other packages, another version of this script) lose their tags; their
	# layers go once no image is built on them.
	docker images --format '{{.Repository}}:{{.Tag}}' "cohort-$app-base" | { grep -vx "$base" || true; } |
		xargs -r docker image rm >/dev/null 2>&1 || true
fi

# ---- 2. the app image: the base, cohort, examples/APP ----------------------------------------
ctx=$work/ctx
mkdir -p "$ctx"
cp -r "examples/$app" "$ctx/app"
rm -rf "$ctx"/app/uploads-* "$ctx"/app/maintenance* "$ctx"/app/__pycache__
cat >"$ctx/Dockerfile" <<EOF
# Generated by scripts/app-image.sh.
FROM $base
# The base sets ENV, USER 0:0, WORKDIR, VOLUME, EXPOSE, ENTRYPOINT and CMD.
COPY --from=$cohort_image /cohort /cohort
COPY app/ /app/
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \\
  CMD ["/cohort", "healthcheck", "--quiet", "--addr", "http://127.0.0.1:8080"]
EOF
id=$(docker image inspect -f '{{.Id}}' "$cohort_image")
ctxhash=$({
	echo "$id"
	(cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
} | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "org.cohortserver.context"}}' "$tag" 2>/dev/null)" = "$ctxhash" ]; then
	log "$tag is up to date (context $ctxhash)"
	exit 0
fi
old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
log "docker build -t $tag (FROM $base, cohort from $cohort_image, context $ctxhash)"
docker build -q -t "$tag" --label "org.cohortserver.context=$ctxhash" "$ctx" >/dev/null
if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
	docker image rm "$old" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$tag")
log "built $tag: $((size / 1024 / 1024)) MB"
