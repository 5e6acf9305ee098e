"""Publishing into a real FHIR R5 server: reports per second for the ``rest`` model (and any registered model,
e.g. ``harmonized`` once its shaper is registered), with concurrency, and where the time goes.

Starts ``../shared/tools/hapi-fhir-r5/run.sh --port 0`` (or uses ``FHIR_BASE_URL``), builds N distinct synthetic
final reports (one patient, study and accession each; tests/publish/messages.py), converts them with the model
and publishes them with :class:`engine.publishers.fhir.FhirSink` in batches of ``--batch`` (the worker's unit:
``write`` each output, then ``flush``; outputs of different reports go out concurrently, up to ``--concurrency``).
Between runs the server is emptied with ``$expunge``, so every run writes new resources (first-time publishing,
the expensive case for the server).

    .venv/bin/python bench/bench_publish.py [--model rest] [--reports 200] [--runs 3] [--concurrency 1 4 8]
                                            [--batch 50] [--validate]

Prints per concurrency the median over the runs of: reports/s (conversion excluded, measured separately),
the share of request wall time per request kind (supersede search GET, document PUT, transaction POST: mostly
the server's own work) and the engine's CPU time per report (JSON, httpx, supersede logic).
Timing lives here, never in tests.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.convert import Converter, Output  # noqa: E402
from engine.errors import TransientError  # noqa: E402
from engine.publishers.client import FhirClient  # noqa: E402
from engine.publishers.fhir import FhirSink  # noqa: E402
from engine.publishers.settings import FhirSettings  # noqa: E402
from engine.sources.base import CONTENT_HL7V2, Envelope  # noqa: E402
from tests.publish.messages import oru  # noqa: E402

RUN_SH = ROOT.parent / "shared" / "tools" / "hapi-fhir-r5" / "run.sh"


class TimedClient(FhirClient):
    """The real client, adding up wall time per request kind (threads overlap, so shares are of summed time)."""

    def __init__(self, settings: FhirSettings) -> None:
        super().__init__(settings)
        self.spent: dict[str, float] = defaultdict(float)
        self.lock = threading.Lock()

    def request(self, method: str, url: str, body: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> dict[str, Any]:
        kind = f"{method} {url.split('/')[0] or 'transaction'}"
        t0 = time.perf_counter()
        try:
            return super().request(method, url, body, params)
        finally:
            with self.lock:
                self.spent[kind] += time.perf_counter() - t0


def start_server() -> tuple[str, subprocess.Popen[bytes] | None]:
    if os.environ.get("FHIR_BASE_URL"):
        return os.environ["FHIR_BASE_URL"], None
    proc = subprocess.Popen([str(RUN_SH), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    match = re.match(r"ready (http://\S+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"HAPI did not start: {line!r}")
    return match.group(1), proc


def expunge(base: str) -> None:
    httpx.post(f"{base}/$expunge", timeout=300, json={
        "resourceType": "Parameters", "parameter": [{"name": "expungeEverything", "valueBoolean": True}]
    }).raise_for_status()


def reports(n: int) -> list[bytes]:
    return [oru(filler=f"B{i:06d}", status="F", when=f"20260201{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}+0100",
                text=f"Benchmark report {i}. Lungs clear.", mrn=f"BP{i:06d}", study_uid=f"2.25.9{i:09d}")
            for i in range(n)]


def one_run(base: str, model: str, units: list[list[Output]], concurrency: int, batch: int,
            validate: bool) -> tuple[float, dict[str, float]]:
    """``units``: the outputs of each report (``rest``: the document, then the transaction); ``batch`` reports."""
    expunge(base)
    settings = FhirSettings.from_mapping({"model": model, "concurrency": concurrency, "validate": validate},
                                         {"FHIR_BASE_URL": base})
    client = TimedClient(settings)
    sink = FhirSink(settings, client)
    envelope = Envelope("bench", b"", CONTENT_HL7V2, "bench", 0.0)
    retries = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for start in range(0, len(units), batch):
        while True:  # as the worker does: a transient failure retries the batch (idempotent PUTs)
            for output in (o for unit in units[start:start + batch] for o in unit):
                sink.write(output, envelope)
            try:
                sink.flush()
                break
            except TransientError:
                retries += 1
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    sink.close()
    spent = dict(client.spent)
    spent["retried batches"] = retries
    spent["client cpu ms/report"] = 1000 * cpu / len(units)
    return len(units) / elapsed, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="rest")
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--validate", action="store_true", help="with the outgoing validation gate")
    args = parser.parse_args()

    messages = reports(args.reports)
    converter = Converter(model=args.model)
    t0 = time.perf_counter()
    outputs = [converter.convert(m).outputs for m in messages]
    convert_rate = len(outputs) / (time.perf_counter() - t0)
    base, proc = start_server()
    try:
        one_run(base, args.model, outputs[:20], 4, args.batch, args.validate)  # warm-up (JIT, connections)
        print(f"model {args.model}: {len(outputs)} reports, conversion {convert_rate:,.0f} reports/s "
              f"(not included below); server {base}")
        for concurrency in args.concurrency:
            rates, shares, retried, cpu = [], defaultdict(list), [], []
            for _ in range(args.runs):
                rate, spent = one_run(base, args.model, outputs, concurrency, args.batch, args.validate)
                rates.append(rate)
                retried.append(int(spent.pop("retried batches")))
                cpu.append(spent.pop("client cpu ms/report"))
                total = sum(spent.values()) or 1.0
                for kind, seconds in spent.items():
                    shares[kind].append(100 * seconds / total)
            share = ", ".join(f"{k} {statistics.median(v):.0f}%" for k, v in sorted(shares.items()))
            print(f"concurrency {concurrency}: median {statistics.median(rates):.1f} reports/s "
                  f"(runs {', '.join(f'{r:.1f}' for r in rates)}); request time: {share}; "
                  f"engine CPU {statistics.median(cpu):.1f} ms/report; "
                  f"batches retried after a transient error: {retried}")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


if __name__ == "__main__":
    main()
