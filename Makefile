# Makefile: the usual entry points. Everything real lives in scripts/ and e2e/.
#
#   make build          ./cohort for this machine (static, CGO_ENABLED=0)
#   make test           ./scripts/test.sh (gofmt, vet, go test -race ./...)
#   make e2e            e2e/compose_test.sh (the compose demo on this Docker engine)
#   make release        dist/cohort-VERSION-linux-{amd64,arm64} + dist/SHA256SUMS
#   make image          the cohort:local image from a host-compiled binary (no registry needed)
#   make image-multistage   the same image with the multi-stage Dockerfile (needs a registry)
#   make compose-up / compose-down     the three-node demo cluster in Docker (image rebuilt first)
#   make cluster-up / cluster-down / cluster-status   three nodes on 127.0.0.1, no Docker
#   make configref      regenerate docs/config.md from the config package
#
# VERSION and COMMIT default to git describe / git rev-parse; override: make release VERSION=v1.2.0

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE ?= cohort:local
PLATFORMS ?= linux/amd64 linux/arm64
LDFLAGS := -s -w -X github.com/cohortserver/cohort/buildinfo.Version=$(VERSION) -X github.com/cohortserver/cohort/buildinfo.Commit=$(COMMIT)

# docker-compose 1.x or the docker compose plugin, whichever is there.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: build test e2e release image image-multistage compose-up compose-down \
	cluster-up cluster-down cluster-status configref clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o cohort .

test:
	./scripts/test.sh

e2e:
	bash e2e/compose_test.sh

release:
	rm -rf dist && mkdir -p dist
	set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		out=dist/cohort-$(VERSION)-$$os-$$arch; \
		echo "build $$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $$out . ; \
	done
	cd dist && sha256sum cohort-* > SHA256SUMS
	cat dist/SHA256SUMS

image:
	VERSION=$(VERSION) COMMIT=$(COMMIT) ./scripts/image.sh $(IMAGE)

image-multistage:
	docker build -t $(IMAGE) --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) .

# The image is rebuilt from this checkout first (a no-op when nothing changed), so the demo
# never runs a stale binary.
compose-up: image
	./scripts/compose-env.sh
	COHORT_IMAGE=$(IMAGE) $(COMPOSE) up -d
	@echo "demo: http://127.0.0.1:18181/ http://127.0.0.1:18182/ http://127.0.0.1:18183/  (admin token in secrets/admin.token)"

# Keeps the volumes; `docker compose down -v` (or docker-compose down -v) deletes the data.
compose-down:
	$(COMPOSE) down

cluster-up:
	./scripts/cluster.sh up

cluster-down:
	./scripts/cluster.sh down

cluster-status:
	./scripts/cluster.sh status

configref:
	$(GO) run ./config/refgen > docs/config.md.tmp && mv docs/config.md.tmp docs/config.md

clean:
	rm -rf dist build cohort
