"""Progress and the final summary of a backfill.

On a terminal: a tqdm bar over the input bytes (so rate and ETA are known before the messages are counted)
with messages, messages/s and outcome counts as its postfix. Otherwise (CI logs, cron): one plain line every
``interval`` seconds. :class:`Tally` holds the counts that the summary, ``--report FILE`` and the
checkpoint share; reason maps are bounded (at most ``MAX_REASONS`` distinct reasons, then ``other``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["MAX_REASONS", "MAX_SKIPPED_EXAMPLES", "Progress", "Tally"]

MAX_REASONS = 100
MAX_SKIPPED_EXAMPLES = 20  # skipped files named in the summary and the report (the rest only counted)


def _bump(table: dict[str, int], reason: str, n: int = 1) -> None:
    if reason not in table and len(table) >= MAX_REASONS:
        reason = "other"
    table[reason] = table.get(reason, 0) + n


@dataclass(slots=True)
class Tally:
    files: int = 0  # input files finished
    bytes: int = 0  # input bytes read
    inputs: int = 0  # messages seen (duplicates included)
    converted: int = 0  # messages with at least one output
    outputs: int = 0  # Bundles written (a resend of the same Bundle counts again)
    duplicates: int = 0  # exact duplicates (same message key as an earlier frame): counted, not converted
    filtered: dict[str, int] = field(default_factory=dict)  # reason -> messages
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> messages
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> whole files (not message files)
    skipped_examples: list[str] = field(default_factory=list)  # the first skipped files' paths

    def skip(self, reason: str, path: str = "") -> None:
        _bump(self.skipped, reason)
        if path and len(self.skipped_examples) < MAX_SKIPPED_EXAMPLES:
            self.skipped_examples.append(path)

    def filter(self, reason: str) -> None:
        _bump(self.filtered, reason)

    def reject(self, reason: str) -> None:
        _bump(self.rejected, reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "inputs": self.inputs,
            "converted": self.converted,
            "outputs": self.outputs,
            "duplicates": self.duplicates,
            "filtered": dict(sorted(self.filtered.items())),
            "rejected": dict(sorted(self.rejected.items())),
            "skipped_files": dict(sorted(self.skipped.items())),
            "skipped_examples": list(self.skipped_examples),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tally:
        return cls(
            files=int(data.get("files", 0)),
            bytes=int(data.get("bytes", 0)),
            inputs=int(data.get("inputs", 0)),
            converted=int(data.get("converted", 0)),
            outputs=int(data.get("outputs", 0)),
            duplicates=int(data.get("duplicates", 0)),
            filtered=dict(data.get("filtered", {})),
            rejected=dict(data.get("rejected", {})),
            skipped=dict(data.get("skipped_files", {})),
            skipped_examples=list(data.get("skipped_examples", [])),
        )


class Progress:
    """``update(tally)`` as often as convenient; output is rate-limited."""

    def __init__(
        self, total_bytes: int, *, stream: TextIO | None = None, tty: bool | None = None, interval: float = 10.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.total = total_bytes
        self.started = time.monotonic()
        self._start_inputs: int | None = None
        self._last = self.started
        self._bar: tqdm[Any] | None = None
        if self.tty:
            self._bar = tqdm(
                total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=self.stream,
                desc="backfill", dynamic_ncols=True, mininterval=0.5, smoothing=0.1,
            )  # fmt: skip

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rate(self, tally: Tally) -> float:
        """Messages per second of this run (a resumed job's earlier runs excluded)."""
        return (tally.inputs - (self._start_inputs or 0)) / max(self.elapsed(), 1e-9)

    def update(self, tally: Tally) -> None:
        if self._start_inputs is None:
            self._start_inputs = tally.inputs  # a resumed job: rate counts this run only
            if self._bar is not None:
                self._bar.n = tally.bytes
                self._bar.refresh()
        if self._bar is not None:
            self._bar.update(tally.bytes - self._bar.n)
            self._bar.set_postfix_str(self._postfix(tally), refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.stream.write(self.line(tally) + "\n")
            self.stream.flush()

    def _postfix(self, tally: Tally) -> str:
        return (
            f"{tally.inputs:,} msgs {self.rate(tally):,.0f} msg/s conv={tally.converted:,} "
            f"filt={sum(tally.filtered.values()):,} rej={sum(tally.rejected.values()):,} dup={tally.duplicates:,}"
        )

    def line(self, tally: Tally) -> str:
        pct = 100.0 * tally.bytes / self.total if self.total else 100.0
        rate_b = max(tally.bytes, 1) / max(time.monotonic() - self.started, 1e-9)
        eta = (self.total - tally.bytes) / rate_b if self.total > tally.bytes else 0.0
        return f"backfill: {pct:5.1f}% {self._postfix(tally)} eta {time.strftime('%H:%M:%S', time.gmtime(eta))}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self, tally: Tally) -> str:
        """The final, human-readable summary (several lines)."""
        elapsed = time.monotonic() - self.started
        lines = [
            f"inputs: {tally.inputs:,} messages in {tally.files:,} files ({tally.bytes:,} bytes)",
            f"converted: {tally.converted:,} messages -> {tally.outputs:,} Bundles written",
            f"duplicates: {tally.duplicates:,} (exact repeats, not converted again)",
            f"filtered: {sum(tally.filtered.values()):,}",
            *(f"  {n:>8,}  {r}" for r, n in sorted(tally.filtered.items(), key=lambda x: -x[1])),
            f"rejected: {sum(tally.rejected.values()):,} (dead letters)",
            *(f"  {n:>8,}  {r}" for r, n in sorted(tally.rejected.items(), key=lambda x: -x[1])),
            f"skipped files: {sum(tally.skipped.values()):,} (not message files; no outcome per message)",
            *(f"  {n:>8,}  {r}" for r, n in sorted(tally.skipped.items(), key=lambda x: -x[1])),
            *(f"  skipped: {p}" for p in tally.skipped_examples),
            f"throughput: {self.rate(tally):,.0f} messages/s over {elapsed:,.1f} s (this run)",
        ]
        return "\n".join(lines)
