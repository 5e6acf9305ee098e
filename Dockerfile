# Container image of the engine: `engine run --config /app/config/docker.yaml` as user 10001.
# Only PyPI is needed at build time. BASE is any Debian-like image with python3 (>= 3.11) and venv:
#   docker build -t imaging-report-engine .                         (python:3.12-slim from a registry)
#   scripts/build-image.sh                                          (no registry: a local debootstrap base,
#                                                                    what `make test` builds and runs)
# The store, outbox, dead letters and inbox live in the volume /app/var; see README "Container image".
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
WORKDIR /src
# A TLS-intercepting proxy's CA may be passed as a build secret (never stored in a layer):
#   podman build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt ...
# Dependencies first (a layer that changes only with pyproject.toml), then the engine itself.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && python3 -m venv /opt/venv \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --quiet -r /tmp/requirements.txt
COPY README.md ./
COPY engine ./engine
COPY pipelines ./pipelines
COPY config ./config
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --quiet --no-deps . \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE}
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH
# A fixed non-root uid/gid, so host directories can be prepared for it (`chown 10001:10001 DIR`).
RUN groupadd --gid 10001 engine \
 && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home --home-dir /app --shell /usr/sbin/nologin engine
COPY --from=build /opt/venv /opt/venv
COPY config /app/config
# The data directory: message store (the only copy of messages not yet converted), outbox, dead letters,
# inbox. Owned by the engine user; a named volume inherits this ownership on first use.
RUN mkdir -p /app/var/store /app/var/outbox /app/var/dlq /app/var/inbox \
 && chown -R 10001:10001 /app/var && chmod -R u+rwX,g+rwX,o-rwx /app/var
VOLUME ["/app/var"]
WORKDIR /app
USER 10001:10001
# MLLP, DICOM C-STORE SCP, health + metrics
EXPOSE 2575 11112 8080
# SIGTERM: stop intake, drain for worker.drain_timeout (7 s in docker.yaml, below `docker stop`'s 10 s grace
# period), flush, exit 0. Anything not drained stays in the store volume and is resumed at the next start.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('ENGINE_HEALTH_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["engine"]
CMD ["run", "--config", "/app/config/docker.yaml"]
