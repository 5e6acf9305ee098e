"""TID 1500 Imaging Measurement Reports -> SR IG Observations and ImagingSelections (mappings.md §3).

Each Measurement Group (125007) under Imaging Measurements (126010), Derived Imaging Measurements
(126011) or Qualitative Evaluations (UMLS C0034375) becomes an ``imaging-measurement-group``
Observation (also ObservationFindingEuImaging: it is a findings-section entry and in
``DiagnosticReport.result``). Its NUM items become ``imaging-measurement`` Observations (UCUM
``valueQuantity``; a Derivation modifier as a component), its CODE items other than the group
attributes become ``imaging-qualitative-evaluation`` Observations, all linked by ``hasMember``.

Group attributes (SR IG ConceptMap-03): Finding Category -> ``code`` (else DCM 125007 without a
category), Finding -> ``valueCodeableConcept``, Measurement Method -> ``method``, Finding Site ->
``bodySite`` (laterality / topographical modifier as components), Tracking Identifier and Tracking
Unique Identifier -> ``identifier`` typed DCM 112039 / 112040, Observation UID -> identifier typed
``observation-uid``. Image regions (SCOORD -> ``image-region-2d``; SCOORD3D -> 3D region with its
frame of reference), referenced segments (``referenced-segment``, subset = segment numbers) and other
referenced instances become ImagingSelections in ``derivedFrom``; the SR content item itself is the
``source-sr-content-item`` selection (instance = this SR, subset = the group's Observation UID), or
the SrInstanceImagingSelectionEuImaging of the document when the group has no Observation UID.
Members inherit subject, partOf, basedOn, device, bodySite and derivedFrom from their group.
"""

from __future__ import annotations

from typing import Any

from pipelines.common import fhir
from pipelines.common.ids import uid_ok, urn, uuid_for
from pipelines.common.model import ExtraResource, Report, Section
from pipelines.dicom_sr.build import (
    DICOMSR,
    SOP_CLASS_SYSTEM,
    accession_ref,
    device_url,
    sr_instance_selection,
    study_ref,
)
from pipelines.dicom_sr.codes import UMLS, coding, ucum
from pipelines.dicom_sr.header import Header
from pipelines.dicom_sr.reader import Code, Item
from pipelines.dicom_sr.status import observation_status
from pipelines.dicom_sr.tid2000 import format_num
from pipelines.output.profiles import IM

__all__ = ["apply_measurements"]

_CONTAINERS = {"126010": "measurement", "126011": "derived", "C0034375": "qualitative"}
_GROUP_ATTRS = {
    "112039",
    "112040",
    "121071",
    "276214006",
    "363698007",
    "G-C0E3",
    "370129005",
    "G-C036",
    "C67447",
    "C2348792",
    "126010",
    "121232",
    "111001",
    "111003",
    "111002",
}
_SITE = {"363698007", "G-C0E3"}
_METHOD = {"370129005", "G-C036"}
_MODIFIERS = {
    "272741003": "Laterality",
    "G-C171": "Laterality",
    "106233006": "Topographical modifier",
    "G-A1F8": "Topographical modifier",
}
_OBS_UID_TYPE = {
    "coding": [
        {
            "system": "http://hl7.org/fhir/uv/dicom-sr/CodeSystem/dicom-identifier-type",
            "code": "observation-uid",
            "display": "Observation UID",
        }
    ]
}
_SEG_SOP = "1.2.840.10008.5.1.4.1.1.66.4"
_IMAGING_DEVICE = {"coding": [{"system": fhir.SCT, "code": "314789007", "display": "Medical imaging device"}]}


def apply_measurements(root: list[Item], h: Header, report: Report) -> bool:
    groups: list[tuple[str, Item]] = []
    for item in root:
        if item.vtype == "CONTAINER" and item.name is not None and item.name.value in _CONTAINERS:
            kind = _CONTAINERS[item.name.value]
            for child in item.children:
                if child.vtype == "CONTAINER":
                    groups.append((kind, child))
    if not groups:
        return False
    ctx = _Ctx(h, report)
    lines = [ctx.group(i, kind, g) for i, (kind, g) in enumerate(groups, start=1)]
    report.sections.append(Section(key="findings", text="\n\n".join(line for line in lines if line)))
    return True


class _Ctx:
    def __init__(self, h: Header, report: Report) -> None:
        self.h, self.report = h, report
        self.status = observation_status(report.status)
        self.based_on = accession_ref(report)
        self.device = {"reference": device_url(h.equipment)}
        self.doc_selection: str | None = None
        self._algorithms: set[str] = set()
        self._group_algorithm: tuple[str, str] | None = None
        self._gkey = ""

    def _common(self, rid: str, profiles: list[str]) -> dict[str, Any]:
        res: dict[str, Any] = {"resourceType": "Observation", "id": rid, "meta": {"profile": profiles}}
        return res

    def group(self, index: int, kind: str, g: Item) -> str:
        h, base = self.h, self.h.base
        attrs = {c.name.value: c for c in g.children if c.name is not None and c.name.value in _GROUP_ATTRS}
        site = next((c for c in g.children if c.name is not None and c.name.value in _SITE), None)
        method = next((c for c in g.children if c.name is not None and c.name.value in _METHOD), None)
        self._gkey = g.uid or str(index)
        self._group_algorithm = _algorithm_of(g)
        selections = self._selections(g, index)
        source = self._source(g)
        gid = uuid_for("Observation", h.sop_uid, "group", g.uid or str(index))
        derived = [{"reference": urn(s["id"])} for s in selections] + [{"reference": source}]
        members, member_lines = self._members(g, gid, derived, site)
        res = self._common(gid, [IM + "ObservationFindingEuImaging", DICOMSR + "imaging-measurement-group"])
        idents = self._identifiers(g, attrs)
        if idents:
            res["identifier"] = idents
        if self.based_on:
            res["basedOn"] = self.based_on
        res["partOf"] = [study_ref(h.study_uid)]
        res["status"] = self.status
        category = attrs.get("276214006")
        if category is not None and category.code is not None:
            res["category"] = [{"coding": [{"system": fhir.DCM, "code": "125007", "display": "Measurement Group"}]}]
            res["code"] = {"coding": [fhir.coding(coding(category.code, base))]}
        else:
            res["code"] = {"coding": [{"system": fhir.DCM, "code": "125007", "display": "Measurement Group"}]}
        res["subject"] = {"reference": "@patient"}
        if self.report.effective:
            res["effectiveDateTime"] = self.report.effective
        if self.report.issued:
            res["issued"] = self.report.issued
        finding = attrs.get("121071")
        if finding is not None and finding.code is not None:
            res["valueCodeableConcept"] = {"coding": [fhir.coding(coding(finding.code, base))]}
        if site is not None and site.code is not None:
            res["bodySite"] = {"coding": [fhir.coding(coding(site.code, base))]}
        if method is not None and method.code is not None:
            res["method"] = {"coding": [fhir.coding(coding(method.code, base))]}
        res["device"] = self.device
        res["derivedFrom"] = derived
        if members:
            res["hasMember"] = [{"reference": urn(m["id"])} for m in members]
        components = self._modifiers(site)
        if components:
            res["component"] = components
        self.report.extras.append(
            ExtraResource(resource=res, section="findings", in_result=True, dr_extension="finding")
        )
        for m in members:
            self.report.extras.append(ExtraResource(resource=m))
        for s in selections:
            self.report.extras.append(ExtraResource(resource=s))
        return self._narrative(index, g, attrs, site, member_lines)

    def _algorithm(self, c: Item, *, g_algorithm: tuple[str, str] | None) -> dict[str, Any]:
        """TID 4019 Algorithm Identification (111001 name, 111003 version) on the item or its group ->
        an SR IG AlgorithmIdentification Device whose parent is the equipment Device; else the equipment."""
        algo = _algorithm_of(c) or g_algorithm
        if algo is None:
            return dict(self.device)
        name, version = algo
        did = uuid_for("Device", "algorithm", name, version, self.device["reference"])
        if did not in self._algorithms:
            self._algorithms.add(did)
            res: dict[str, Any] = {
                "resourceType": "Device",
                "id": did,
                "meta": {"profile": [IM + "DeviceEuImaging", DICOMSR + "algorithm-identification"]},
                "displayName": name,
                "status": "active",
                "category": [
                    {"coding": [{"system": fhir.SCT, "code": "314789007", "display": "Medical imaging device"}]}
                ],
            }
            if version:
                res["version"] = [{"value": version}]
            res["parent"] = dict(self.device)
            self.report.extras.append(ExtraResource(resource=res))
        return {"reference": urn(did)}

    def _identifiers(self, g: Item, attrs: dict[str, Item]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if g.uid and uid_ok(g.uid):
            out.append({"type": _OBS_UID_TYPE, "system": "urn:dicom:uid", "value": f"urn:oid:{g.uid}"})
        tid = attrs.get("112039")
        if tid is not None and tid.text and tid.text.strip():
            out.append(
                {
                    "type": {"coding": [{"system": fhir.DCM, "code": "112039", "display": "Tracking Identifier"}]},
                    "value": tid.text.strip(),
                }
            )
        tuid = attrs.get("112040")
        if tuid is not None and tuid.text and uid_ok(tuid.text):
            out.append(
                {
                    "type": {
                        "coding": [{"system": fhir.DCM, "code": "112040", "display": "Tracking Unique Identifier"}]
                    },
                    "system": "urn:dicom:uid",
                    "value": f"urn:oid:{tuid.text}",
                }
            )
        return out

    def _modifiers(self, site: Item | None) -> list[dict[str, Any]]:
        out = []
        for c in site.children if site is not None else []:
            if c.name is not None and c.name.value in _MODIFIERS and c.code is not None:
                out.append(
                    {
                        "code": {"coding": [fhir.coding(coding(c.name, self.h.base))]},
                        "valueCodeableConcept": {"coding": [fhir.coding(coding(c.code, self.h.base))]},
                    }
                )
        return out

    def _source(self, g: Item) -> str:
        h = self.h
        if g.uid and uid_ok(g.uid) and h.sop_class in _SR_IG_CLASSES:
            sel = sr_instance_selection(h, self.report, observation_uid=g.uid)
            self.report.extras.append(ExtraResource(resource=sel))
            return urn(sel["id"])
        if self.doc_selection is None:
            sel = sr_instance_selection(h, self.report)
            self.report.extras.append(ExtraResource(resource=sel))
            self.doc_selection = urn(sel["id"])
        return self.doc_selection

    def _members(
        self, g: Item, gid: str, derived: list[dict[str, Any]], site: Item | None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        out: list[dict[str, Any]] = []
        lines: list[str] = []
        for n, c in enumerate(g.children):
            if c.rel not in ("CONTAINS", "") or c.name is None or c.name.value in _GROUP_ATTRS:
                continue
            if c.vtype == "NUM" and c.num is not None and c.num.value is not None:
                out.append(self._measurement(c, gid, n, derived, site))
                lines.append(f"- {_label(c)}: {format_num(c)}")
            elif c.vtype == "CODE" and c.code is not None:
                out.append(self._qualitative(c, gid, n, derived, site))
                lines.append(f"- {c.name.meaning}: {c.code.meaning or c.code.value}")
        return out, lines

    def _member_base(self, c: Item, gid: str, n: int, profiles: list[str]) -> dict[str, Any]:
        res = self._common(uuid_for("Observation", gid, "member", str(n), c.uid or ""), profiles)
        if c.uid and uid_ok(c.uid):
            res["identifier"] = [{"type": _OBS_UID_TYPE, "system": "urn:dicom:uid", "value": f"urn:oid:{c.uid}"}]
        if self.based_on:
            res["basedOn"] = self.based_on
        res["partOf"] = [study_ref(self.h.study_uid)]
        res["status"] = self.status
        return res

    def _finish(self, res: dict[str, Any]) -> None:
        res["subject"] = {"reference": "@patient"}
        if self.report.effective:
            res["effectiveDateTime"] = self.report.effective
        if self.report.issued:
            res["issued"] = self.report.issued

    def _measurement(
        self, c: Item, gid: str, n: int, derived: list[dict[str, Any]], site: Item | None
    ) -> dict[str, Any]:
        assert c.name is not None and c.num is not None
        base = self.h.base
        res = self._member_base(c, gid, n, [IM + "ObservationFindingEuImaging", DICOMSR + "imaging-measurement"])
        res["code"] = {"coding": [fhir.coding(coding(c.name, base))]}
        self._finish(res)
        unit = c.num.unit
        q: dict[str, Any] = {"value": c.num.value}
        if unit is not None:
            q["unit"] = unit.meaning or unit.value
            code = ucum(unit)
            if code:
                q["system"] = fhir.UCUM
                q["code"] = code
        res["valueQuantity"] = q
        own_site = next((x for x in c.children if x.name is not None and x.name.value in _SITE), None) or site
        if own_site is not None and own_site.code is not None:
            res["bodySite"] = {"coding": [fhir.coding(coding(own_site.code, base))]}
        method = next((x for x in c.children if x.name is not None and x.name.value in _METHOD and x.code), None)
        if method is not None and method.code is not None:
            res["method"] = {"coding": [fhir.coding(coding(method.code, base))]}
        normality = next((x for x in c.children if x.is_("121402") and x.code), None)
        if normality is not None and normality.code is not None:
            res["interpretation"] = [{"coding": [fhir.coding(coding(normality.code, base))]}]
        res["device"] = self._algorithm(c, g_algorithm=self._group_algorithm)
        res["derivedFrom"] = [dict(d) for d in derived]
        components = [
            {
                "code": {"coding": [fhir.coding(coding(x.name, base))]},
                "valueCodeableConcept": {"coding": [fhir.coding(coding(x.code, base))]},
            }
            for x in c.children
            if x.name is not None and x.code is not None and x.name.value in ("121401", "121403", "G-C0E8")
        ]
        if components:
            res["component"] = components
        return res

    def _qualitative(
        self, c: Item, gid: str, n: int, derived: list[dict[str, Any]], site: Item | None
    ) -> dict[str, Any]:
        assert c.name is not None and c.code is not None
        base = self.h.base
        res = self._member_base(
            c, gid, n, [IM + "ObservationFindingEuImaging", DICOMSR + "imaging-qualitative-evaluation"]
        )
        res["category"] = [{"coding": [{"system": UMLS, "code": "C0034375", "display": "Qualitative Evaluations"}]}]
        res["code"] = {"coding": [fhir.coding(coding(c.name, base))]}
        self._finish(res)
        res["valueCodeableConcept"] = {"coding": [fhir.coding(coding(c.code, base))]}
        if site is not None and site.code is not None:
            res["bodySite"] = {"coding": [fhir.coding(coding(site.code, base))]}
        res["device"] = self._algorithm(c, g_algorithm=self._group_algorithm)
        res["derivedFrom"] = [dict(d) for d in derived]
        return res

    def _selections(self, g: Item, index: int) -> list[dict[str, Any]]:
        out = []
        for n, c in enumerate(g.children):
            sel = None
            if c.vtype == "SCOORD" and c.graphic is not None:
                sel = self._region2d(c, n)
            elif c.vtype == "SCOORD3D" and c.graphic is not None:
                sel = self._region3d(c, n)
            elif c.vtype == "IMAGE" and c.ref is not None and c.is_("121191"):
                sel = self._segment(c, n)
            elif c.vtype in ("IMAGE", "COMPOSITE") and c.ref is not None and uid_ok(c.ref.sop_instance):
                sel = self._instance(c, n)
            if sel is not None:
                out.append(sel)
        return out

    def _selection(self, c: Item, n: int, profiles: list[str], code: Code) -> dict[str, Any]:
        h = self.h
        res: dict[str, Any] = {
            "resourceType": "ImagingSelection",
            "id": uuid_for("ImagingSelection", h.sop_uid, "region", self._gkey, c.uid or "", id_path(c, n)),
            "meta": {"profile": profiles},
            "status": "available",
            "subject": {"reference": "@patient"},
        }
        if self.based_on:
            res["basedOn"] = self.based_on
        res["code"] = {"coding": [{"system": fhir.DCM, "code": code.value, "display": code.meaning}]}
        res["studyUid"] = h.study_uid
        res["derivedFrom"] = [study_ref(h.study_uid)]
        return res

    def _region2d(self, c: Item, n: int) -> dict[str, Any] | None:
        assert c.graphic is not None
        src = next((x for x in c.children if x.vtype == "IMAGE" and x.ref is not None), None)
        if src is None or src.ref is None or not uid_ok(src.ref.sop_instance):
            return None
        res = self._selection(
            c, n, [IM + "ImagingSelectionEuImaging", DICOMSR + "image-region-2d"], Code("111030", "DCM", "Image Region")
        )
        _, series = self.h.evidence.get(src.ref.sop_instance, ("", None))
        if series:
            res["seriesUid"] = series
        inst: dict[str, Any] = {"uid": src.ref.sop_instance}
        if uid_ok(src.ref.sop_class):
            inst["sopClass"] = {"system": SOP_CLASS_SYSTEM, "code": src.ref.sop_class}
        if src.ref.frames:
            inst["subset"] = [str(f) for f in src.ref.frames]
        inst["imageRegion2D"] = [{"regionType": _region_type(c.graphic.kind), "coordinate": list(c.graphic.data)}]
        res["instance"] = [inst]
        return res

    def _region3d(self, c: Item, n: int) -> dict[str, Any]:
        assert c.graphic is not None
        code = c.name if c.name is not None and c.name.scheme == "DCM" else Code("111030", "DCM", "Image Region")
        res = self._selection(c, n, [IM + "ImagingSelectionEuImaging"], code)
        if c.graphic.frame_of_reference and uid_ok(c.graphic.frame_of_reference):
            res["frameOfReferenceUid"] = c.graphic.frame_of_reference
        return res

    def _segment(self, c: Item, n: int) -> dict[str, Any] | None:
        assert c.ref is not None
        if not uid_ok(c.ref.sop_instance):
            return None
        res = self._selection(
            c,
            n,
            [IM + "ImagingSelectionEuImaging", DICOMSR + "referenced-segment"],
            Code("121191", "DCM", "Referenced Segment"),
        )
        # seriesUid is the series of the SEG instance (from the evidence sequences), not the 121232 "Source
        # series for segmentation", which names the segmented images' series (as the SR IG example does).
        _, series = self.h.evidence.get(c.ref.sop_instance, ("", None))
        if series:
            res["seriesUid"] = series
        inst: dict[str, Any] = {
            "uid": c.ref.sop_instance,
            "sopClass": {"system": SOP_CLASS_SYSTEM, "code": _SEG_SOP, "display": "Segmentation Storage"},
        }
        inst["subset"] = [str(s) for s in c.ref.segments] or ["1"]
        res["instance"] = [inst]
        return res

    def _instance(self, c: Item, n: int) -> dict[str, Any]:
        assert c.ref is not None
        code = c.name if c.name is not None and c.name.scheme == "DCM" else Code("113000", "DCM", "Of Interest")
        res = self._selection(c, n, [IM + "ImagingSelectionEuImaging"], code)
        _, series = self.h.evidence.get(c.ref.sop_instance, ("", None))
        if series:
            res["seriesUid"] = series
        inst: dict[str, Any] = {"uid": c.ref.sop_instance}
        if uid_ok(c.ref.sop_class):
            inst["sopClass"] = {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{c.ref.sop_class}"}
        res["instance"] = [inst]
        return res

    def _narrative(
        self, index: int, g: Item, attrs: dict[str, Item], site: Item | None, member_lines: list[str]
    ) -> str:
        finding = attrs.get("121071")
        head = f"Measurement group {index}"
        if finding is not None and finding.code is not None:
            head += f": {finding.code.meaning}"
        tid = attrs.get("112039")
        details = []
        if tid is not None and tid.text:
            details.append(f"tracking id {tid.text.strip()}")
        if site is not None and site.code is not None:
            mods = [
                m.code.meaning
                for m in site.children
                if m.code is not None and m.name is not None and m.name.value in _MODIFIERS
            ]
            details.append("finding site " + ", ".join([site.code.meaning, *mods]))
        if details:
            head += f" ({'; '.join(details)})"
        return "\n".join([head, *member_lines])


_SR_IG_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11",
    "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33",
    "1.2.840.10008.5.1.4.1.1.88.34",
}


def _algorithm_of(item: Item) -> tuple[str, str] | None:
    name = next((c.text.strip() for c in item.children if c.is_("111001") and c.text and c.text.strip()), None)
    if name is None:
        return None
    version = next((c.text.strip() for c in item.children if c.is_("111003") and c.text), "")
    return name, version


def id_path(c: Item, n: int) -> str:
    name = c.name.value if c.name else ""
    return f"{n}:{name}:{c.vtype}"


def _region_type(kind: str) -> str:
    return {
        "POINT": "point",
        "MULTIPOINT": "point",
        "POLYLINE": "polyline",
        "POLYGON": "polyline",
        "CIRCLE": "circle",
        "ELLIPSE": "ellipse",
    }.get(kind.upper(), "polyline")


def _label(c: Item) -> str:
    assert c.name is not None
    label = c.name.meaning or c.name.value
    derivation = next((x.code.meaning for x in c.children if x.is_("121401") and x.code), None)
    return f"{label} ({derivation})" if derivation else label
