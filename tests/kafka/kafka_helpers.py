"""Helpers shared by the Kafka tests (topics, reading a topic back, committed offsets)."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

__all__ = [
    "Collector",
    "committed_offsets",
    "create_topics",
    "headers_of",
    "poll_until",
    "read_topic",
    "wait_committed",
]


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


def poll_until(source: Any, count: int, timeout: float = 30.0) -> list[Any]:
    """Poll a KafkaSource until ``count`` envelopes arrived (or the timeout passed)."""
    envelopes: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(envelopes) < count and time.monotonic() < deadline:
        envelopes.extend(source.poll(max_records=count - len(envelopes), timeout=0.5))
    return envelopes


class Collector:
    """Reads topics from the beginning (no group) and keeps everything it has seen."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        tps: list[TopicPartition] = []
        for topic in topics:
            parts = self.consumer.partitions_for_topic(topic) or set()
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records: list[Any] = []

    def collect(self, until: Any, timeout: float = 60.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not until(self.records) and time.monotonic() < deadline:
            for batch in self.consumer.poll(timeout_ms=300).values():
                self.records.extend(batch)
        return self.records

    def envelope_ids(self) -> set[str]:
        return {headers_of(r)["engine.envelope-id"] for r in self.records}

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def wait_committed(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout: float = 60.0
) -> dict[int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = committed_offsets(bootstrap, group, topic, len(ends))
        if all((got[p] or 0) >= end for p, end in ends.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.3)
