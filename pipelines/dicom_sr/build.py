"""Shared builders of the SR mappers: the base Report from the header, the equipment Device, the
SR-instance ImagingSelection, and the reference helpers for ``ExtraResource`` dicts.

Identifiers follow mappings.md §5.1: UIDs in Identifiers are ``urn:dicom:uid`` + ``urn:oid:<uid>``;
``id``-typed elements (studyUid, seriesUid, instance.uid, frameOfReferenceUid) carry the bare UID.
"""

from __future__ import annotations

from typing import Any

from pipelines.common import fhir
from pipelines.common.ids import digest, urn, uuid_for
from pipelines.common.model import Ident, Report
from pipelines.dicom_sr.header import Equipment, Header, instant
from pipelines.dicom_sr.status import report_status
from pipelines.output.profiles import IM

__all__ = [
    "DICOMSR",
    "SOP_CLASS_SYSTEM",
    "accession_ref",
    "base_report",
    "device",
    "device_url",
    "sr_instance_selection",
    "study_ref",
]

DICOMSR = "http://hl7.org/fhir/uv/dicom-sr/StructureDefinition/"
#: The SOP-class coding system the HL7 DICOM SR IG profiles fix by pattern.
SOP_CLASS_SYSTEM = "https://dicom.nema.org/medical/dicom/current/output/chtml/part04/sect_B.5"
_SOP_NAMES = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.68": "Radiopharmaceutical Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
}


def base_report(h: Header, title: str) -> Report:
    """A Report with everything the header says; the content mappers add sections, findings, extras."""
    status = report_status(*h.flags, has_predecessor=bool(h.predecessors), device_record=_device_record(h))
    issued = instant(h.verified_at) or instant(h.content_at) or instant(h.created_at) or instant(h.study_at)
    report = Report(
        source="dicom-sr",
        identifier=Ident(system="urn:dicom:uid", value=f"urn:oid:{h.sop_uid}"),
        version_key=digest(status, h.verified_at or "", h.content_at or "", h.sop_uid),
        status=status,
        patient=h.patient,
        timezone=h.tz,
        timezone_assumed=h.tz_assumed,
        code=h.title,
        service_section="RAD",
        title=title,
        orders=list(h.orders),
        studies=list(h.studies),
        interpreters=list(h.interpreters),
        authors=list(h.authors),
        performer=h.organization,
        issued=issued,
        effective=h.study_at or h.content_at,
        date=h.content_at or h.created_at or issued,
        attested=h.verified_at,
        relates_to=[("replaces", Ident(system="urn:dicom:uid", value=f"urn:oid:{uid}")) for uid in h.predecessors],
        device_name=h.equipment.name() or None,
        ids={"sop_uid": h.sop_uid},
    )
    return report


def _device_record(h: Header) -> bool:
    """X-ray / radiopharmaceutical dose reports are written by the modality, never verified by a person."""
    return bool(h.title and h.title.codings and h.title.codings[0].code in ("113701", "113500"))


def study_ref(uid: str) -> dict[str, Any]:
    """Placeholder reference to the ImagingStudy (resolved by the shaper), typed for the SR IG slices."""
    return {"reference": f"@study:{uid}", "identifier": fhir.study_uid_identifier(uid)}


def accession_ref(report: Report) -> list[dict[str, Any]]:
    """basedOn of SR IG resources: the order reference plus an ACSN identifier carrying the SR IG display."""
    for order in report.orders:
        if order.accession is not None:
            ident = fhir.accession_identifier(order.accession)
            ident["type"] = {
                "coding": [
                    {"system": fhir.V2_0203, "code": "ACSN", "display": "Accession ID"},
                    {"system": fhir.DCM, "code": "121022", "display": "Accession Number"},
                ]
            }
            return [{"reference": f"@order:{order.accession.value}", "identifier": ident}]
    return []


def device_url(e: Equipment) -> str:
    return urn(_device_id(e))


def _device_id(e: Equipment) -> str:
    return uuid_for("Device", e.device_uid or "", e.manufacturer, e.model, e.serial, e.station)


def device(e: Equipment, *, general_equipment: bool = False) -> dict[str, Any]:
    """DeviceEuImaging from the General Equipment module or a Device Observer context (eu-imaging.md
    §3.12); optionally also the SR IG GeneralEquipmentDevice profile (manufacturer, Device UID, model)."""
    profiles = [IM + "DeviceEuImaging"] + ([DICOMSR + "dicom-general-equipment"] if general_equipment else [])
    res: dict[str, Any] = {"resourceType": "Device", "id": _device_id(e), "meta": {"profile": profiles}}
    if e.device_uid:
        res["identifier"] = [{"system": "urn:dicom:uid", "value": f"urn:oid:{e.device_uid}"}]
    display = e.model or e.station or e.manufacturer
    if display:
        res["displayName"] = display
    res["status"] = "active"
    if e.manufacturer:
        res["manufacturer"] = e.manufacturer
    if e.serial:
        res["serialNumber"] = e.serial
    if e.model:
        res["modelNumber"] = e.model
    names = []
    if e.station:
        names.append({"value": e.station, "type": "user-friendly-name"})
    if e.model:
        names.append({"value": e.model, "type": "registered-name"})
    if names:
        res["name"] = names
    res["category"] = [{"coding": [{"system": fhir.SCT, "code": "314789007", "display": "Medical imaging device"}]}]
    if e.software:
        res["version"] = [{"value": e.software}]
    return res


def sr_instance_selection(h: Header, report: Report, *, observation_uid: str | None = None) -> dict[str, Any]:
    """The SR document itself as SrInstanceImagingSelectionEuImaging (eu-imaging.md §3.9); with an
    Observation UID it is the SR IG "source SR content item" (code DCM 111040, subset = that UID)."""
    sid = uuid_for("ImagingSelection", h.sop_uid, observation_uid or "")
    if observation_uid:
        profiles = [IM + "ImagingSelectionEuImaging", DICOMSR + "source-sr-content-item"]
        code = {"coding": [{"system": fhir.DCM, "code": "111040", "display": "Original Source"}]}
    else:
        profiles = [IM + "SrInstanceImagingSelectionEuImaging"]
        code = (
            {"coding": [fhir.coding(h.title.codings[0])]}
            if h.title and h.title.codings
            else {"coding": [{"system": fhir.DCM, "code": "113000", "display": "Of Interest"}]}
        )
    res: dict[str, Any] = {"resourceType": "ImagingSelection", "id": sid, "meta": {"profile": profiles}}
    if not observation_uid:
        res["identifier"] = [
            {
                "type": {"coding": [{"system": IM_MISSING, "code": "00080018"}]},
                "system": "urn:dicom:uid",
                "value": f"urn:oid:{h.sop_uid}",
            }
        ]
    res["status"] = "available"
    res["subject"] = {"reference": "@patient"}
    based_on = accession_ref(report)
    if based_on:
        res["basedOn"] = based_on
    res["code"] = code
    res["studyUid"] = h.study_uid
    res["derivedFrom"] = [study_ref(h.study_uid)]
    res["seriesUid"] = h.series_uid
    instance: dict[str, Any] = {"uid": h.sop_uid}
    if observation_uid:
        instance["sopClass"] = {"system": SOP_CLASS_SYSTEM, "code": h.sop_class}
        name = _SOP_NAMES.get(h.sop_class)
        if name:
            instance["sopClass"]["display"] = name
        instance["subset"] = [observation_uid]
    else:
        instance["sopClass"] = {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{h.sop_class}"}
    res["instance"] = [instance]
    return res


IM_MISSING = "http://hl7.eu/fhir/imaging-r5/CodeSystem/codesystem-missing-dicom-terminology"
