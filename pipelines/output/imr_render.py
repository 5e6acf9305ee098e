"""IHE IMR narrative and HTML rendition (ihe-imr.md §5.1-§5.3), pure string building.

* :func:`narrative_div` the ``DiagnosticReport.text`` XHTML: one ``<h2>`` per report section with its text,
  and for every image reference a ``<span class="imr-ref-ImagingSelection" id="ImagingSelection/{id}">label</span>``
  in the section the reference belongs to (findings when the source names none).
* :func:`html_rendition` the pre-rendered report (``presentedForm``, ``text/html``): the same content plus
  the header data of the mapping table (ihe-imr.md §4.1.1), every span replaced by ``<a href>`` to
  display-ready content (:func:`wado_rendered_url`: WADO-RS *rendered* resources, PS3.18 §10.4, never raw
  DICOM).
* :func:`attachment` ``contentType``, ``size`` (bytes; R5 ``integer64``, so a JSON string) and ``hash``
  (base64 of SHA-1, FHIR Attachment.hash) of the exact bytes carried base64 in ``data``.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Callable
from typing import Any

from pipelines.common.model import Report
from pipelines.common.sections import SECTIONS

__all__ = ["Ref", "attachment", "html_rendition", "narrative_div", "pdf_rendition", "wado_rendered_url"]

_ORDER = (
    "history", "order", "procedure", "comparison", "findings", "impression", "conclusion", "recommendation",
    "communication", "addendum", "report",
)  # fmt: skip

Ref = tuple[str, str, str, dict[str, Any]]  # (section key, ImagingSelection id, label, ImagingSelection)


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _body(report: Report, refs: list[Ref], link: Callable[[Ref], str]) -> str:
    texts: dict[str, list[str]] = {}
    for s in report.sections:
        if s.text.strip():
            texts.setdefault(s.key if s.key in SECTIONS else "report", []).append(s.text)
    by_section: dict[str, list[Ref]] = {}
    for ref in refs:
        key = ref[0] if ref[0] in SECTIONS and ref[0] in _ORDER else "findings"
        by_section.setdefault(key, []).append(ref)
    out = []
    for key in _ORDER:
        paragraphs = texts.get(key, [])
        section_refs = by_section.get(key, [])
        if not paragraphs and not section_refs:
            continue
        out.append(f"<h2>{_esc(SECTIONS[key][2])}</h2>")
        for text in paragraphs:
            out.append("<p>" + "<br/>".join(_esc(line) for line in text.split("\n")) + "</p>")
        if section_refs:
            out.append("<p>Images: " + ", ".join(link(r) for r in section_refs) + "</p>")
    return "".join(out)


def _span(ref: Ref) -> str:
    return f'<span class="imr-ref-ImagingSelection" id="ImagingSelection/{ref[1]}">{_esc(ref[2])}</span>'


def narrative_div(report: Report, refs: list[Ref]) -> str:
    """The XHTML ``div`` of DiagnosticReport.text (FHIR narrative rules: no script, no style, no events)."""
    body = _body(report, refs, _span) or "<p>No narrative text in the source report.</p>"
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'


def wado_rendered_url(base: str, selection: dict[str, Any]) -> str:
    """The WADO-RS rendered resource (PS3.18 §10.4.1.1.3) of an ImagingSelection: frame(s) of an instance,
    an instance, a series or the study, whichever the selection is most precise about. ``base`` is the
    WADO-RS service root (``Endpoint.address``)."""
    root = base.rstrip("/")
    url = f"{root}/studies/{selection['studyUid']}"
    series = selection.get("seriesUid")
    instances = selection.get("instance") or []
    if series:
        url += f"/series/{series}"
        if instances:
            url += f"/instances/{instances[0]['uid']}"
            frames = [f for f in instances[0].get("subset") or [] if f.isdigit()]
            if frames and _is_image_class(instances[0]):
                url += "/frames/" + ",".join(frames)
    return url + "/rendered"


def _is_image_class(instance: dict[str, Any]) -> bool:
    """Frame numbers apply to images; the subset of an SR/SEG/RT instance holds other things (ihe-imr §5.4)."""
    code = str(instance.get("sopClass", {}).get("code", ""))
    return not any(
        code.endswith(p) for p in ("1.1.88.11", "1.1.88.22", "1.1.88.33", "1.1.88.34", "1.1.88.67", "1.1.66.4")
    )


def html_rendition(report: Report, refs: list[Ref], header: list[tuple[str, str]], href: Callable[[Ref], str]) -> bytes:
    """The complete HTML document (UTF-8 bytes): title, header table, sections, links instead of spans."""

    def link(ref: Ref) -> str:
        return f'<a href="{html.escape(href(ref), quote=True)}">{_esc(ref[2])}</a>'

    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in header if v)
    body = _body(report, refs, link) or "<p>No narrative text in the source report.</p>"
    doc = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{_esc(report.title)}</title></head><body><h1>{_esc(report.title)}</h1>"
        f"<table>{rows}</table>{body}</body></html>"
    )
    return doc.encode("utf-8")


def attachment(content_type: str, raw: bytes, title: str | None = None) -> dict[str, Any]:
    """FHIR Attachment with ``size`` = raw byte length and ``hash`` = base64(SHA-1(raw)) (RC-06, RC-07)."""
    out: dict[str, Any] = {"contentType": content_type, "data": base64.b64encode(raw).decode("ascii")}
    out["size"] = str(len(raw))  # R5 integer64: a JSON string
    out["hash"] = base64.b64encode(hashlib.sha1(raw, usedforsecurity=False).digest()).decode("ascii")
    if title:
        out["title"] = title
    return out


def pdf_rendition(html_doc: bytes) -> bytes:
    """The IMR PDF Report option (ihe-imr.md §1.3, RC-16): the HTML rendition laid out as PDF by xhtml2pdf
    (pure Python on ReportLab; optional dependency ``pdf``), links kept as URI link annotations. ReportLab's
    ``invariant`` mode fixes the creation date and document id, so the bytes are deterministic (no clock).
    The standard PDF fonts cover Latin-1 only: other scripts need a TTF font configured in the HTML (not done).
    xhtml2pdf's own logger is silenced (its messages can quote report text)."""
    import io
    import logging

    from reportlab import rl_config
    from xhtml2pdf import pisa

    rl_config.invariant = 1
    logging.getLogger("xhtml2pdf").disabled = True
    out = io.BytesIO()
    status = pisa.CreatePDF(io.BytesIO(html_doc), dest=out, encoding="utf-8")
    if status.err:
        raise ValueError("PDF rendition failed")
    return out.getvalue()
