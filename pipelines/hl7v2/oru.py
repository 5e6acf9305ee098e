"""ORU^R01 -> neutral :class:`~pipelines.common.model.Report` objects, one per ORC/OBR group.

Field rules: mappings.md §1 (v2-to-FHIR), §2 (how radiology reports travel), §6 (status), §7 (dialects).
Site questions (which field carries the accession, issuer namespaces, time zone) come from the sender
profile in the :class:`~pipelines.context.MappingContext`. Nothing is invented: no accession, Study UID or
status that the message does not carry.

Several PATIENT_RESULT groups (several PIDs) in one message are mapped each with their own patient;
a PID block without report content is skipped when another block of the message converts (the message
is rejected only when no block does).

Grouped procedures: an OBR group with no OBX of its own that directly follows a group with report
content (one dictation for CT chest/abdomen/pelvis) is attached to that report as an extra order rather
than emitted as an empty report (mappings.md §7.6). A message whose groups carry no report content is
rejected.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pipelines.common.fhir import LOINC
from pipelines.common.ids import digest, slug, uid_ok
from pipelines.common.model import (
    Coding,
    Concept,
    Finding,
    Ident,
    Order,
    Organization,
    Patient,
    Person,
    Report,
    StatusUpdate,
    Study,
)
from pipelines.context import MappingContext, SenderProfile
from pipelines.errors import InvalidReport, MappingError, RetractedContent, StatusOnly, UnsupportedMessage
from pipelines.hl7v2 import classify
from pipelines.hl7v2 import datatypes as dt
from pipelines.hl7v2.er7 import Delimiters, Message
from pipelines.hl7v2.fields import component, leaf, unescape
from pipelines.hl7v2.fields import field as fld
from pipelines.hl7v2.groups import OrderGroup, split_groups
from pipelines.hl7v2.observations import GroupContent, read_observations
from pipelines.hl7v2.pid import patient as pid_patient
from pipelines.hl7v2.status import report_status

__all__ = ["map_oru"]

#: Report statuses that withdraw a report's content (mappings.md §6: OBR-25 X, OBX-11 X/D/W).
_WITHDRAWN = frozenset({"cancelled", "entered-in-error"})
#: The report type every imaging report has (LOINC, a member of the EU ImagingReportTypes value set, is-a
#: 18726-0): the first coding of ``DiagnosticReport.code`` / ``Composition.type``.
_DIAGNOSTIC_IMAGING = Coding(code="18748-4", system=LOINC, display="Diagnostic imaging study")


def map_oru(msg: Message, ctx: MappingContext) -> list[Report]:
    d = msg.delimiters
    msh = msg.segments[0]
    mtype = component(fld(msh, 9), d, 1).upper()
    trigger = component(fld(msh, 9), d, 2).upper()
    if mtype != "ORU" or trigger not in ("R01", ""):
        shown = f"{mtype}^{trigger}" if trigger else mtype or "(empty)"
        if not re.fullmatch(r"[A-Z0-9]{1,3}(\^[A-Z0-9]{1,3})?", shown):
            shown = "(unreadable MSH-9)"  # never echo arbitrary field content (it could be PHI)
        raise UnsupportedMessage(f"message type {shown} is not ORU^R01 (only imaging result reports are converted)")
    app = component(fld(msh, 3), d, 1)
    facility = component(fld(msh, 4), d, 1)
    profile = ctx.sender(app, facility)
    # HL7 v2.5.1 2.A.22 (DTM): a time without an offset is in the sender's local zone. The sender profile says
    # which; without one, the offset the sender's own times declare (MSH-7, else OBR-22/OBR-7), only then the
    # deployment default, and then every source dateTime is marked uncertain (eu-imaging.md §2.5).
    declared = None if profile.timezone else _sender_offset(msg)
    tz = profile.timezone or declared or ctx.timezone_for(profile)
    tz_assumed = profile.timezone is None and declared is None
    site = slug(facility or app or "unknown-sender")
    base = f"{ctx.system_base}/{site}"
    blocks = _patient_blocks(msg.segments[1:])
    if not blocks:
        raise InvalidReport("no PID segment: a report without a patient cannot be converted")
    performer = _organization(msh, d, profile, base, ctx)
    reports: list[Report] = []
    failure: MappingError | None = None
    updates: list[StatusUpdate] = []
    for block in blocks:
        try:
            reports.extend(_map_patient_result(msg, block, ctx, profile, base, tz, performer, tz_assumed))
        except StatusOnly as exc:
            updates.extend(exc.updates)
            failure = failure or exc
        except (UnsupportedMessage, InvalidReport) as exc:
            failure = failure or exc
    if not reports:
        assert failure is not None
        if isinstance(failure, StatusOnly):  # every status-only block of the message, in order
            raise StatusOnly(str(failure), updates)
        raise failure
    return reports


def _sender_offset(msg: Message) -> str | None:
    """The UTC offset the sender's own times declare: MSH-7's, else the first OBR-22 or OBR-7 that carries one
    (2.A.22: every DTM without an offset is in that same local zone). None when no such time has one."""
    found = dt.dtm_offset(fld(msg.segments[0], 7))
    if found:
        return found
    for seg in msg.segments:
        if seg[0] == "OBR":
            for value in (fld(seg, 22), fld(seg, 7)):
                if ("+" in value or "-" in value) and (found := dt.dtm_offset(value)):  # cheap test first
                    return found
    return None


def _patient_blocks(segments: list[list[str]]) -> list[list[list[str]]]:
    """PATIENT_RESULT groups: each PID starts one, with its own ORDER_OBSERVATION groups, so a report is
    never attributed to another PID of the same message. Segments before the first PID belong to none."""
    blocks: list[list[list[str]]] = []
    for seg in segments:
        if seg[0] == "PID":
            blocks.append([seg])
        elif blocks:
            blocks[-1].append(seg)
    return blocks


def _map_patient_result(
    msg: Message,
    block: list[list[str]],
    ctx: MappingContext,
    profile: SenderProfile,
    base: str,
    tz: str,
    performer: Organization | None,
    tz_assumed: bool,
) -> list[Report]:
    d = msg.delimiters
    msh = msg.segments[0]
    groups, _header = split_groups(block)
    pid = block[0]
    if not groups:
        raise InvalidReport("no OBR segment: the message carries no order/result group")
    contents = [read_observations(g.obx, d, base, msg.charset, tz) for g in groups]
    if not any(_has_content(c) for c in contents) and any(c.retracted for c in contents):
        raise RetractedContent()  # every content row is OBX-11 W/D: publish nothing of it
    _check_imaging(groups, contents, d)
    broken = next((c.broken[0] for c in contents if c.broken), None)
    if broken is not None:
        # A report whose attached document cannot be read is not converted without it: rejected (dead letter with
        # the original bytes and this reason), never filtered as "no content" nor published short of it.
        raise InvalidReport(f"{broken}: the report cannot be converted without its document")
    patient = pid_patient(pid, d, ctx, profile, base, tz)
    control_id = component(fld(msh, 10), d, 1)
    msh7 = fld(msh, 7)
    reports: list[Report] = []
    for group, content in zip(groups, contents, strict=True):
        if _retracted_group(content):
            continue  # its every row was withdrawn (OBX-11 W/D): not a grouped procedure of another report
        order = _order(group, d, profile, base, tz)
        if not _has_content(content):
            if reports:
                reports[-1].orders.append(order)  # grouped procedure sharing the previous dictation
                continue
            if any(_has_content(c) for c in contents):
                continue  # orders listed before the report group are attached below
        report = _report(group, content, order, d, patient, performer, profile, base, tz, msh7, control_id, tz_assumed)
        reports.append(report)
    if not reports or not any(_has_content(c) for c in contents):
        reason = "no report content: no text, coded finding or document in any OBX"
        updates = [_status_update(g, d, patient, profile, base, tz, msh7, control_id) for g in groups]
        kept = [u for u in updates if u.order_status and (u.orders or u.studies)]
        if kept:
            raise StatusOnly(reason, kept)
        raise UnsupportedMessage(reason)
    # Content-less groups before the first report group: attach to it (same dictation).
    first = next(i for i, c in enumerate(contents) if _has_content(c))
    for group, content in zip(groups[:first], contents[:first], strict=True):
        if not _retracted_group(content):
            reports[0].orders.insert(0, _order(group, d, profile, base, tz))
    return reports


def _retracted_group(content: GroupContent) -> bool:
    """A group without report content whose rows were withdrawn (OBX-11 W/D)."""
    return bool(content.retracted) and not _has_content(content)


def _status_update(
    group: OrderGroup,
    d: Delimiters,
    patient: Patient,
    profile: SenderProfile,
    base: str,
    tz: str,
    msh7: str,
    control_id: str,
) -> StatusUpdate:
    """A content-less ORC/OBR group as a status notification: OBR-25 plus the order (accession) and the
    studies (ZDS/IPC Study Instance UIDs) it is about. Nothing else of the message is used."""
    order = _order(group, d, profile, base, tz)
    studies: list[Study] = []
    for seg in group.extra:
        uid = _extra_study_uid(seg, d)
        if uid and uid not in {s.uid for s in studies}:
            studies.append(Study(uid=uid))
    return StatusUpdate(
        order_status=" ".join(fld(group.obr, 25).upper().split()),
        patient=patient,
        orders=[order] if order.accession is not None else [],
        studies=studies,
        issued=dt.dtm_instant(fld(group.obr, 22), tz) or dt.dtm_instant(msh7, tz),
        ids={"control_id": control_id},
    )


def _has_content(content: GroupContent) -> bool:
    """Report content comes from OBX rows; NTE comments (often order notes) alone never make a report."""
    return bool(content.observations and (content.sections or content.findings or content.forms))


def _check_imaging(groups: list[OrderGroup], contents: list[GroupContent], d: Delimiters) -> None:
    lab = False
    for group, content in zip(groups, contents, strict=True):
        section = component(fld(group.obr, 24), d, 1).upper()
        if content.study_uids or any(s[0] in ("ZDS", "IPC") for s in group.extra):
            return
        if any(s[0] == "SPM" for s in group.extra):
            lab = True
            continue
        if any(s.key != "report" for s in content.sections):
            return
        if section in classify.IMAGING_SECTIONS:
            return
        text = " ".join(component(fld(group.obr, 4), d, i) for i in (2, 5, 9))
        if section not in classify.LAB_SECTIONS and classify.imaging_words(text):
            return
        lab = lab or section in classify.LAB_SECTIONS or any(s[0] == "SPM" for s in group.extra)
    if lab:
        raise UnsupportedMessage("laboratory result (specimen or lab service section), not an imaging report")
    raise UnsupportedMessage(
        "not an imaging report: no Study UID, report-section OBX, imaging service section (OBR-24) or imaging "
        "procedure (OBR-4)"
    )


def _organization(
    msh: list[str], d: Delimiters, profile: SenderProfile, base: str, ctx: MappingContext
) -> Organization | None:
    """The sending organisation (MSH-4, else MSH-3; the profile's name wins); a new Organization each call."""
    found = _organization_parts(fld(msh, 4), fld(msh, 3), d, profile.organization_name, ctx.system_base)
    if found is None:
        return None
    name, ident = found
    return Organization(name=name, identifiers=[ident])


@lru_cache(maxsize=256)  # pure; a feed sends the same MSH-3/MSH-4 on every message
def _organization_parts(
    raw: str, raw3: str, d: Delimiters, organization_name: str | None, system_base: str
) -> tuple[str, Ident] | None:
    name = organization_name or component(raw, d, 1) or component(raw3, d, 1)
    if not name:
        return None
    system = dt.hd_system(raw.split(d.repetition)[0].replace(d.component, d.subcomponent), d, system_base,
                          d.subcomponent) if raw else None  # fmt: skip
    ident_value = component(raw, d, 1) or name
    if system and system.startswith("urn:oid:"):
        return name, Ident(system="urn:ietf:rfc:3986", value=system)
    return name, Ident(system=f"{system_base}/sending-facility", value=ident_value)


def _ei(raw: str, d: Delimiters, base: str, default_system: str, type_code: str) -> Ident | None:
    parts = raw.split(d.repetition)[0].split(d.component)
    value = unescape(parts[0], d).strip()  # component 1 (the entity identifier), split before unescaping
    if not value:
        return None
    hd = d.subcomponent.join(parts[1:4]) if len(parts) > 1 else ""
    system = dt.hd_system(hd, d, base, d.subcomponent) if hd.strip(d.subcomponent) else None
    return Ident(system=system or default_system, value=value, type_code=type_code)


def _accession(group: OrderGroup, d: Delimiters, profile: SenderProfile, base: str) -> Ident | None:
    seg_name, _, num = profile.accession_field.partition("-")
    if seg_name == "OBR":
        seg = group.obr
    elif seg_name == "ORC":
        seg = group.orc or []
    else:
        seg = next((s for s in group.extra if s[0] == seg_name), [])
    raw = fld(seg, int(num)) if seg else ""
    value = leaf(raw, d, 1, 1).strip()  # split into subcomponents first, then unescape
    if not value:
        return None
    system = profile.accession_system
    if system is None:
        sub = component(raw, d, 1, unescaped=False).split(d.subcomponent)
        issuer = dt.hd_system(d.subcomponent.join(sub[1:4]), d, base, d.subcomponent) if len(sub) > 1 else None
        ei_issuer = _ei(raw, d, base, "", "ACSN")
        system = issuer or (ei_issuer.system if ei_issuer and ei_issuer.system else None) or f"{base}/accession"
    return Ident(system=system, value=value, type_code="ACSN")


def _order(group: OrderGroup, d: Delimiters, profile: SenderProfile, base: str, tz: str) -> Order:
    obr, orc = group.obr, group.orc or []
    placer = _ei(fld(orc, 2) or fld(obr, 2), d, base, f"{base}/placer-order", "PLAC")
    filler = _ei(fld(orc, 3) or fld(obr, 3), d, base, f"{base}/filler-order", "FILL")
    code = dt.cwe(fld(obr, 4), d, base)
    reason = dt.cwe(fld(obr, 31), d, base)
    requester = dt.xcn(fld(orc, 12) or fld(obr, 16), d, base, f"{base}/practitioner") or _participant(
        group, "OP", d, base
    )
    return Order(
        accession=_accession(group, d, profile, base),
        placer=placer,
        filler=filler,
        code=code or None,
        reason=reason or None,
        requester=requester,
        authored=dt.dtm_datetime(fld(orc, 9), tz) if orc else None,
    )


def _report(
    group: OrderGroup,
    content: GroupContent,
    order: Order,
    d: Delimiters,
    patient: Patient,
    performer: Organization | None,
    profile: SenderProfile,
    base: str,
    tz: str,
    msh7: str,
    control_id: str,
    tz_assumed: bool,
) -> Report:
    obr = group.obr
    status = report_status(fld(obr, 25), content.text_statuses)
    if status in _WITHDRAWN:
        # The whole report is cancelled (OBR-25 X, table 0123: "no results available; order canceled"; or every
        # text row OBX-11 X, table 0085: "results cannot be obtained") or entered in error (OBR-25 W/D as RIS send
        # them, table 0085 W/D): FHIR says such a report is unavailable / not valid. This version publishes its
        # status (it supersedes the earlier ones), never the text, findings or documents it carried.
        content = GroupContent(study_uids=content.study_uids, text_statuses=content.text_statuses)
    identifier = order.filler or order.placer or order.accession
    if identifier is None:
        identifier = Ident(system=f"{base}/message-report", value=f"{control_id or 'no-control-id'}-{group.index}")
    identifier = Ident(system=identifier.system, value=identifier.value)
    obr22 = fld(obr, 22)
    issued = dt.dtm_instant(obr22, tz) or dt.dtm_instant(msh7, tz)
    effective = dt.dtm_datetime(fld(obr, 7), tz)
    text_digest = digest(
        *(f"{s.key}:{s.text}" for s in content.sections),
        *(_finding_digest(f) for f in content.findings),
        *(a.data_b64 or a.url or "" for a in content.forms),  # whole documents: PDFs share their first bytes
    )
    section = component(fld(obr, 24), d, 1).strip().upper()
    studies = [Study(uid=uid, started=effective) for uid in content.study_uids]
    for seg in group.extra:
        uid = _extra_study_uid(seg, d)
        if uid and uid not in {s.uid for s in studies}:
            studies.append(Study(uid=uid, started=effective))
    modality = classify.modality_for_section(section) or _ipc_modality(group, d)
    procedure_name = _procedure_name(order.code)
    for study in studies:
        if modality:
            study.modalities = [modality]
        if procedure_name:
            study.description = procedure_name
    interpreter = dt.xcn(fld(obr, 32), d, base, f"{base}/practitioner") or _participant(group, "PRI", d, base)
    title = procedure_name or "Imaging report"
    conclusion = next((s.text for s in content.sections if s.key == "impression"), None)
    return Report(
        source="hl7v2",
        identifier=identifier,
        # A version is its status, time and content, including who it is about: the same report id sent for
        # another patient (a patient correction) is a new document instance, never an overwrite.
        version_key=digest(status, obr22 or msh7, text_digest, *(f"{i.system}|{i.value}" for i in patient.identifiers)),
        status=status,
        patient=patient,
        timezone=tz,
        timezone_assumed=tz_assumed,
        code=_report_code(order.code),
        service_section=section or None,
        title=title,
        orders=[order],
        studies=studies,
        interpreters=[interpreter] if interpreter else [],
        performer=performer,
        issued=issued,
        effective=effective,
        effective_end=dt.dtm_period_end(effective, fld(obr, 8), tz),
        date=dt.dtm_datetime(obr22, tz) or dt.dtm_datetime(msh7, tz),
        attested=dt.dtm_datetime(obr22, tz) if interpreter else None,
        sections=content.sections,
        findings=content.findings,
        conclusion=conclusion,
        presented_forms=content.forms,
        ids={"control_id": control_id},
        status_only=_status_change_only(fld(obr, 25), content.text_statuses),
    )


def _finding_digest(f: Finding) -> str:
    """A finding's part of the version digest: the same string as before integers stayed integers, so the
    Bundle id of a version is unchanged; a comparator (``<5`` is not ``5``) or an observation time of its own
    (OBX-14) makes another version."""
    q = f.value_quantity
    quantity = (float(q[0]), q[1], q[2]) if q is not None else None
    text = repr((f.key, f.code, f.value_concept, quantity, f.value_string or f.value_date_time or f.value_time))
    if f.value_comparator:
        text += f"|{f.value_comparator}"
    return f"{text}|{f.effective}" if f.effective else text


def _procedure_name(procedure: Concept | None) -> str | None:
    """The name of the procedure OBR-4 orders: the display of its first coding, else its text (CWE.9, or a
    code-less ``^CT HEAD`` display). Report title and ImagingStudy.description."""
    if not procedure:
        return None
    display = procedure.codings[0].display if procedure.codings else None
    return display or procedure.text


def _report_code(procedure: Concept | None) -> Concept | None:
    """``DiagnosticReport.code`` (= ``Composition.type``) of a report on the OBR-4 procedure.

    The EU profiles bind the code (preferred) to the LOINC report types (``ImagingReportTypesEuVSEuImaging``,
    is-a 18726-0), v2-to-FHIR maps OBR-4 to it (mappings.md §1.6) and mappings.md §2.5 / §7.12 settle the
    conflict: LOINC 18748-4 first, the OBR-4 codings (each under its checked system) as extra codings and its
    text as the concept's text, so the code names the procedure the message names. ``None`` (the shaper's
    plain 18748-4) when OBR-4 is empty: no procedure is invented."""
    if not procedure:
        return None
    extra = tuple(c for c in procedure.codings if not (c.code == "18748-4" and c.system == LOINC))
    return Concept(codings=(_DIAGNOSTIC_IMAGING, *extra), text=procedure.text)


def _status_change_only(obr25: str, obx11: list[str]) -> bool:
    """OBR-25 ``X`` (order cancelled) or every text row OBX-11 ``U`` (table 0085: status change to final
    without retransmitting results): a status change, not new content (harmonized model patches status)."""
    if obr25.strip().upper() in ("X", "CANCELLED", "CANCELED"):
        return True
    return bool(obx11) and all(v.strip().upper() == "U" for v in obx11)


def _participant(group: OrderGroup, role: str, d: Delimiters, base: str) -> Person | None:
    """The person of the group's first order-level PRT whose PRT-4 participation (HL7 table 0912) is ``role``:
    ``PRI`` principal result interpreter (v2.7+ replaces OBR-32 with it), ``OP`` ordering provider (mappings.md
    §1.1: PRT-4 PRI -> resultsInterpreter, OP -> requester). PRT-5 is an XCN."""
    for seg in group.extra:
        if seg[0] == "PRT" and component(fld(seg, 4), d, 1).strip().upper() == role:
            person = dt.xcn(fld(seg, 5), d, base, f"{base}/practitioner")
            if person is not None:
                return person
    return None


def _extra_study_uid(seg: list[str], d: Delimiters) -> str | None:
    if seg[0] == "ZDS":
        uid = component(fld(seg, 1), d, 1).strip()
    elif seg[0] == "IPC":
        uid = component(fld(seg, 3), d, 1).strip()
    else:
        return None
    return uid if uid_ok(uid) else None


def _ipc_modality(group: OrderGroup, d: Delimiters) -> str | None:
    ipc = next((s for s in group.extra if s[0] == "IPC"), None)
    value = component(fld(ipc, 5), d, 1).strip().upper() if ipc else ""
    return value if value.isalpha() and 2 <= len(value) <= 3 else None
