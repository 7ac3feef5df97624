# syntax=docker/dockerfile:1
# remotellm-broker as a container image. Build it from the root of a clone of the repository:
#
#   docker build -f docs/deploy/broker.Dockerfile -t remotellm-broker .
#   docker run -d --name remotellm-broker -p 127.0.0.1:8000:8000 \
#       -v remotellm-broker:/var/lib/remotellm remotellm-broker
#   docker exec remotellm-broker remotellm-broker users add alice        # prints alice's key
#   docker exec remotellm-broker remotellm-broker tokens create gpu-box  # a connector token
#
# or use compose.yaml next to this file. Settings come from REMOTELLM_BROKER_* variables
# (docs/reference/configuration.md); secrets from REMOTELLM_BROKER_<NAME>_FILE pointing at a
# mounted secret, never from the command line. Put a TLS proxy in front (nginx.conf, Caddyfile)
# and keep the health port (8080) off the internet.

ARG PYTHON=3.12

FROM python:${PYTHON}-slim AS build
WORKDIR /src
COPY packages/remotellm-protocol packages/remotellm-protocol
COPY packages/remotellm-broker packages/remotellm-broker
RUN python -m venv /opt/remotellm \
    && /opt/remotellm/bin/pip install --no-cache-dir \
        ./packages/remotellm-protocol "./packages/remotellm-broker[uvloop]"

FROM python:${PYTHON}-slim
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/remotellm \
        --shell /usr/sbin/nologin remotellm
COPY --from=build /opt/remotellm /opt/remotellm
ENV PATH=/opt/remotellm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REMOTELLM_BROKER_HOST=0.0.0.0 \
    REMOTELLM_BROKER_HEALTH_HOST=0.0.0.0 \
    REMOTELLM_BROKER_USERS_FILE=/var/lib/remotellm/users.yaml \
    REMOTELLM_BROKER_LOG_FORMAT=json
USER remotellm
WORKDIR /var/lib/remotellm
# users.yaml (users, key hashes, connector tokens): the broker's only state.
VOLUME /var/lib/remotellm
# 8000: the OpenAI API, the portal and the connectors' relay. 8080: /healthz, /readyz, /metrics.
EXPOSE 8000 8080
# SIGTERM drains in-flight streams for shutdown_timeout (30 s): stop with a longer timeout
# (docker stop -t 45; compose: stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
ENTRYPOINT ["remotellm-broker"]
CMD ["serve"]
