"""Is an ORU^R01 group a radiology/imaging report? (mappings.md §2; eu-imaging.md §7)

Evidence, strongest first: a Study Instance UID (OBX 113014 / "Study Instance UID", ZDS, IPC);
OBX-3 report-section suffixes (``&GDT``, ``&IMP``...) or LOINC/DCM section codes; an imaging diagnostic
service section in OBR-24 (HL7 table 0074: RAD, CT, NMR, RUS...); imaging words in OBR-4 (CT, MRI, X-RAY,
ULTRASOUND, ECHO...). Laboratory evidence (SPM specimen segments, lab sections LAB/HM/CH/MB...) with no
imaging evidence makes the message a lab result, which this engine rejects with that reason.
"""

from __future__ import annotations

import re

__all__ = ["IMAGING_SECTIONS", "LAB_SECTIONS", "imaging_words", "modality_for_section"]

IMAGING_SECTIONS = frozenset(
    [
        "RAD",
        "RX",
        "CT",
        "NMR",
        "NMS",
        "RUS",
        "OUS",
        "VUS",
        "CUS",
        "XRC",
        "CTH",
        "MR",
        "MRI",
        "US",
        "NM",
        "PET",
        "PT",
        "MG",
        "MAM",
        "XR",
        "CR",
        "DX",
        "XA",
        "RF",
        "IR",
        "ANG",
        "FL",
        "FLUORO",
        "DEXA",
        "ECHO",
        "CATH",
        "IMG",
        "RADIOLOGY",
        "IMAGING",
    ]
)
LAB_SECTIONS = frozenset(
    [
        "LAB",
        "HM",
        "HEM",
        "CH",
        "CHEM",
        "MB",
        "MCB",
        "MYC",
        "BLB",
        "SP",
        "SR",
        "CP",
        "IMM",
        "VR",
        "TX",
        "TOX",
        "PAR",
        "UA",
        "URN",
        "SER",
        "PATH",
        "PAT",
        "CG",
        "BG",
        "AU",
    ]
)

_WORDS = re.compile(
    r"\b(CT|CTA|MRI|MR|MRA|XR|X-?RAY|XRAY|RADIOGRAPH\w*|ULTRASOUND|US|SONO\w*|DOPPLER|ECHO\w*|MAMMO\w*|"
    r"TOMOSYNTHESIS|FLUORO\w*|ANGIO\w*|PET|SPECT|NM|NUCLEAR|SCINTI\w*|DEXA|DXA|BONE DENSITY|RADIOLOGY|"
    r"IMAGING|SCAN|CHEST|ABDOMEN|PELVIS|HEAD|BRAIN|SPINE|KNEE|HIP|SHOULDER|ARTHROGRAM|MYELOGRAM|"
    r"ESOPHAGRAM|ENEMA|VENOGRAM|BIOPSY GUIDANCE|CATH|CARDIAC CATH|PORTABLE|LATERAL)\b",
    re.IGNORECASE,
)

# HL7 table 0074 diagnostic service section -> DICOM modality (CID 29), only where unambiguous.
_MODALITY = {
    "CT": "CT", "CTH": "CT", "NMR": "MR", "MR": "MR", "MRI": "MR", "RUS": "US", "OUS": "US", "VUS": "US",
    "CUS": "US", "US": "US", "NMS": "NM", "NM": "NM", "PET": "PT", "PT": "PT", "MG": "MG", "MAM": "MG",
    "XA": "XA", "RF": "RF", "DX": "DX", "CR": "CR",
}  # fmt: skip


def imaging_words(text: str) -> bool:
    return bool(_WORDS.search(text))


def modality_for_section(section: str) -> str | None:
    return _MODALITY.get(section.strip().upper())
