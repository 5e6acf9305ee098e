"""The fast raw-bytes content-tree reader gives exactly the tree pydicom's element access gives."""

from __future__ import annotations

from pathlib import Path

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
