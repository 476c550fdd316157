# A Redis image for machines that cannot pull the official one (air-gapped sites, this project's CI),
# built on a local Debian base that has redis-server:
#
#   docker/local-base.sh wave-redis-base:bookworm redis-server
#   docker build -f docker/redis-local.Dockerfile --build-arg BASE_IMAGE=wave-redis-base:bookworm \
#       -t wave-redis:local docker/
#   REDIS_IMAGE=wave-redis:local make up
#
# Shaped like the official image where compose/base.yml relies on it: redis-server and redis-cli on
# PATH, `sh`, user 999 owns /data.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN command -v redis-server redis-cli >/dev/null \
    && mkdir -p /data && chown 999:999 /data && chmod 0700 /data
WORKDIR /data
VOLUME /data
USER 999:999
EXPOSE 6379
CMD ["redis-server"]
