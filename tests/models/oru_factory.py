"""Synthetic ORU^R01 messages for one study of the HL7 SR IG sample (``dicom-sr-hl7-ig``): the same patient
(PID-11235, sending facility "Test Hospital" -> the same patient-id namespace as the SR), accession
ACSN-235813 (issuer http://test-hospital.org/acsn, as in the SR's Issuer of Accession Number) and Study
Instance UID, so ORU and SR of one accession must end on the same harmonized resources."""

from __future__ import annotations

from pipelines.context import MappingContext, SenderProfile

__all__ = ["ACCESSION", "ACCESSION_SYSTEM", "SR_FILE", "STUDY_UID", "context", "oru"]

STUDY_UID = "1.2.840.113747.20080222.83311413144566317081790268995"
ACCESSION = "ACSN-235813"
ACCESSION_SYSTEM = "http://test-hospital.org/acsn"
SR_FILE = "dicom-sr-hl7-ig/Example-MeasurementReport.json"


def context() -> MappingContext:
    profile = SenderProfile(name="test-hospital", sending_facility="Test Hospital", accession_system=ACCESSION_SYSTEM)
    return MappingContext(senders=(profile,))


def oru(
    *,
    control: str = "1",
    obr25: str = "F",
    obx11: str = "F",
    text: str | None = "No acute findings.\\.br\\Lungs are clear.",
    impression: str | None = "Normal chest CT.",
    obr22: str = "20250101120000+0100",
    filler: str = "FI-9001",
    accession: str = ACCESSION,
    patient: str = "PID-11235",
    name: str = "EXAMPLE^MEASUREMENT",
    birth: str = "19670701",
    sex: str = "F",
    study_uid: str | None = STUDY_UID,
    interpreter: str = "RAD77&RADIOLOGIST&EXAMPLE&&&&&&TH&2.16.840.1.113883.19.5&ISO",
) -> bytes:
    """One ORU^R01 (ER7, CR segment ends). ``text=None`` and ``impression=None``: no OBX at all."""
    segs = [
        f"MSH|^~\\&|RIS|Test Hospital|ENGINE|HUB|{obr22}||ORU^R01|CTRL-{control}|P|2.5.1",
        f"PID|1||{patient}||{name}||{birth}|{sex}",
        f"ORC|RE|PL-1|{filler}",
        f"OBR|1|PL-1|{filler}|71250^CT CHEST^CPT|||20250101100000+0100|||||||||||{accession}||||{obr22}||CT|{obr25}"
        f"|||||||{interpreter}",
    ]
    if study_uid:
        segs.append(f"ZDS|{study_uid}^^Application^DICOM")
    n = 0
    for suffix, value in (("GDT", text), ("IMP", impression)):
        if value is not None:
            n += 1
            segs.append(f"OBX|{n}|TX|71250&{suffix}^CT CHEST||{value}||||||{obx11}|||{obr22}")
    return ("\r".join(segs) + "\r").encode()
