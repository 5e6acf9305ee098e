#!/usr/bin/env bash
# System packages the tests use as real peers: dcmtk (storescu) for the DICOM C-STORE tests, openssl for TLS,
# podman/buildah/debootstrap for the container image, chromium for the console's browser test.
# Java comes with the machine; Kafka jars are fetched from Maven Central by tests/kafka_broker.py.
set -euo pipefail
need=()
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # self-signed certificates for the TLS tests
# headless Chromium from Debian for the console's browser test (driven by Playwright via executable_path; never
# `playwright install`, which downloads a browser)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
# Kafka for the integration tests: Java 17 + Maven, then the kafka_2.13 jars from Maven Central, fetched once
# per machine into ~/.cache/imaging-report-engine/kafka/<version> (tests/kafka_broker.py; idempotent).
kneed=()
command -v java >/dev/null 2>&1 || kneed+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || kneed+=(maven)
# the official FHIR validator (../shared/tools/fhir-validator/validate.sh, tests/conformance) compiles its wrapper
command -v javac >/dev/null 2>&1 || kneed+=(openjdk-17-jdk-headless)
if [ ${#kneed[@]} -gt 0 ]; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq >/dev/null && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${kneed[@]}" >/dev/null
fi
# Container image test (tests/container): podman + buildah build and run the image, debootstrap builds its base
# image from the Debian mirror (no registry needed). Debian only; elsewhere the test skips.
if [ -f /etc/debian_version ]; then
  cneed=()
  for tool in podman buildah debootstrap; do command -v "$tool" >/dev/null 2>&1 || cneed+=("$tool"); done
  if [ ${#cneed[@]} -gt 0 ]; then
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq >/dev/null && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${cneed[@]}" >/dev/null
  fi
fi
python3 "$(dirname "$0")/../tests/kafka_broker.py" fetch \
  || echo "warning: Kafka jars not fetched; the Kafka tests will retry (and fail under CI=true)" >&2
