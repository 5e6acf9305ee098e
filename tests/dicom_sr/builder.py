"""Build small TID 2000 SR files with pydicom for variant tests: exact bytes for every text value, an optional
Specific Character Set on any content item (Explicit VR Little Endian)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

__all__ = ["Node", "build_sr", "code", "container", "item"]

ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"


@dataclass
class Node:
    """One content item: value type, concept name (value, scheme, meaning bytes), value, own charset."""

    vtype: str
    name: tuple[str, str, bytes] | None = None
    value: bytes | str | tuple[str, str, bytes] | tuple[str, tuple[str, str, bytes]] | None = None
    charset: str | None = None
    children: list[Node] = field(default_factory=list)
    rel: str = "CONTAINS"


def code(value: str, scheme: str, meaning: bytes | str) -> tuple[str, str, bytes]:
    return value, scheme, meaning.encode("ascii") if isinstance(meaning, str) else meaning


def item(
    vtype: str,
    name: tuple[str, str, bytes],
    value: bytes | str | tuple[str, str, bytes] | tuple[str, tuple[str, str, bytes]],
    *children: Node,
    charset: str | None = None,
    rel: str = "CONTAINS",
) -> Node:
    """A content item with a value: bytes or str for TEXT, PNAME, DATE, TIME, DATETIME; a code (:func:`code`) for
    CODE; (numeric value, unit code) for NUM. ``children`` are its own related items (with their ``rel``)."""
    return Node(vtype, name, value, charset, list(children), rel)


def container(name: tuple[str, str, bytes], *children: Node, charset: str | None = None) -> Node:
    return Node("CONTAINER", name, None, charset, list(children))


_VALUE_TAG = {"TEXT": (0x0040A160, "UT"), "PNAME": (0x0040A123, "PN"), "DATE": (0x0040A121, "DA"),
              "TIME": (0x0040A122, "TM"), "DATETIME": (0x0040A120, "DT")}  # fmt: skip


def _code_item(name: tuple[str, str, bytes]) -> Dataset:
    ds = Dataset()
    ds.add(DataElement(0x00080100, "SH", name[0]))
    ds.add(DataElement(0x00080102, "SH", name[1]))
    ds.add(DataElement(0x00080104, "LO", name[2]))  # bytes: written as they are
    return ds


def _content(node: Node) -> Dataset:
    ds = Dataset()
    if node.charset is not None:
        ds.add(DataElement(0x00080005, "CS", node.charset))
    ds.add(DataElement(0x0040A010, "CS", node.rel))
    ds.add(DataElement(0x0040A040, "CS", node.vtype))
    if node.name is not None:
        ds.add(DataElement(0x0040A043, "SQ", Sequence([_code_item(node.name)])))
    if node.vtype == "CONTAINER":
        ds.add(DataElement(0x0040A050, "CS", "SEPARATE"))
    elif node.vtype == "CODE" and isinstance(node.value, tuple) and len(node.value) == 3:
        ds.add(DataElement(0x0040A168, "SQ", Sequence([_code_item(node.value)])))
    elif node.vtype == "NUM" and isinstance(node.value, tuple) and len(node.value) == 2:
        measured = Dataset()
        measured.add(DataElement(0x004008EA, "SQ", Sequence([_code_item(node.value[1])])))
        measured.add(DataElement(0x0040A30A, "DS", node.value[0]))
        ds.add(DataElement(0x0040A300, "SQ", Sequence([measured])))
    elif node.value is not None:
        tag, vr = _VALUE_TAG[node.vtype]
        ds.add(DataElement(tag, vr, node.value))
    if node.vtype == "CONTAINER" or node.children:
        ds.add(DataElement(0x0040A730, "SQ", Sequence([_content(c) for c in node.children])))
    return ds


def build_sr(
    *headings: Node,
    charset: str | None = "ISO_IR 192",
    patient_name: bytes = b"Doe^Jane",
    uid_suffix: str = "1",
) -> bytes:
    """A verified, complete Enhanced SR (study, accession, patient) whose root holds ``headings``."""
    sop_uid = f"1.2.826.0.1.3680043.8.498.99.{uid_suffix}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ENHANCED_SR)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("sr.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    if charset is not None:
        ds.add(DataElement(0x00080005, "CS", charset))
    ds.SOPClassUID = ENHANCED_SR
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.99.100"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.99.101"
    ds.Modality = "SR"
    ds.StudyDate, ds.StudyTime = "20261130", "093000"
    ds.ContentDate, ds.ContentTime = "20261130", "101500"
    ds.AccessionNumber = "SRVAR1"
    ds.PatientID = "SRVARPAT"
    ds.add(DataElement(0x00100010, "PN", patient_name))
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.Manufacturer = "MadeUp"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = "Reader^Rita"
    observer.VerifyingOrganization = "North Clinic"
    observer.VerificationDateTime = "20261130101500"
    observer.VerifyingObserverIdentificationCodeSequence = Sequence()
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code_item(code("18748-4", "LN", "Diagnostic Imaging Report"))])
    ds.ContentSequence = Sequence([_content(h) for h in headings])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
