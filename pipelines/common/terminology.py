"""Is a code taken from a message valid in the code system we would write it under?

Rule (issue 8): a code goes under an HL7 (THO), LOINC, SNOMED CT, DICOM or UCUM system only when it is
valid there; otherwise the caller keeps its words in ``text`` (or a coding under a local site system).

* HL7 v2 tables and ``v3-ObservationInterpretation``: the complete code lists of the HL7 Terminology
  package (THO 7.0.1), shipped as ``data/tho-codes.txt`` (``scripts/gen_terminology.py`` regenerates it).
  A code matches exactly, or case-insensitively when that is unambiguous (``mr`` -> ``MR``). A table that
  THO does not hold completely validates nothing.
* LOINC: ``nnnnn-c`` with the LOINC mod-10 check digit (LOINC Users' Guide, appendix), or a part / answer /
  group code (``LP``/``LA``/``LG``/``LL`` + digits + ``-`` + digit).
* SNOMED CT: an SCTID (6-18 digits, concept partition ``00``/``10``, Verhoeff check digit; SNOMED CT
  Technical Implementation Guide 6.7). Legacy SNOMED-RT/SRT codes (``T-D0050``) are not SCTIDs.
* DICOM (DCM): PS3.16 code values are short (SH, <= 16) and made of letters, digits, ``-``, ``_``, ``.``.
* UCUM: :mod:`pipelines.common.ucum` parses the expression against the UCUM atoms and prefixes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

__all__ = [
    "DCM",
    "LOINC",
    "SCT",
    "THO",
    "UCUM",
    "dcm_ok",
    "loinc_ok",
    "snomed_ok",
    "tho_code",
    "valid_code",
]

THO = "http://terminology.hl7.org/CodeSystem/"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"


@lru_cache(maxsize=1)
def _tho() -> dict[str, tuple[frozenset[str], dict[str, str]]]:
    text = resources.files("pipelines.common").joinpath("data/tho-codes.txt").read_text(encoding="utf-8")
    out: dict[str, tuple[frozenset[str], dict[str, str]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        cs_id, *codes = line.split("\t")
        folded: dict[str, str] = {}
        clash: set[str] = set()
        for c in codes:
            key = c.upper()
            if key in folded and folded[key] != c:
                clash.add(key)
            folded[key] = c
        for key in clash:
            del folded[key]
        out[cs_id] = (frozenset(codes), folded)
    return out


def tho_code(cs_id: str, value: str) -> str | None:
    """The THO code system ``cs_id`` (``v2-0203``, ``v3-ObservationInterpretation``)'s spelling of ``value``,
    or None when the code system does not have it (or is not held completely)."""
    entry = _tho().get(cs_id)
    if entry is None:
        return None
    codes, folded = entry
    if value in codes:
        return value
    return folded.get(value.strip().upper())


_LOINC = re.compile(r"([0-9]{1,7})-([0-9])")
_LOINC_PART = re.compile(r"L[APGL][0-9]{1,10}-[0-9]")


def loinc_ok(value: str) -> bool:
    """A LOINC term code with a correct mod-10 check digit, or a LOINC part/answer/group code."""
    m = _LOINC.fullmatch(value)
    if m is None:
        return _LOINC_PART.fullmatch(value) is not None
    digits, check = m.groups()
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 0:  # odd positions from the right are doubled
            n *= 2
            n = n // 10 + n % 10
        total += n
    return (10 - total % 10) % 10 == int(check)


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)  # fmt: skip
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)  # fmt: skip


def snomed_ok(value: str) -> bool:
    """An SCTID for a concept: 6-18 digits, no leading zero, partition 00/10, Verhoeff check digit."""
    if not (6 <= len(value) <= 18 and value.isdigit() and value[0] != "0"):
        return False
    if value[-3:-1] not in ("00", "10"):
        return False
    c = 0
    for i, ch in enumerate(reversed(value)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][int(ch)]]
    return c == 0


_DCM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,15}")


def dcm_ok(value: str) -> bool:
    """A plausible DICOM PS3.16 code value (SH: at most 16 characters, no spaces)."""
    return _DCM.fullmatch(value) is not None


def valid_code(system: str, value: str) -> str | None:
    """``value`` as written under ``system`` when it is valid there, else None. Systems we cannot check
    (local namespaces, OIDs, RadLex, ICD, CPT) accept any non-empty code."""
    if not value:
        return None
    if system.startswith(THO):
        return tho_code(system[len(THO) :], value)
    if system == LOINC:
        return value if loinc_ok(value) else None
    if system == SCT:
        return value if snomed_ok(value) else None
    if system == DCM:
        return value if dcm_ok(value) else None
    if system == UCUM:
        from pipelines.common.ucum import ucum_ok

        return value if ucum_ok(value) else None
    return value
