"""The management API, ``/api/v1`` (OpenAPI 3.1 document at ``/api/openapi.json``).

| method and path | role | what |
|---|---|---|
| ``GET /api/v1/messages`` | any | search (time, source, status, message type, control id, accession) |
| ``GET /api/v1/messages/{id}`` | any | PHI-free detail: history, outputs and where they went, audit |
| ``GET /api/v1/messages/{id}/original`` | ``phi`` | the original bytes (audited) |
| ``GET /api/v1/messages/{id}/outputs/{bundle_id}`` | ``phi`` | a Bundle from the folder sink (audited) |
| ``POST /api/v1/messages/{id}/reprocess`` | ``operator`` | re-queue a finished message (audited) |
| ``POST /api/v1/messages/{id}/discard`` | ``operator`` | mark a dead letter discarded (audited) |
| ``GET /api/v1/sources`` | any | per-source counts by status (the dashboard) |

Errors are JSON ``{"detail": "..."}``: 401 without valid credentials, 403 without the role, 404 unknown
message, 409 the action does not fit the message's status, 422 invalid parameters, 503 store or audit log
unavailable (retry).
"""

# no "from __future__ import annotations": FastAPI resolves the Annotated dependencies defined in functions

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from engine.console.auth import Principal, require, same_origin
from engine.console.repository import ActionRefused, Repository, SearchQuery

__all__ = ["Destinations", "build_router"]

_BUNDLE_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# Query parameter syntax (strict, so that malformed searches are 422 rather than silently empty results)
_SOURCE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
_STATUS = r"^[a-z][a-z_]{0,39}$"
_TYPE = r"^[A-Za-z0-9_.^]{1,100}$"
_TEXT = r"^[^\x00-\x1f\x7f]{1,200}$"  # HL7 ST / DICOM values: any text without control characters
_NUMBER = re.compile(r"^\s*[+-]?[0-9]+(\.[0-9]*)?\s*$")
_RFC3339 = re.compile(r"^([0-9]{4})-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:([0-9]{2})")


def _iso_only(value: object) -> object:
    """Query date/times are RFC 3339 / ISO 8601 (OpenAPI ``format: date-time``). pydantic would also take epoch
    numbers (refused here) and refuses two valid RFC 3339 forms, fixed here: a leap second (``:60`` is read
    as ``:59``) and year 0000 (read as the earliest time)."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")
    if isinstance(value, str) and (match := _RFC3339.match(value)):
        if match.group(1) == "0000":
            return datetime(1, 1, 1, tzinfo=UTC)
        if match.group(2) == "60":
            return value[: match.start(2)] + "59" + value[match.end(2):]
    return value


def single_valued(request: Request) -> None:
    """422 when a query parameter is given more than once (``?status=a&status=b``): every parameter here is a
    single value, and silently taking the last one would search for something else than was asked."""
    seen: set[str] = set()
    for name, _value in request.query_params.multi_items():
        if name in seen:
            raise RequestValidationError(
                [{"type": "repeated", "loc": ("query", name), "msg": "given more than once", "input": None}]
            )
        seen.add(name)


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


Instant = Annotated[datetime | None, BeforeValidator(_iso_only), AfterValidator(_aware)]
MessageId = Annotated[int, PathParam(ge=1, le=2**62, description="envelope id (the store's row id)")]


@dataclass(frozen=True, slots=True)
class Destinations:
    """Where outputs go, from the deployment settings: the folder sink directory and/or Kafka topic."""

    folder: Path | None = None
    kafka_topic: str | None = None

    def places(self, bundle_id: str) -> list[str]:
        out = []
        if self.folder is not None:
            out.append(f"folder:{self.folder / (bundle_id + '.json')}")
        if self.kafka_topic is not None:
            out.append(f"kafka:{self.kafka_topic}")
        return out


class Event(BaseModel):
    at: datetime
    event: str = Field(description="received, mapped (converted), published, failed (rejected), filtered, "
                                   "replayed, discarded")
    status: str
    attempts: int
    replays: int
    error_class: str | None
    error_reason: str | None
    outputs: list[str]


class MessageSummary(BaseModel):
    id: int
    source: str
    content_type: str
    status: str
    message_type: str | None = Field(description="MSH-9 or the DICOM SOP Class keyword")
    control_id: str | None = Field(description="MSH-10 or the SOP Instance UID")
    received_at: datetime
    updated_at: datetime
    attempts: int
    replays: int
    error_class: str | None
    error_reason: str | None = Field(description="one PHI-free line")
    outputs: list[str] = Field(description="Bundle ids")


class MessagePage(BaseModel):
    items: list[MessageSummary]
    next_before_id: int | None = Field(description="pass as before_id for the next (older) page")


class OutputPlace(BaseModel):
    bundle_id: str
    published_to: list[str]


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    action: str


class MessageDetail(MessageSummary):
    headers: dict[str, str] = Field(description="PHI-free provenance recorded at landing")
    size: int
    sha256: str
    accession_hashes: list[str]
    history: list[Event]
    published: list[OutputPlace]
    audit: list[AuditEntry]


class SourceCounters(BaseModel):
    source: str
    counts: dict[str, int]
    total: int
    first_received_at: datetime
    last_received_at: datetime


class Problem(BaseModel):
    detail: str


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def summary_model(item: dict[str, Any]) -> MessageSummary:
    return MessageSummary(**{**item, "received_at": _ts(item["received_at"]), "updated_at": _ts(item["updated_at"])})


def detail_model(item: dict[str, Any], destinations: Destinations) -> MessageDetail:
    return MessageDetail(
        **{
            **item,
            "received_at": _ts(item["received_at"]),
            "updated_at": _ts(item["updated_at"]),
            "history": [Event(**{**e, "at": _ts(e["at"])}) for e in item["history"]],
            "audit": [AuditEntry(**{**a, "at": _ts(a["at"])}) for a in item["audit"]],
        },
        published=[OutputPlace(bundle_id=b, published_to=destinations.places(b)) for b in item["outputs"]],
    )


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "authentication required"},
    403: {"model": Problem, "description": "role missing"},
    503: {"model": Problem, "description": "store or audit log unavailable"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such message"}}
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": Problem, "description": "not allowed in this status"}}


def build_router(repo: Repository, destinations: Destinations, current_user: Any, page_size: int) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=_ERRORS)
    User = Annotated[Principal, Depends(current_user)]

    def found(item: dict[str, Any] | None, message_id: int) -> dict[str, Any]:
        if item is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message {message_id}")
        return item

    @router.get("/messages", response_model=MessagePage, summary="Search messages (newest first)",
                dependencies=[Depends(single_valued)])
    def search(
        user: User,
        since: Annotated[Instant, Query(description="received at or after (ISO 8601; UTC without offset)")] = None,
        until: Annotated[Instant, Query(description="received before (ISO 8601; UTC without offset)")] = None,
        source: Annotated[str | None, Query(pattern=_SOURCE, description="source name (sources.*.name)")] = None,
        status_: Annotated[str | None, Query(alias="status", pattern=_STATUS,
                                             description="received, mapped, published, failed, filtered, ...")] = None,
        message_type: Annotated[str | None, Query(
            pattern=_TYPE, description="MSH-9 or its leading components (ORU^R01), or a SOP Class keyword"
        )] = None,
        control_id: Annotated[str | None, Query(pattern=_TEXT, description="MSH-10 or SOP Instance UID")] = None,
        accession: Annotated[str | None, Query(pattern=_TEXT,
                                               description="accession number; hashed, never stored")] = None,
        accession_hash: Annotated[str | None, Query(pattern="^[0-9a-fA-F]{64}$")] = None,
        before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = page_size,
    ) -> MessagePage:
        items, next_id = repo.search(
            SearchQuery(
                since=_epoch(since), until=_epoch(until), source=source, status=status_, message_type=message_type,
                control_id=control_id, accession=accession, accession_hash=accession_hash, before_id=before_id,
                limit=limit,
            )
        )
        return MessagePage(items=[summary_model(i) for i in items], next_before_id=next_id)

    @router.get("/messages/{message_id}", response_model=MessageDetail, responses=_NOT_FOUND,
                summary="A message's PHI-free detail, history and outputs")
    def detail(user: User, message_id: MessageId) -> MessageDetail:
        return detail_model(found(repo.detail(message_id), message_id), destinations)

    @router.get(
        "/messages/{message_id}/original",
        responses={**_NOT_FOUND, 200: {"content": {"application/octet-stream": {}}, "description": "original bytes"}},
        response_class=Response,
        summary="Original bytes (role phi; audited)",
    )
    def original(user: User, message_id: MessageId) -> Response:
        require(user, "phi")
        data = repo.original(message_id)
        if data is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message {message_id}")
        repo.audit.record(user, "view_original", message_id, {})
        return Response(data[0], media_type="application/octet-stream",
                        headers={"X-Content-Type": data[1], "Cache-Control": "no-store"})

    @router.get(
        "/messages/{message_id}/outputs/{bundle_id}",
        responses={**_NOT_FOUND, 200: {"content": {"application/fhir+json": {}}, "description": "the Bundle"}},
        response_class=Response,
        summary="A Bundle the message produced, from the folder sink (role phi; audited)",
    )
    def output(
        user: User, message_id: MessageId, bundle_id: Annotated[str, PathParam(max_length=64)]
    ) -> Response:
        require(user, "phi")
        item = found(repo.summary(message_id), message_id)
        if not _BUNDLE_ID.match(bundle_id) or bundle_id not in item["outputs"] or destinations.folder is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"message {message_id} has no output {bundle_id}"[:200])
        try:
            body = (destinations.folder / f"{bundle_id}.json").read_bytes()
        except FileNotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "the Bundle is no longer in the folder sink") from exc
        repo.audit.record(user, "view_output", message_id, {"bundle_id": bundle_id})
        return Response(body, media_type="application/fhir+json", headers={"Cache-Control": "no-store"})

    def act(action: str, user: Principal, message_id: int) -> MessageSummary:
        require(user, "operator")
        try:
            item = repo.reprocess(message_id, user) if action == "reprocess" else repo.discard(message_id, user)
        except KeyError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message {message_id}") from exc
        except ActionRefused as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        return summary_model(item)

    @router.post("/messages/{message_id}/reprocess", response_model=MessageSummary,
                 responses={**_NOT_FOUND, **_CONFLICT}, dependencies=[Depends(same_origin)],
                 summary="Re-queue a finished message, like `engine replay --id` (role operator; audited)")
    def reprocess(user: User, message_id: MessageId) -> MessageSummary:
        return act("reprocess", user, message_id)

    @router.post("/messages/{message_id}/discard", response_model=MessageSummary,
                 responses={**_NOT_FOUND, **_CONFLICT}, dependencies=[Depends(same_origin)],
                 summary="Mark a dead letter discarded; nothing is deleted (role operator; audited)")
    def discard(user: User, message_id: MessageId) -> MessageSummary:
        return act("discard", user, message_id)

    @router.get("/sources", response_model=list[SourceCounters], summary="Counters per source and status")
    def sources(user: User) -> list[SourceCounters]:
        return [
            SourceCounters(**{**s, "first_received_at": _ts(s["first_received_at"]),
                              "last_received_at": _ts(s["last_received_at"])})
            for s in repo.sources()
        ]

    return router
