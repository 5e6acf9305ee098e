"""SOP Class triage: which DICOM objects carry a report, and a clear reason for those that do not."""

from __future__ import annotations

from pydicom.dataset import Dataset

from pipelines.dicom_sr.reader import text
from pipelines.errors import UnsupportedMessage

__all__ = ["ENCAPSULATED_CDA", "ENCAPSULATED_PDF", "SR_CLASSES", "classify"]

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
ENCAPSULATED_CDA = "1.2.840.10008.5.1.4.1.1.104.2"

#: SR Storage SOP Classes whose documents may carry a report, measurements or dose (PS3.4 B.5).
SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR",
    "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR",
    "1.2.840.10008.5.1.4.1.1.88.65": "Chest CAD SR",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR",
    "1.2.840.10008.5.1.4.1.1.88.68": "Radiopharmaceutical Radiation Dose SR",
    "1.2.840.10008.5.1.4.1.1.88.69": "Colon CAD SR",
    "1.2.840.10008.5.1.4.1.1.88.72": "Simplified Adult Echo SR",
    "1.2.840.10008.5.1.4.1.1.88.73": "Patient Radiation Dose SR",
    "1.2.840.10008.5.1.4.1.1.88.76": "Enhanced X-Ray Radiation Dose SR",
}

_NOT_REPORTS = {
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document (a manifest of key images, not a report)",
    "1.2.840.10008.5.1.4.1.1.88.40": "Procedure Log (not a report)",
    "1.2.840.10008.5.1.4.1.1.88.70": "Implantation Plan SR (not a report)",
    "1.2.840.10008.5.1.4.1.1.88.71": "Acquisition Context SR (not a report)",
    "1.2.840.10008.5.1.4.1.1.88.74": "Planned Imaging Agent Administration SR (not a report)",
    "1.2.840.10008.5.1.4.1.1.88.75": "Performed Imaging Agent Administration SR (not a report)",
    "1.2.840.10008.5.1.4.1.1.88.1": "retired SR trial SOP Class (Text SR Storage - Trial)",
    "1.2.840.10008.5.1.4.1.1.88.2": "retired SR trial SOP Class (Audio SR Storage - Trial)",
    "1.2.840.10008.5.1.4.1.1.88.3": "retired SR trial SOP Class (Detail SR Storage - Trial)",
    "1.2.840.10008.5.1.4.1.1.88.4": "retired SR trial SOP Class (Comprehensive SR Storage - Trial)",
    "1.2.840.10008.5.1.4.1.1.104.3": "Encapsulated STL (a 3D model, not a report)",
}


def classify(ds: Dataset) -> str:
    """ "pdf", "cda" or "sr"; anything else raises UnsupportedMessage with the reason."""
    sop_class = text(ds, "SOPClassUID") or _meta_class(ds)
    if sop_class == ENCAPSULATED_PDF:
        return "pdf"
    if sop_class == ENCAPSULATED_CDA:
        return "cda"
    if sop_class in SR_CLASSES:
        return "sr"
    if not sop_class:
        raise UnsupportedMessage("DICOM dataset without a SOP Class UID: not a DICOM SR report")
    if sop_class in _NOT_REPORTS:
        raise UnsupportedMessage(f"{_NOT_REPORTS[sop_class]}: SOP Class {sop_class}")
    name = _uid_name(sop_class)
    if sop_class.startswith("1.2.840.10008.5.1.4.1.1.11."):
        raise UnsupportedMessage(f"presentation state ({name}), not a report: SOP Class {sop_class}")
    if "PixelData" in ds or "Rows" in ds or sop_class.startswith("1.2.840.10008.5.1.4.1.1."):
        raise UnsupportedMessage(f"DICOM object of SOP Class {name or sop_class} is not a report (image or other)")
    raise UnsupportedMessage(f"SOP Class {sop_class} is not a DICOM SR or encapsulated report")


def _meta_class(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return text(meta, "MediaStorageSOPClassUID") if meta is not None else ""


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    try:
        name = UID(uid).name
    except (ValueError, KeyError):
        return ""
    return "" if name == uid else str(name)
