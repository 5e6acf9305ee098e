"""Helpers shared by the Kafka tests (topics, reading a topic back, committed offsets)."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

__all__ = ["committed_offsets", "create_topics", "headers_of", "read_topic"]


def create_topics(admin: KafkaAdminClient, partitions: dict[str, int], configs: dict[str, str] | None = None) -> None:
    admin.create_topics(
        {
            name: {"num_partitions": n, "replication_factor": 1, "configs": configs or {}}
            for name, n in partitions.items()
        }
    )
    admin.wait_for_topics(list(partitions), timeout_ms=20_000)


def read_topic(bootstrap: str, topic: str, *, expect: int, timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the beginning (no group), waiting until at least ``expect`` arrived."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + 10
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if len(records) >= expect:
                # drain what is already there, then stop
                for batch in consumer.poll(timeout_ms=300).values():
                    records.extend(batch)
                break
        return records
    finally:
        consumer.close(autocommit=False)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        consumer.close(autocommit=False)


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}
