"""Message console and management API (FastAPI + Jinja2, served by uvicorn in a thread of the engine).

Off unless the ``console`` settings section is present. Modules: :mod:`.settings` (config section and
credentials), :mod:`.auth` (HTTP Basic / bearer authentication, roles), :mod:`.repository` (searches and
actions on the message store), :mod:`.audit` (audit log: JSON lines file + store table), :mod:`.api`
(``/api/v1``, OpenAPI at ``/api/openapi.json``), :mod:`.pages` (the HTML console), :mod:`.server`
(start/stop). Importing this package does not import FastAPI.
"""

from __future__ import annotations

__all__: list[str] = []
