"""Delivery-guarantee regression tests (found in review): the Kafka fixtures they share."""

from __future__ import annotations

from tests.kafka.conftest import admin, make_settings

__all__ = ["admin", "make_settings"]
