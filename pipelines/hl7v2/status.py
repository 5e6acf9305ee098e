"""Result status vocabularies (HL7 tables 0123 and 0085 -> FHIR; mappings.md §1.10, §6; word statuses §7.14)."""

from __future__ import annotations

__all__ = ["obx_status", "report_status"]

# OBR-25 (table 0123) and the word statuses real RIS send.
_OBR25 = {
    "O": "registered", "I": "registered", "S": "registered",
    "P": "preliminary", "R": "partial", "A": "partial", "N": "partial", "M": "preliminary",
    "F": "final", "C": "corrected", "X": "cancelled", "D": "entered-in-error", "W": "entered-in-error",
    "B": "appended", "U": "final",
    "FINAL": "final", "FINALIZED": "final", "SIGNED": "final", "VERIFIED": "final", "APPROVED": "final",
    "PRELIM": "preliminary", "PRELIMINARY": "preliminary", "WET READ": "preliminary", "WETREAD": "preliminary",
    "DRAFT": "preliminary", "DICTATED": "preliminary", "TRANSCRIBED": "preliminary", "UNSIGNED": "preliminary",
    "CORRECTED": "corrected", "CORRECTION": "corrected", "REVISED": "corrected",
    "AMENDED": "amended", "ADDENDUM": "appended", "APPENDED": "appended",
    "CANCELLED": "cancelled", "CANCELED": "cancelled",
    "WRONG": "entered-in-error", "WRONG PATIENT": "entered-in-error", "DELETED": "entered-in-error",
    "DELETE": "entered-in-error", "ENTERED IN ERROR": "entered-in-error", "IN ERROR": "entered-in-error",
    "ERROR": "entered-in-error", "WITHDRAWN": "entered-in-error",
    "PARTIAL": "partial", "INCOMPLETE": "partial",
    "SCHEDULED": "registered", "ORDERED": "registered", "IN PROGRESS": "registered",
}  # fmt: skip

# OBX-11 (table 0085), mapped to a *report* status when OBR-25 is empty.
_OBX11 = {
    "F": "final", "P": "preliminary", "C": "corrected", "A": "amended", "D": "entered-in-error",
    "W": "entered-in-error", "X": "cancelled", "R": "partial", "S": "partial", "I": "registered",
    "B": "appended", "U": "final", "V": "final",
}  # fmt: skip


def _norm(value: str) -> str:
    return " ".join(value.replace("_", " ").replace("-", " ").upper().split())


def report_status(obr25: str, obx11: list[str]) -> str:
    """DiagnosticReport.status from OBR-25, else from the OBX-11 values of the group, else ``unknown``."""
    key = _norm(obr25)
    if key in _OBR25:
        return _OBR25[key]
    # one look-up per distinct value (a dictated report repeats one OBX-11 on every line)
    found = {_OBX11.get(_norm(v)) or _OBR25.get(_norm(v)) for v in set(obx11) if v.strip() and _norm(v) != "O"}
    found.discard(None)
    if len(found) == 1:
        return str(found.pop())
    # Text rows disagree. Unverified lines next to verified ones: the report is "partial" (data may be
    # incomplete or unverified). Only verified states (corrected lines next to final ones): the latest state.
    if found & {"preliminary", "partial", "registered"}:
        return "partial"
    for status in ("entered-in-error", "cancelled", "corrected", "amended", "appended", "final"):
        if status in found:
            return status
    return "unknown"


def obx_status(obx11: str) -> str | None:
    """Observation.status for an OBX (table 0085; word statuses accepted)."""
    key = _norm(obx11)
    mapped = {"partial": "preliminary", "appended": "final", "registered": "registered"}
    status = _OBX11.get(key) or _OBR25.get(key)
    return mapped.get(status, status) if status else None
