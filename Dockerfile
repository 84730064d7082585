# Dockerfile: the conventional multi-stage build of the cohort image, for machines that reach
# a registry:
#
#   docker build -t cohort:local --build-arg VERSION=v1.0.0 --build-arg COMMIT=$(git rev-parse HEAD) .
#
# Machines without a registry build the same image from a binary compiled on the host:
# `make image` (scripts/image.sh with Dockerfile.host). Keep the two final stages alike.
#
# The result: FROM scratch, one static binary (CGO_ENABLED=0), CA roots, time zones, an
# /etc/passwd naming the non-root user 65532, /data owned by it, a HEALTHCHECK on
# /_cohort/ready through `cohort healthcheck` (scratch has no curl).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG TARGETOS=linux
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
      -ldflags "-s -w -X github.com/cohortserver/cohort/buildinfo.Version=${VERSION} -X github.com/cohortserver/cohort/buildinfo.Commit=${COMMIT}" \
      -o /out/cohort . \
 && mkdir -p /out/rootfs/etc/ssl/certs /out/rootfs/data /out/rootfs/usr/local/go/lib/time \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\ncohort:x:65532:65532:cohort:/data:/sbin/nologin\n' >/out/rootfs/etc/passwd \
 && printf 'root:x:0:\ncohort:x:65532:\n' >/out/rootfs/etc/group \
 && cp /etc/ssl/certs/ca-certificates.crt /out/rootfs/etc/ssl/certs/ \
 && cp "$(go env GOROOT)/lib/time/zoneinfo.zip" /out/rootfs/usr/local/go/lib/time/zoneinfo.zip

FROM scratch
COPY --from=build /out/rootfs/etc/ /etc/
COPY --from=build /out/rootfs/usr/ /usr/
COPY --from=build --chown=65532:65532 /out/rootfs/data/ /data/
COPY --from=build /out/cohort /cohort
# Go reads time zones from this zip when /usr/share/zoneinfo is absent.
ENV ZONEINFO=/usr/local/go/lib/time/zoneinfo.zip \
    COHORT_DATA_DIR=/data \
    COHORT_HTTP_ADDR=:8080 \
    COHORT_CLUSTER_ADDR=:7070
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080 7070
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/cohort", "healthcheck", "--quiet", "--addr", "http://127.0.0.1:8080"]
ENTRYPOINT ["/cohort"]
CMD ["serve"]
