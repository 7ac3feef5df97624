# syntax=docker/dockerfile:1
# remotellm-connector as a container image. Build it from the root of a clone of the repository:
#
#   docker build -f docs/deploy/connector.Dockerfile -t remotellm-connector .
#   docker run -d --name remotellm-connector --network host \
#       -e REMOTELLM_CONNECTOR_BROKER_URL=https://llm.example.com \
#       -e REMOTELLM_CONNECTOR_TOKEN_FILE=/run/secrets/connector_token \
#       -v /etc/remotellm/connector.token:/run/secrets/connector_token:ro \
#       remotellm-connector
#
# or use compose.yaml next to this file. Host networking lets the connector reach an LLM server
# that listens on the host's 127.0.0.1 (Ollama, llama-server, vLLM, LM Studio do by default);
# it only dials out, so it publishes no port. The token file must be readable by uid 10001.
# Settings: REMOTELLM_CONNECTOR_* variables (docs/reference/configuration.md).

ARG PYTHON=3.12

FROM python:${PYTHON}-slim AS build
WORKDIR /src
COPY packages/remotellm-protocol packages/remotellm-protocol
COPY packages/remotellm-connector packages/remotellm-connector
RUN python -m venv /opt/remotellm \
    && /opt/remotellm/bin/pip install --no-cache-dir \
        ./packages/remotellm-protocol "./packages/remotellm-connector[uvloop]"

FROM python:${PYTHON}-slim
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin remotellm
COPY --from=build /opt/remotellm /opt/remotellm
ENV PATH=/opt/remotellm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REMOTELLM_CONNECTOR_LOG_FORMAT=json
USER remotellm
# SIGTERM drains in-flight streams for shutdown_grace_s (30 s): stop with a longer timeout.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REMOTELLM_CONNECTOR_HEALTH_PORT', '9180'), timeout=2)"]
ENTRYPOINT ["remotellm-connector"]
CMD ["run"]
