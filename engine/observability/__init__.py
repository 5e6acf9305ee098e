"""Operations surface: JSON logs without PHI, Prometheus metrics, /livez /readyz /metrics."""

__all__: list[str] = []
