#!/usr/bin/env bash
# System packages the tests use as real peers: dcmtk (storescu) for the DICOM C-STORE tests, openssl for TLS.
# Java comes with the machine; Kafka jars are fetched from Maven Central by tests/kafka_broker.py.
set -euo pipefail
need=()
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # self-signed certificates for the TLS tests
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
