"""The registry of output models: one name per deployment model, each a pure shaper plus what it needs from a server.

A model turns one :class:`~pipelines.common.model.Report` into ``(Bundle, kind)``:

========== ============================================================== ===============================
name       what ``engine map --model`` writes / what the publisher sends  kind
========== ============================================================== ===============================
document   the EU document Bundle (approach 1); the FHIR publisher wraps  ``document`` / ``minimal``
           it with a DocumentReferenceImagingReport (:mod:`.docref`)
rest       per report version the document Bundle, then one          ``rest-document``,
           ``transaction`` (approach 2, :mod:`.rest`: own copies +       ``transaction``
           DocumentReference; split by ``rest.split_documents``)
harmonized shared resources by identifier (approach 3, :mod:`.harmonized`)       ``harmonized``
imr        IHE IMR Report Creator transaction (RAD-141, :mod:`.imr`)           ``imr``
========== ============================================================== ===============================

Other models plug in with one line each (the shaper is imported lazily, so a missing module only fails when the
model is chosen)::

    register(Model("harmonized", "pipelines.output.harmonized:shape_harmonized", needs=TRANSACTION + (...)))
    register(Model("imr", "pipelines.output.imr:shape_imr", needs=TRANSACTION + (...)))

``needs`` lists FHIR RESTful interactions (CapabilityStatement ``rest.interaction`` / ``rest.resource.interaction``
codes, FHIR R5 §3.2.0 / http.html) written ``system:<code>`` or ``<Type>:<code>``; ``<Type>:update-create`` stands for
``resource.updateCreate`` (client-assigned ids), ``<Type>:conditional-create`` / ``conditional-update`` for the
matching flags. ``engine validate`` reports each one the server lacks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = ["MODELS", "TRANSACTION", "Model", "Shaper", "get_model", "model_names", "register", "shaper_for"]

#: shaper(report) or shaper(report, options) -> (Bundle, kind); options: the model's ``mapping.models`` settings
Shaper = Callable[..., tuple[dict[str, Any], str]]

TRANSACTION = ("system:transaction",)


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    shaper: str  # "package.module:function", function(report) -> (Bundle dict, kind)
    needs: tuple[str, ...] = ()
    description: str = ""


MODELS: dict[str, Model] = {}


def register(model: Model) -> None:
    """Add (or replace) a model; ``shaper`` is resolved on first use."""
    MODELS[model.name] = model


def model_names() -> list[str]:
    return sorted(MODELS)


def get_model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown output model {name!r} (available: {', '.join(model_names())})") from None


@cache
def shaper_for(name: str) -> Shaper:
    """The shaping function of a model (ValueError for an unknown model or a shaper that cannot be imported)."""
    model = get_model(name)
    module_name, _, func = model.shaper.partition(":")
    try:
        fn: Shaper = getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"output model {name!r}: shaper {model.shaper} is not available ({exc})") from exc
    return fn


def _updates(*types: str) -> tuple[str, ...]:
    return tuple(f"{t}:{code}" for t in types for code in ("update", "update-create"))


#: resource types a document Bundle of this engine can hold (copied one by one by the ``rest`` model)
DOCUMENT_TYPES = (
    "Composition", "DiagnosticReport", "Patient", "Organization", "Practitioner", "PractitionerRole",
    "ImagingStudy", "ServiceRequest", "Observation", "ImagingSelection", "Device",
)

register(Model(
    "document",
    "pipelines.output:shape_document_model",
    needs=TRANSACTION + _updates("Bundle", "DocumentReference") + ("DocumentReference:search-type",),
    description="EU document Bundle; on a FHIR server: Bundle + DocumentReferenceImagingReport (approach 1)",
))
register(Model(
    "rest",
    "pipelines.output.rest:shape_rest",
    needs=TRANSACTION + _updates(*DOCUMENT_TYPES, "Bundle", "DocumentReference") + ("DocumentReference:search-type",),
    description="one transaction per report version with own copies of every resource (approach 2)",
))
register(Model(
    "harmonized",
    "pipelines.output:shape_harmonized_model",
    needs=(
        *TRANSACTION,
        "system:batch",
        *(
            f"{t}:{code}"
            for t in ("Patient", "Organization", "Practitioner", "Device", "ImagingStudy", "ServiceRequest",
                      "DiagnosticReport", "Composition")
            for code in ("create", "update", "conditional-create", "conditional-update")
        ),
        "DiagnosticReport:patch", "Composition:patch", "ServiceRequest:patch", "ImagingStudy:patch",
    ),
    description="shared Patient/Organization/Practitioner/ImagingStudy/ServiceRequest by identifier (approach 3)",
))
register(Model(
    "imr",
    "pipelines.output:shape_imr_model",
    needs=(
        *TRANSACTION,
        *(
            f"{t}:{code}"
            for t in ("DiagnosticReport", "ImagingSelection", "Endpoint", "ImagingStudy", "ServiceRequest")
            for code in ("create", "conditional-create")
        ),
        "Patient:search-type", "Organization:search-type", "Practitioner:search-type",
    ),
    description="IHE IMR Report Creator (RAD-141): DiagnosticReport with image references, HTML rendition",
))
