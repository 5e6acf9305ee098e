"""The HTML console (Jinja2 templates in ``templates/``), rendered server-side from the same repository
and response models as the API (:mod:`engine.console.api`), with the same authentication and roles.

Pages: ``/console/`` dashboard (counters per source and status), ``/console/messages`` search,
``/console/messages/{id}`` detail (history, outputs, reprocess / discard buttons for ``operator``),
``/console/messages/{id}/original`` the original message as text (role ``phi``; audited). The buttons are
plain HTML forms posting to ``/console/messages/{id}/reprocess|discard`` (cross-origin posts are refused,
see :func:`engine.console.auth.same_origin`), answered with a redirect to the detail page.
"""

# no "from __future__ import annotations": FastAPI resolves the Annotated dependencies defined in functions

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from engine.console.api import Destinations, detail_model, summary_model
from engine.console.auth import Principal, require, same_origin
from engine.console.repository import ActionRefused, Repository, SearchQuery

__all__ = ["build_pages"]

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
_FIELDS = ("since", "until", "source", "status", "message_type", "control_id", "accession")


def _when(value: datetime | float) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES.env.filters["when"] = _when


def _instant(raw: str, name: str) -> float | None:
    if not raw.strip():
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError as exc:
        raise ValueError(f"{name}: not a date/time ({raw[:40]!r})") from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def build_pages(repo: Repository, destinations: Destinations, current_user: Any, page_size: int) -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)
    User = Annotated[Principal, Depends(current_user)]

    def page(request: Request, name: str, user: Principal, **context: Any) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, name, {"user": user, **context},
                                          headers={"Cache-Control": "no-store"})

    @router.get("/", response_class=HTMLResponse)
    def dashboard(request: Request, user: User) -> HTMLResponse:
        sources = repo.sources()
        statuses = sorted({s for src in sources for s in src["counts"]})
        totals = {s: sum(src["counts"].get(s, 0) for src in sources) for s in statuses}
        return page(request, "dashboard.html", user, sources=sources, statuses=statuses, totals=totals)

    @router.get("/messages", response_class=HTMLResponse)
    def messages(request: Request, user: User) -> HTMLResponse:
        params = {k: request.query_params.get(k, "") for k in _FIELDS}
        error = ""
        items: list[Any] = []
        next_id = None
        try:
            before = request.query_params.get("before_id", "")
            query = SearchQuery(
                since=_instant(params["since"], "since"),
                until=_instant(params["until"], "until"),
                source=params["source"] or None,
                status=params["status"] or None,
                message_type=params["message_type"] or None,
                control_id=params["control_id"].strip() or None,
                accession=params["accession"] or None,
                before_id=int(before) if before.isdigit() else None,
                limit=page_size,
            )
            found, next_id = repo.search(query)
            items = [summary_model(i) for i in found]
        except ValueError as exc:
            error = str(exc)
        sources = [s["source"] for s in repo.sources()]
        return page(request, "messages.html", user, params=params, items=items, next_id=next_id, error=error,
                    sources=sources)

    @router.get("/messages/{message_id}", response_class=HTMLResponse)
    def message(request: Request, user: User, message_id: int) -> HTMLResponse:
        item = repo.detail(message_id)
        if item is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message {message_id}")
        notice = request.query_params.get("done", "")
        return page(request, "message.html", user, m=detail_model(item, destinations), notice=notice,
                    error=request.query_params.get("error", "")[:300])

    @router.get("/messages/{message_id}/original", response_class=HTMLResponse)
    def original(request: Request, user: User, message_id: int) -> HTMLResponse:
        require(user, "phi")
        data = repo.original(message_id)
        if data is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message {message_id}")
        repo.audit.record(user, "view_original", message_id, {"via": "console"})
        payload, content_type = data
        text = None
        if "dicom" not in content_type:
            text = payload.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        return page(request, "original.html", user, message_id=message_id, text=text, size=len(payload),
                    content_type=content_type)

    def action(name: str, message_id: int, user: Principal) -> Response:
        require(user, "operator")
        try:
            if name == "reprocess":
                repo.reprocess(message_id, user)
            else:
                repo.discard(message_id, user)
        except KeyError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message {message_id}") from exc
        except ActionRefused as exc:
            return RedirectResponse(f"/console/messages/{message_id}?error={exc}"[:500], status.HTTP_303_SEE_OTHER)
        return RedirectResponse(f"/console/messages/{message_id}?done={name}", status.HTTP_303_SEE_OTHER)

    @router.post("/messages/{message_id}/reprocess", dependencies=[Depends(same_origin)])
    def reprocess(user: User, message_id: int) -> Response:
        return action("reprocess", message_id, user)

    @router.post("/messages/{message_id}/discard", dependencies=[Depends(same_origin)])
    def discard(user: User, message_id: int) -> Response:
        return action("discard", message_id, user)

    return router
