"""Synthetic ORU^R01 report versions for the publisher tests (no PHI; HL7 v2.5.1 chapter 7 layout).

One report (filler order number ``filler``) goes through versions: ``P`` (preliminary), ``F`` (final), ``C``
(corrected) and an addendum (``C`` with an ``&ADT`` addendum section), each with its own OBR-22 time, so each is
a new document version of the same report identifier.
"""

from __future__ import annotations

__all__ = ["oru", "version_sequence"]


def oru(*, filler: str, status: str, when: str, text: str, impression: str = "No acute findings.",
        addendum: str | None = None, mrn: str = "PAT0001", accession: str | None = None,
        study_uid: str = "2.25.1000001", control: str | None = None) -> bytes:
    """One ORU^R01 as CR-separated bytes. ``when`` is a v2 DTM with seconds and an offset."""
    acc = accession or f"ACC{filler}"
    ctrl = control or f"MSG{filler}{status}{when[-10:-5]}"
    segs = [
        f"MSH|^~\\&|RIS|HOSPA|HUB|HUB|{when}||ORU^R01^ORU_R01|{ctrl}|P|2.5.1",
        f"PID|1||{mrn}^^^HOSPA^MR||TESTPATIENT^ALEX||19700101|F",
        f"ORC|RE|PL{filler}|{filler}",
        f"OBR|1|PL{filler}|{filler}|71020^XR CHEST 2 VIEWS^C4|||{when}|||||||||||{acc}||||{when}||RAD|{status}",
        f"OBX|1|ST|113014^Study Instance UID^DCM||{study_uid}||||||{status}",
        f"OBX|2|TX|&GDT^Findings||{text}||||||{status}",
        f"OBX|3|TX|&IMP^Impression||{impression}||||||{status}",
    ]
    if addendum:
        segs.append(f"OBX|4|TX|&ADT^Addendum||{addendum}||||||{status}")
    return ("\r".join(segs) + "\r").encode()


def version_sequence(filler: str = "F1001", **kw: str) -> list[bytes]:
    """P, F, C and an addendum of one report, in sending order."""
    return [
        oru(filler=filler, status="P", when="20260105101500+0100", text="Lungs clear. Heart size normal.", **kw),
        oru(filler=filler, status="F", when="20260105113000+0100", text="Lungs clear. Heart size normal.", **kw),
        oru(filler=filler, status="C", when="20260106090000+0100", text="Lungs clear. Heart size at upper limit.",
            **kw),
        oru(filler=filler, status="C", when="20260107080000+0100", text="Lungs clear. Heart size at upper limit.",
            addendum="Compared with the prior study: unchanged.", **kw),
    ]
