"""Report sections: EU Composition slices and the heading codes that map onto them (mappings.md §4.2)."""

from __future__ import annotations

__all__ = [
    "ENTRY_TYPES",
    "LONGEST_HEADING",
    "MANDATORY",
    "SECTIONS",
    "entry_allowed",
    "entry_section",
    "section_for_code",
    "section_for_heading",
]

#: key -> (LOINC code, display, title). The first nine are EU CompositionEuImaging slices; conclusion,
#: addendum and report have no (or a generic) slice and go in the open slicing.
SECTIONS: dict[str, tuple[str, str, str]] = {
    "imagingstudy": ("18726-0", "Radiology studies (set)", "Imaging study"),
    "order": ("55115-0", "Requested imaging studies information Document", "Order"),
    "history": ("11329-0", "History general Narrative - Reported", "History"),
    "procedure": ("55111-9", "Current imaging procedure descriptions Document", "Procedure"),
    "comparison": ("18834-2", "Radiology Comparison study (narrative)", "Comparison"),
    "findings": ("59776-5", "Procedure findings Narrative", "Findings"),
    "impression": ("19005-8", "Radiology Imaging study [Impression] (narrative)", "Impression"),
    "recommendation": ("18783-1", "Radiology Study recommendation (narrative)", "Recommendation"),
    "communication": ("73568-8", "Radiology Communication of critical results (narrative)", "Communication"),
    "conclusion": ("55110-1", "Conclusions [Interpretation] Document", "Conclusion"),
    "addendum": ("55107-7", "Addendum Document", "Addendum"),
    "report": ("LP173421-1", "Report", "Report"),
}

MANDATORY = ("imagingstudy", "order", "history", "procedure")

_DOSE = "http://hl7.eu/fhir/imaging-r5/StructureDefinition/ObservationRadiationDoseEuImaging"

#: Resource types the entry slices of each CompositionEuImaging section take (IG 1.0.0-ballot,
#: ``Composition.section:<slice>.entry:<entry slice>`` target profiles); ``None``: the section has no entry
#: slices, any resource may be listed (communication, report and the extra conclusion/addendum sections).
#: The procedure section takes an Observation only when it is an ObservationRadiationDoseEuImaging.
ENTRY_TYPES: dict[str, frozenset[str] | None] = {
    "imagingstudy": frozenset({"ImagingStudy"}),
    "order": frozenset({"ServiceRequest"}),
    "history": frozenset({"Observation", "Condition", "Device", "MedicationAdministration", "MedicationRequest"}),
    "procedure": frozenset({"Procedure", "AdverseEvent", "Observation"}),
    "comparison": frozenset({"ImagingStudy", "ImagingSelection"}),
    "findings": frozenset({"Observation", "DocumentReference", "ImagingSelection"}),
    # The impression slices discriminate by profile on ``$this`` (the Reference, not resolve()): every entry
    # matches several slices and the official validator reports an error (the IG defect the procedure section's
    # waiver proves; no waiver is added for this one). Impression findings and key images are entries of the
    # findings section; their words stay in the impression narrative and codes in conclusionCode.
    "impression": frozenset(),
    "recommendation": frozenset({"CarePlan", "ServiceRequest"}),
    "communication": None,
    "conclusion": None,
    "addendum": None,
    "report": None,
}


def entry_allowed(section: str, resource: dict[str, object]) -> bool:
    """May ``resource`` be an entry of ``section`` (see :data:`ENTRY_TYPES`)?"""
    allowed = ENTRY_TYPES.get(section)
    if allowed is None:
        return True
    rtype = resource.get("resourceType")
    if rtype not in allowed:
        return False
    if section == "procedure" and rtype == "Observation":
        meta = resource.get("meta")
        profiles = meta.get("profile", []) if isinstance(meta, dict) else []
        return isinstance(profiles, list) and _DOSE in profiles
    return True


# LOINC (CID 7001) and retired DCM 1210xx heading codes -> section key.
_CODES: dict[str, str] = {
    "11329-0": "history", "121060": "history", "55108-5": "history", "121110": "history",
    "18785-6": "order", "121109": "order", "55115-0": "order", "121062": "order",
    "55111-9": "procedure", "121064": "procedure", "55109-3": "procedure", "121113": "procedure",
    "73569-6": "procedure",
    "18834-2": "comparison", "121068": "comparison", "55114-3": "comparison", "121066": "comparison",
    "59776-5": "findings", "121070": "findings", "121071": "findings",
    "19005-8": "impression", "121072": "impression", "121073": "impression", "55112-7": "impression",
    "121111": "impression",
    "18783-1": "recommendation", "121074": "recommendation", "121075": "recommendation",
    "73568-8": "communication",
    "55110-1": "conclusion", "121076": "conclusion", "121077": "conclusion",
    "55107-7": "addendum", "121078": "addendum",
    "18782-3": "findings",  # Radiology Study observation (narrative)
}  # fmt: skip

# Leading words of a heading line ("FINDINGS:", "Clinical history -") -> section key.
_HEADINGS: dict[str, str] = {
    "history": "history", "clinical history": "history", "clinical information": "history",
    "indication": "history", "indications": "history", "reason for exam": "history",
    "reason for study": "history", "clinical indication": "history", "patient presentation": "history",
    "request": "order", "order": "order",
    "procedure": "procedure", "technique": "procedure", "examination": "procedure", "exam": "procedure",
    "procedure description": "procedure", "protocol": "procedure",
    "comparison": "comparison", "comparisons": "comparison", "prior studies": "comparison",
    "previous findings": "comparison",
    "findings": "findings", "finding": "findings", "report": "findings",
    "impression": "impression", "impressions": "impression", "summary": "impression",
    "recommendation": "recommendation", "recommendations": "recommendation",
    "conclusion": "conclusion", "conclusions": "conclusion",
    "addendum": "addendum",
    "communication": "communication", "critical results": "communication",
}  # fmt: skip


def entry_section(section: str, resource: dict[str, object]) -> str:
    """The section an entry goes in: ``section`` when its EU slices take the resource (:func:`entry_allowed`),
    else ``findings`` when findings takes it (an Observation dictated under a recommendation heading: the
    recommendation section holds only CarePlan/ServiceRequest), else the open ``report`` section."""
    if entry_allowed(section, resource):
        return section
    return "findings" if entry_allowed("findings", resource) else "report"


_LONGEST = max(len(k) for k in _HEADINGS)
#: Length of the longest heading word: a longer line with no colon, not indented and not ending in "." is never
#: a heading (:func:`section_for_heading` returns None for it; callers may skip the call).
LONGEST_HEADING = _LONGEST


def section_for_code(code: str) -> str | None:
    return _CODES.get(code.strip())


def section_for_heading(line: str) -> tuple[str, str] | None:
    """If ``line`` starts with a known heading word followed by ':' (or is only the heading), return
    (section key, rest of the line)."""
    stripped = line.strip()
    colon = stripped.find(":")
    if colon < 0:  # a heading alone on its line ("FINDINGS", "Impression."): short
        if len(stripped) > _LONGEST and stripped[-1:] != ".":
            return None  # the usual dictated line: too long for a heading word (fast path)
        core = stripped.rstrip(".")
        key = _HEADINGS.get(core.lower()) if len(core) <= _LONGEST else None
        return (key, "") if key else None
    if colon > 40:
        return None
    key = _HEADINGS.get(stripped[:colon].strip().lower())
    return (key, stripped[colon + 1 :].strip()) if key else None
