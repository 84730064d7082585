# Makefile: the usual entry points. Everything real lives in scripts/ and e2e/.
#
#   make build          ./cohort for this machine (static, CGO_ENABLED=0)
#   make test           ./scripts/test.sh (gofmt, vet, go test -race ./...)
#   make e2e            e2e/compose_test.sh and e2e/compose_app_test.sh (the compose demo and
#                       its app variant on this Docker engine)
#   make release        dist/cohort-VERSION-linux-{amd64,arm64} + dist/SHA256SUMS
#   make image          the cohort:local image from a host-compiled binary (no registry needed)
#   make image-multistage   the same image with the multi-stage Dockerfile (needs a registry)
#   make image-php      cohort-php:local: cohort + the PHP example app, PHP from this host's
#                       Debian packages (scripts/app-image.sh; no registry needed)
#   make image-python   cohort-python:local: the same with the Python example app
#   make compose-up / compose-down     the three-node demo cluster in Docker (image rebuilt first)
#   make compose-up-app / compose-down-app   the same running the PHP example app on every node
#                       (docker-compose.app.yml: upstream mode, sessions in the kv store, FUSE mount)
#   make compose-up-python                   the same with the Python example app instead
#                       (docker-compose.python.yml on top; compose-down-app stops it too)
#   make cluster-up / cluster-down / cluster-status   three nodes on 127.0.0.1, no Docker
#   make configref      regenerate docs/config.md from the config package
#
# VERSION and COMMIT default to git describe / git rev-parse; override: make release VERSION=v1.2.0

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE ?= cohort:local
PHP_IMAGE ?= cohort-php:local
PYTHON_IMAGE ?= cohort-python:local
PLATFORMS ?= linux/amd64 linux/arm64
LDFLAGS := -s -w -X github.com/cohortserver/cohort/buildinfo.Version=$(VERSION) -X github.com/cohortserver/cohort/buildinfo.Commit=$(COMMIT)

# docker-compose 1.x or the docker compose plugin, whichever is there.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: build test e2e release image image-multistage image-php image-python compose-up \
	compose-down compose-up-app compose-up-python compose-down-app \
	cluster-up cluster-down cluster-status configref clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o cohort .

test:
	./scripts/test.sh

e2e:
	bash e2e/compose_test.sh
	bash e2e/compose_app_test.sh

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

image-php: image
	COHORT_IMAGE=$(IMAGE) ./scripts/app-image.sh php $(PHP_IMAGE)

image-python: image
	COHORT_IMAGE=$(IMAGE) ./scripts/app-image.sh python $(PYTHON_IMAGE)

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

# The app variant: the same cluster, each node running examples/php (docker-compose.app.yml),
# or examples/python (docker-compose.python.yml on top).
APP_COMPOSE_FILES := -f docker-compose.yml -f docker-compose.app.yml
compose-up-app: image-php
	./scripts/compose-env.sh
	COHORT_APP_IMAGE=$(PHP_IMAGE) $(COMPOSE) $(APP_COMPOSE_FILES) up -d
	@echo "PHP app: http://127.0.0.1:18181/ http://127.0.0.1:18182/ http://127.0.0.1:18183/  (shared directory: /shared in each container)"

compose-up-python: image-python
	./scripts/compose-env.sh
	COHORT_PYTHON_IMAGE=$(PYTHON_IMAGE) $(COMPOSE) $(APP_COMPOSE_FILES) -f docker-compose.python.yml up -d
	@echo "Python app: http://127.0.0.1:18181/counter :18182 :18183  (shared directory: /shared in each container)"

# Also stops the Python app's containers (the same services).
compose-down-app:
	$(COMPOSE) $(APP_COMPOSE_FILES) down

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
