"""Publishers: sinks that deliver outputs to external systems beyond files and Kafka (FHIR REST servers)."""

from __future__ import annotations

__all__: list[str] = []
