"""The engine's one exception tree.

::

    EngineError
    ├── ConfigError              invalid or inconsistent configuration (exit 2, never at run time)
    ├── TransientError           retry with backoff, then back-pressure; never dead-lettered
    │   └── BackPressure         a sink asks intake to pause for ``retry_after`` seconds
    └── PermanentError           dead-letter the original bytes with the reason, then move on
        └── RejectedInput        the input is not something this engine converts (see pipelines.errors)

Mapping failures raised by ``pipelines`` derive from :class:`pipelines.errors.MappingError`; the runtime
treats them as permanent. Any other exception is *unknown*: the worker stops loudly and the message stays
unfinished so that it is resumed after restart.
"""

from __future__ import annotations

__all__ = [
    "BackPressure",
    "ConfigError",
    "EngineError",
    "PermanentError",
    "RejectedInput",
    "TransientError",
]


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigError(EngineError):
    """The configuration cannot be used."""


class TransientError(EngineError):
    """A failure that may succeed when retried (timeouts, 5xx, 429, broker down, disk full)."""


class BackPressure(TransientError):
    """A sink cannot accept more for now; intake pauses for ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(EngineError):
    """A failure that will recur on retry: the message goes to the dead letters."""


class RejectedInput(PermanentError):
    """The input is not a convertible imaging report (wrong type, corrupt, empty, ...)."""
