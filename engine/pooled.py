"""Conversion in separate processes for the service: intake (MLLP, DICOM SCP, inbox, store commits) keeps
the service's interpreter to itself, so ACK latency does not depend on how busy conversion is.

:class:`PooledConverter` has the :class:`engine.convert.Converter` interface plus ``convert_many``, which
the worker uses for a whole batch (one hand-over per process per batch). The processes come from
:func:`engine.backfill.pool.make_executor` (``forkserver``: no inherited threads, sockets or store
connections; a process whose service died exits by itself). An exception raised inside a conversion (a bug)
or a conversion process that died is re-raised in the worker, which stops loudly: the batch stays
unfinished in the store and is resumed after restart.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.backfill.pool import convert_batch, make_executor
from engine.outcomes import Conversion
from pipelines.context import MappingContext

__all__ = ["PooledConverter"]


class PooledConverter:
    def __init__(self, context: MappingContext | None = None, model: str = "document", processes: int = 1) -> None:
        if model != "document":
            from pipelines.output.models import shaper_for

            shaper_for(model)  # ValueError naming the available models
        self.context = context or MappingContext()
        self.model = model
        self.processes = max(1, processes)
        self._executor = make_executor(self.processes, self.context, model)

    def convert(self, data: bytes) -> Conversion:
        return self.convert_many([data])[0]

    def convert_many(self, payloads: Sequence[bytes]) -> list[Conversion]:
        """Convert in order; the batch is split into one contiguous chunk per process."""
        if not payloads:
            return []
        size = -(-len(payloads) // self.processes)
        futures = [
            self._executor.submit(convert_batch, list(payloads[i : i + size])) for i in range(0, len(payloads), size)
        ]
        results: list[Conversion] = []
        for future in futures:
            results.extend(future.result())
        return results

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
