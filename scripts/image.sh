#!/usr/bin/env bash
# scripts/image.sh: build the cohort container image from a binary compiled on this host
# (Dockerfile.host), for machines that reach no image registry. With a registry, the plain
# multi-stage `docker build -t cohort:local .` (Dockerfile) gives the same image.
#
#   scripts/image.sh [TAG]      default TAG: cohort:local (env COHORT_IMAGE)
#
# Environment:
#   VERSION, COMMIT   stamped into the binary (default: git describe / git rev-parse)
#   GOARCH            target architecture (default: the host's)
#   COHORT_IMAGE_BUILD_DIR  where the build context is staged (default ./build/image)
#
# The image is labelled with a hash of its context (binary, CA roots, zones, Dockerfile.host):
# when an image with that tag and hash exists, nothing is rebuilt.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"

tag=${1:-${COHORT_IMAGE:-cohort:local}}
ctx=${COHORT_IMAGE_BUILD_DIR:-$root/build/image}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}

log() { printf 'image: %s\n' "$*" >&2; }
die() {
	printf 'image: %s\n' "$*" >&2
	exit 1
}

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || die "go not found on PATH"
command -v docker >/dev/null 2>&1 || die "docker not found on PATH"
# The docker CLI builds with BuildKit through buildx when it can; a CLI without the buildx
# plugin must use the classic builder, which handles this Dockerfile just as well.
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
	export DOCKER_BUILDKIT=0
fi

rm -rf "$ctx"
mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/usr/share" "$ctx/data"

log "go build (CGO_ENABLED=0, version $version, commit ${commit:0:12})"
CGO_ENABLED=0 GOOS=linux go build -trimpath \
	-ldflags "-s -w -X github.com/cohortserver/cohort/buildinfo.Version=$version -X github.com/cohortserver/cohort/buildinfo.Commit=$commit" \
	-o "$ctx/cohort" .

printf 'root:x:0:0:root:/root:/sbin/nologin\ncohort:x:65532:65532:cohort:/data:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\ncohort:x:65532:\n' >"$ctx/rootfs/etc/group"

ca=/etc/ssl/certs/ca-certificates.crt
[ -r "$ca" ] || die "no CA roots at $ca (apt-get install ca-certificates)"
cp "$ca" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"

if [ -d /usr/share/zoneinfo ]; then
	# -L: Debian links some zones; the image gets plain files. right/ (leap-second zones) is
	# left out: Go never reads it.
	tar -C /usr/share --exclude zoneinfo/right -chf - zoneinfo | tar -C "$ctx/rootfs/usr/share" -xf -
else
	# No tzdata on the host: Go's own zone archive, found through ZONEINFO.
	log "no /usr/share/zoneinfo here (apt-get install tzdata); using Go's zoneinfo.zip"
	mkdir -p "$ctx/rootfs/usr/local/go/lib/time"
	cp "$(go env GOROOT)/lib/time/zoneinfo.zip" "$ctx/rootfs/usr/local/go/lib/time/"
fi
cp Dockerfile.host "$ctx/Dockerfile"

hash=$(cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "org.cohortserver.context"}}' "$tag" 2>/dev/null)" = "$hash" ]; then
	log "$tag is up to date (context $hash)"
	exit 0
fi

old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
log "docker build -t $tag (context $hash)"
docker build -q -t "$tag" --label "org.cohortserver.context=$hash" \
	--label "org.opencontainers.image.version=$version" \
	--label "org.opencontainers.image.revision=$commit" \
	"$ctx" >/dev/null
# The image the tag named before is garbage now, unless another tag still names it.
if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
	docker image rm "$old" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$tag")
log "built $tag: $((size / 1024 / 1024)) MB"
