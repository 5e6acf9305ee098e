"""Build the FastAPI application and serve it with uvicorn in a thread of the engine.

:func:`create_app` is the ASGI app (API + console; tests use it directly). :class:`ConsoleServer` binds
the socket in the caller's thread (so a port in use fails the engine's start with exit 2), then runs
``uvicorn.Server`` on it in a daemon thread; :meth:`ConsoleServer.stop` asks it to exit and joins.
uvicorn's access log is off: URLs may carry search terms. There is no Swagger UI page: FastAPI's loads its
scripts from a CDN, which an authenticated console next to PHI must not do (and which is unreachable offline);
the OpenAPI document is served at ``/api/openapi.json``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from engine.console.api import Destinations, build_router
from engine.console.audit import AuditLog
from engine.console.auth import Authenticator
from engine.console.pages import build_pages
from engine.console.repository import Repository
from engine.console.settings import ConsoleSettings
from engine.errors import ConfigError, TransientError
from engine.store import MessageStore

__all__ = ["ConsoleServer", "create_app", "start_console"]

log = logging.getLogger("engine.console")

DESCRIPTION = """Management API of the imaging report engine: search stored messages by PHI-free keys, read a
message's history and outputs, reprocess or discard dead letters. HTTP Basic or bearer authentication;
roles `operator` (reprocess, discard) and `phi` (original bytes, report text). See the README section
"Message console and management API"."""


def create_app(
    settings: ConsoleSettings, store: MessageStore, destinations: Destinations, audit_path: Path
) -> FastAPI:
    app = FastAPI(
        title="Imaging report engine management API",
        version="1",
        description=DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url=None,  # FastAPI's Swagger UI loads scripts from a CDN: no third-party code next to PHI
        redoc_url=None,
    )
    repo = Repository(store, AuditLog(audit_path, store))
    current_user = Authenticator(settings.users).dependency()
    app.include_router(build_router(repo, destinations, current_user, settings.page_size))
    app.include_router(build_pages(repo, destinations, current_user, settings.page_size))

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/console/")

    @app.exception_handler(TransientError)
    def unavailable(request: Request, exc: TransientError) -> JSONResponse:
        log.warning("console: store or audit log unavailable", extra={"error_class": type(exc).__name__})
        return JSONResponse({"detail": "temporarily unavailable, retry"}, status_code=503,
                            headers={"Retry-After": "1"})

    return app


class ConsoleServer:
    def __init__(
        self, app: Any, host: str, port: int, tls: tuple[Path, Path] | None = None
    ) -> None:
        if tls is not None:
            try:  # fail the start with a config error now rather than in uvicorn's thread
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(tls[0]), str(tls[1]))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"console.tls: cannot load the certificate and key ({exc})") from exc
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise ConfigError(f"console: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
        self._socket.listen(128)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="console", daemon=True
        )
        self._thread.start()
        log.info("console listening", extra={"port": self.port})

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._socket.close()


def start_console(settings: Any, store: MessageStore | None) -> ConsoleServer:
    """Start the console of a runtime (``settings`` is :class:`engine.settings.Settings`)."""
    console: ConsoleSettings = settings.console
    if store is None:
        raise ConfigError("console: needs the message store (not available with sources.kafka)")
    folder = settings.folder_sink.path if settings.folder_sink is not None else None
    topic = getattr(settings.kafka_sink, "output_topic", None) if settings.kafka_sink is not None else None
    audit = console.audit_log or store.path.with_name("console-audit.jsonl")
    app = create_app(console, store, Destinations(folder, topic), audit)
    tls = (console.tls_cert, console.tls_key) if console.tls_cert and console.tls_key else None
    server = ConsoleServer(app, console.host, console.port, tls)
    server.start()
    return server
