"""PID -> the neutral :class:`~pipelines.common.model.Patient` (v2-to-FHIR PID[Patient], mappings.md §1.3):
PID-3 (else PID-2/PID-4) identifiers, every PID-5 name with its XPN.7 use, PID-7 birth date and time, PID-8."""

from __future__ import annotations

from pipelines.common.model import Patient, Person
from pipelines.context import MappingContext, SenderProfile
from pipelines.hl7v2 import datatypes as dt
from pipelines.hl7v2.er7 import Delimiters
from pipelines.hl7v2.fields import component, repetitions
from pipelines.hl7v2.fields import field as fld

__all__ = ["patient"]

_GENDER = {"F": "female", "M": "male", "O": "other", "U": "unknown", "A": "other", "N": "other"}


def patient(
    pid: list[str], d: Delimiters, ctx: MappingContext, profile: SenderProfile, base: str, tz: str = "+00:00"
) -> Patient:
    """The patient of one PATIENT_RESULT group; ``tz`` is the offset for a PID-7 time that carries none."""
    fallback = profile.patient_id_system or f"{base}/patient-id"
    idents = dt.cx(fld(pid, 3), d, ctx.system_base, fallback)
    if not idents:
        idents = dt.cx(fld(pid, 2), d, ctx.system_base, fallback) + dt.cx(fld(pid, 4), d, ctx.system_base, fallback)
    family, given, prefix, suffix = dt.xpn(fld(pid, 5), d)
    names = _other_names(fld(pid, 5), d)
    gender = _GENDER.get(component(fld(pid, 8), d, 1).strip().upper())
    return Patient(
        identifiers=idents,
        family=family,
        given=given,
        prefix=prefix,
        suffix=suffix,
        birth_date=dt.dtm_date(fld(pid, 7)),
        gender=gender,
        birth_time=_birth_time(fld(pid, 7), tz),
        name_use=_name_use(fld(pid, 5), d) if names else None,
        other_names=names,
    )


#: XPN.7 name type (HL7 table 0200) -> FHIR HumanName.use (v2-to-FHIR NameType map; the unambiguous codes).
_NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "S": "anonymous"}


def _name_use(raw_xpn: str, d: Delimiters) -> str | None:
    return _NAME_USE.get(component(raw_xpn, d, 7).strip().upper())


def _other_names(raw: str, d: Delimiters) -> list[tuple[Person, str | None]]:
    """PID-5 repetitions after the first (maiden, alias, display names; v2-to-FHIR PID-5 -> Patient.name):
    each a name with its XPN.7 use. They were dropped."""
    out: list[tuple[Person, str | None]] = []
    for rep in repetitions(raw, d)[1:]:
        family, given, prefix, suffix = dt.xpn(rep, d)
        if family or given:
            out.append((Person(family=family, given=given, prefix=prefix, suffix=suffix), _name_use(rep, d)))
    return out


def _birth_time(raw: str, tz: str) -> str | None:
    """PID-7 with a time of day (more than 8 characters: v2-to-FHIR PID-7 -> patient-birthTime), else None. A
    time of all zeros (``19350928000000``) is how many systems pad a birth date, not a birth at midnight: no
    birth time is claimed from it."""
    value = raw.strip()
    if len(value) <= 8 or not value[8:].split("+")[0].split("-")[0].strip("0."):
        return None
    born = dt.dtm_datetime(raw, tz)
    return born if born and "T" in born else None
