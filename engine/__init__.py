"""Runtime of the imaging-report integration engine (sources, sinks, worker, CLI, settings)."""

__all__: list[str] = []
