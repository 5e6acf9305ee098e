"""SR document flags -> DiagnosticReport / Composition status (mappings.md §4.5, §6).

| Preliminary | Completion | Verification | predecessor | status |
|---|---|---|---|---|
| PRELIMINARY | any | any | - | preliminary |
| absent/FINAL | PARTIAL | UNVERIFIED | - | partial |
| absent/FINAL | COMPLETE | UNVERIFIED | - | preliminary (complete but unsigned) |
| absent/FINAL | COMPLETE | VERIFIED | no | final |
| absent/FINAL | COMPLETE | VERIFIED | yes | corrected |
| any | PARTIAL | VERIFIED | - | invalid per PS3.3 (inverting gateways): preliminary |

A radiation dose report (title DCM 113701 / 113500) is a record written by the modality, which no
person verifies: COMPLETE means final there, PARTIAL partial (eu-imaging.md §3.7: final for a completed
RDSR). A file without any flag (Completion Flag is type 1 in the SR Document General module, so only
non-conformant writers omit it) is treated as partial.
"""

from __future__ import annotations

__all__ = ["observation_status", "report_status"]


def report_status(
    completion: str, verification: str, preliminary: str, has_predecessor: bool, device_record: bool = False
) -> str:
    if preliminary == "PRELIMINARY":
        return "preliminary"
    if device_record:
        return "final" if completion == "COMPLETE" else "partial"
    if completion == "COMPLETE" and verification == "VERIFIED":
        return "corrected" if has_predecessor else "final"
    if completion == "COMPLETE":
        return "preliminary"
    if verification == "VERIFIED":
        return "preliminary"  # PARTIAL + VERIFIED is not allowed by PS3.3
    return "partial"


def observation_status(report: str) -> str:
    return {"partial": "preliminary", "corrected": "corrected", "final": "final"}.get(report, "preliminary")
