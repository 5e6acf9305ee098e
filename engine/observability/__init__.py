"""Operations surface: JSON logs without PHI, Prometheus metrics, /livez /readyz /metrics."""

from __future__ import annotations

__all__: list[str] = []
