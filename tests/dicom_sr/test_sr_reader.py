"""The fast raw-bytes content-tree reader gives exactly the tree pydicom's element access gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.context import MappingContext
from pipelines.dicom_sr.mapper import content_tree, parse
from pipelines.dicom_sr.reader import read_dataset
from pipelines.errors import MappingError
from tests.dicom_sr.helpers import SR_FILES

SR_DOCUMENTS = [p for p in SR_FILES if p.name not in ("Tag-0040-A170-VR-CS.dcm", "sample-pdf.dcm")]


@pytest.mark.parametrize("path", SR_DOCUMENTS, ids=lambda p: p.name)
def test_fast_tree_equals_pydicom_tree(path: Path) -> None:
    data = path.read_bytes()
    slow = content_tree(read_dataset(data), fast=False)
    fast = parse(data, MappingContext()).root
    assert fast == slow
    assert fast or path.name == "ESR_non-dose.dcm"


def test_fast_evidence_equals_pydicom_evidence() -> None:
    from pipelines.dicom_sr.header import read_header

    for path in SR_FILES:
        data = path.read_bytes()
        try:
            fast = parse(data, MappingContext()).header
        except MappingError:
            continue
        slow = read_header(read_dataset(data), MappingContext())
        assert fast.evidence == slow.evidence, path.name
        assert [s.uid for s in fast.studies] == [s.uid for s in slow.studies], path.name


def test_dicom_json_fast_path_equals_pydicom() -> None:
    from pipelines.dicom_sr.header import read_header
    from pipelines.dicom_sr.reader import walk
    from tests.conftest import TESTDATA

    data = (TESTDATA / "dicom-sr-hl7-ig" / "Example-MeasurementReport.json").read_bytes()
    parsed = parse(data, MappingContext())
    ds = read_dataset(data)
    assert parsed.root == walk(ds) and len(parsed.root) == 4
    assert parsed.header.evidence == read_header(ds, MappingContext()).evidence


def _content_as_undefined_length_un(data: bytes) -> bytes:
    """The file with its Content Sequence written as VR UN of undefined length, its items in Implicit VR Little
    Endian (PS3.5 6.2.2: what a node that does not know the attribute's VR forwards), the rest Explicit VR."""
    import copy
    import io

    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(data))
    for tag in [el.tag for el in ds if el.tag > 0x0040A730]:
        del ds[tag]

    def undefined(d: pydicom.Dataset) -> None:
        for el in d:
            if el.VR == "SQ":
                el.is_undefined_length = True
                for item in el.value:
                    item.is_undefined_length_sequence_item = True
                    undefined(item)

    undefined(ds)
    out = {}
    for implicit, syntax in ((False, ExplicitVRLittleEndian), (True, ImplicitVRLittleEndian)):
        d = copy.deepcopy(ds)
        d.file_meta.TransferSyntaxUID = syntax
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, d, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
        out[implicit] = buf.getvalue()
    explicit_head = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff"
    implicit_head = b"\x40\x00\x30\xa7\xff\xff\xff\xff"
    start = out[False].index(explicit_head)  # the first one is the top-level sequence (nested ones are inside)
    items = out[True][out[True].index(implicit_head) + len(implicit_head) :]
    return out[False][:start] + b"\x40\x00\x30\xa7UN\x00\x00\xff\xff\xff\xff" + items


def test_content_sequence_as_undefined_length_un_reads_as_pydicom_does() -> None:
    """A Content Sequence forwarded as UN of undefined length (Implicit VR items inside an Explicit VR file):
    the raw reader gives pydicom's tree instead of rejecting the file as corrupt."""
    data = _content_as_undefined_length_un(next(p for p in SR_FILES if p.name == "test-SR.dcm").read_bytes())
    slow = content_tree(read_dataset(data), fast=False)
    assert slow  # pydicom reads it
    assert parse(data, MappingContext()).root == slow


def _as_defined_length_un(dataset: Any, keyword: str) -> None:
    """Replace ``dataset[keyword]`` by the same value sent as VR UN of defined length: its items encoded
    Implicit VR Little Endian (PS3.5 6.2.2), as a gateway that does not know the attribute forwards it."""
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    element = dataset[keyword]
    holder = Dataset()
    holder.add(element)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, holder)
    value = fp.getvalue()[8:]  # the implicit VR items, without the element header
    dataset._dict[element.tag] = RawDataElement(element.tag, "UN", len(value), value, 0, False, True)


def test_nested_code_sequences_as_defined_length_un_read_as_pydicom_does() -> None:
    """Concept Name Code Sequences written as UN of defined length (Implicit VR items inside, PS3.5 6.2.2) in an
    Explicit VR file: the raw reader reads them with their dictionary VR, as pydicom does, instead of dropping
    every concept name."""
    import io

    import pydicom

    ds = pydicom.dcmread(next(p for p in SR_FILES if p.name == "test-SR.dcm"))
    changed = 0

    def as_un(items: pydicom.Sequence) -> None:
        nonlocal changed
        for item in items:
            if "ConceptNameCodeSequence" in item:
                _as_defined_length_un(item, "ConceptNameCodeSequence")
                changed += 1
            if "ContentSequence" in item:
                as_un(item.ContentSequence)

    as_un(ds.ContentSequence)
    buf = io.BytesIO()
    ds.save_as(buf)
    data = buf.getvalue()
    assert changed and data.count(b"\x40\x00\x43\xa0UN") == changed
    slow = content_tree(read_dataset(data), fast=False)
    assert slow[0].name is not None  # pydicom reads the concept names
    assert parse(data, MappingContext()).root == slow


def test_content_sequence_as_defined_length_un_is_not_an_empty_report() -> None:
    """The top-level Content Sequence written as UN of defined length: read as pydicom reads it (Implicit VR
    items), not left out (the report was filtered as having no content)."""
    import io

    import pydicom

    ds = pydicom.dcmread(next(p for p in SR_FILES if p.name == "test-SR.dcm"))
    _as_defined_length_un(ds, "ContentSequence")
    buf = io.BytesIO()
    ds.save_as(buf)
    data = buf.getvalue()
    slow = content_tree(read_dataset(data), fast=False)
    assert slow
    assert parse(data, MappingContext()).root == slow


def test_content_sequence_as_un_without_preamble_reads_as_pydicom_does() -> None:
    """A file without the Part 10 preamble (read by pydicom, content walked raw) whose Content Sequence is UN:
    its items are Implicit VR (PS3.5 6.2.2), as pydicom reads them, instead of a 'malformed content tree'."""
    import io

    import pydicom
    from pydicom.filewriter import dcmwrite

    ds = pydicom.dcmread(next(p for p in SR_FILES if p.name == "test-SR.dcm"))
    _as_defined_length_un(ds, "ContentSequence")
    ds.preamble = None
    buf = io.BytesIO()
    dcmwrite(buf, ds, write_like_original=True)
    data = buf.getvalue()
    assert data[128:132] != b"DICM"
    slow = content_tree(read_dataset(data), fast=False)
    assert slow
    assert parse(data, MappingContext()).root == slow
