"""``/livez``, ``/readyz`` and ``/metrics`` on a stdlib ``ThreadingHTTPServer`` thread.

* ``/livez``: 200 while the main loop heartbeat is younger than ``live_timeout`` seconds, else 503.
* ``/readyz``: 200 when every readiness check passes (listeners bound, store and sinks usable), else 503;
  the JSON body names each check.
* ``/metrics``: Prometheus text exposition of the runtime's registry.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from engine.observability.metrics import Heartbeat, Metrics

__all__ = ["HealthServer"]

log = logging.getLogger("engine.health")


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        heartbeat: Heartbeat,
        checks: Mapping[str, Callable[[], bool]],
        live_timeout: float = 30.0,
    ) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/livez":
                    age = heartbeat.age()
                    ok = age <= live_timeout
                    self._send(200 if ok else 503, {"status": "ok" if ok else "stale", "heartbeat_age": age})
                elif path == "/readyz":
                    results = server.readiness()
                    ok = all(results.values())
                    self._send(200 if ok else 503, {"status": "ok" if ok else "not ready", "checks": results})
                elif path == "/metrics":
                    body = metrics.exposition()
                    self.send_response(200)
                    self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self._send(404, {"status": "not found"})

            def _send(self, code: int, payload: object) -> None:
                body = json.dumps(payload, sort_keys=True).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._checks = dict(checks)
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def add_check(self, name: str, check: Callable[[], bool]) -> None:
        self._checks[name] = check

    def readiness(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for name, check in list(self._checks.items()):
            try:
                results[name] = bool(check())
            except Exception:  # a failing probe means "not ready", never a crash of the server
                results[name] = False
        return results

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)
        self._thread.start()
        log.info("health endpoints listening", extra={"port": self.port})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
