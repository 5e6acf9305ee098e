# Multi-stage build of the engine; only PyPI is needed.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY pipelines ./pipelines
COPY config ./config
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH
RUN useradd -u 10001 -m engine
COPY --from=build /opt/venv /opt/venv
COPY config /app/config
WORKDIR /app
RUN mkdir -p /app/var && chown -R engine /app/var
USER 10001
# MLLP, DICOM, health + metrics
EXPOSE 2575 11112 8080
HEALTHCHECK CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=3).status == 200 else 1)"
ENTRYPOINT ["engine"]
CMD ["run", "--config", "/app/config/docker.yaml"]
