# Dockerfile.app: the images of the compose demo's app variant (docker-compose.app.yml) for
# machines that reach a registry: one example app (examples/php or examples/python) with the
# Debian packages that run it, and the cohort binary taken from the cohort image.
#
#   make image      # or: docker build -t cohort:local .
#   docker build -f Dockerfile.app -t cohort-php:local .
#   docker build -f Dockerfile.app -t cohort-python:local \
#     --build-arg APP=python --build-arg PACKAGES="python3 python3-redis" .
#
# Machines without a registry build the same images from this host's Debian packages:
# `make image-php`, `make image-python` (scripts/app-image.sh). Keep the two alike: cohort at
# /cohort, the app at /app, /usr/bin/setpriv and a www-data user for the app's command, root
# as the user.

ARG COHORT_IMAGE=cohort:local
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${COHORT_IMAGE} AS cohort

FROM ${DEBIAN_IMAGE}
ARG APP=php
ARG PACKAGES="php-cli php-redis"
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ${PACKAGES} ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/*
COPY --from=cohort /cohort /cohort
COPY examples/${APP}/ /app/
ENV COHORT_DATA_DIR=/data \
    COHORT_HTTP_ADDR=:8080 \
    COHORT_CLUSTER_ADDR=:7070
# root: the files mount calls mount(2) itself (go-fuse's direct mount, CAP_SYS_ADMIN); the
# app is started as www-data by its --app-command (setpriv). See docker-compose.app.yml.
USER 0:0
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080 7070
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/cohort", "healthcheck", "--quiet", "--addr", "http://127.0.0.1:8080"]
ENTRYPOINT ["/cohort"]
CMD ["serve"]
