"""ORU^R01 message structure: PATIENT_RESULT / ORDER_OBSERVATION groups (HL7 v2 chapter 7).

Each ORC starts an order group and each OBR belongs to the ORC before it (ORC is optional); OBX/NTE follow
their OBR. A ZDS (IHE SWF Study Instance UID) or IPC segment belongs to the group it follows, and so does an
order-level PRT (participation, v2.7+).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OrderGroup", "split_groups"]

Segment = list[str]


@dataclass(slots=True)
class OrderGroup:
    obr: Segment
    orc: Segment | None = None
    obx: list[Segment] = field(default_factory=list)  # OBX and NTE rows in message order
    extra: list[Segment] = field(default_factory=list)  # ZDS, IPC, ... attached to this group
    index: int = 0  # 1-based position of the OBR in the message


def split_groups(segments: list[Segment]) -> tuple[list[OrderGroup], list[Segment]]:
    """Return (order groups, message-level segments that precede any group: MSH, PID, PV1, ...)."""
    groups: list[OrderGroup] = []
    header: list[Segment] = []
    pending_orc: Segment | None = None
    pending_prt: list[Segment] = []  # PRT after an ORC, before its OBR (v2.7+ ORC [PRT])
    current: OrderGroup | None = None
    for seg in segments:
        name = seg[0]
        if name == "ORC":
            pending_orc = seg
            pending_prt = []
            continue
        if name == "OBR":
            orc = pending_orc
            current = OrderGroup(obr=seg, orc=orc, index=len(groups) + 1, extra=pending_prt)
            groups.append(current)
            pending_orc = None
            pending_prt = []
            continue
        # Order-level participations (v2.7+ ORDER_OBSERVATION: ORC [PRT] OBR [NTE] [PRT]); a PRT after an OBX
        # is the observation's (OBX [PRT]), not the report's.
        if name == "PRT" and pending_orc is not None:
            pending_prt.append(seg)
            continue
        if name == "PRT" and current is not None and not current.obx:
            current.extra.append(seg)
            continue
        if current is None:
            header.append(seg)
            continue
        if name in ("OBX", "NTE"):
            current.obx.append(seg)  # NTE stays in place: it annotates the OBR or the OBX before it
        elif name in ("ZDS", "IPC") or name.startswith("Z") or name == "SPM":
            current.extra.append(seg)
        else:
            header.append(seg)
    return groups, header
