"""Kafka transport: raw topics as the landing store and source, output topic sink, ``<topic>.dlq`` dead letters.

kafka-python 3.x; at-least-once: commits only of the confirmed contiguous watermark (see ``offsets``).
"""

from __future__ import annotations

from engine.kafka.dlq import KafkaDeadLetters
from engine.kafka.landing import KafkaLanding
from engine.kafka.offsets import OffsetTracker
from engine.kafka.settings import KafkaSettings
from engine.kafka.sink import KafkaSink
from engine.kafka.source import KafkaPosition, KafkaSource

__all__ = [
    "KafkaDeadLetters",
    "KafkaLanding",
    "KafkaPosition",
    "KafkaSettings",
    "KafkaSink",
    "KafkaSource",
    "OffsetTracker",
]
