"""Model options from the deployment's ``mapping.models`` section reach the shapers through the Converter
(the same path as ``engine map``, ``engine run`` and ``engine backfill``): IMR's WADO-RS base URL per site."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from engine.convert import Converter
from pipelines.context import MappingContext
from tests.models.helpers import entries
from tests.models.oru_factory import context, oru


def _imr_context(wado_rs: dict[str, str]) -> MappingContext:
    return replace(context(), models=MappingContext.from_mapping({"models": {"imr": {"wado_rs": wado_rs}}}).models)


def _endpoints(ctx: MappingContext) -> set[str]:
    conversion = Converter(ctx, model="imr").convert(oru())
    assert len(conversion.outputs) == 1, conversion
    bundle = json.loads(conversion.outputs[0].body)
    return {e["resource"]["address"] for e in entries(bundle, "Endpoint")}


def test_wado_rs_base_per_site_and_default() -> None:
    site = "https://pacs.test-hospital.example/dicom-web"
    assert _endpoints(_imr_context({"Test Hospital": site, "default": "https://other.example/wado"})) == {site}
    assert _endpoints(_imr_context({"default": "https://central.example/wado"})) == {"https://central.example/wado"}
    assert _endpoints(context()) == {"https://wado-rs.invalid/dicom-web"}  # not configured: inspection only


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"imr": {"wado": {}}}, "models.imr: unknown settings: wado"),
        ({"rest": {"x": 1}}, "models.rest: no options for this model"),
        ({"imr": {"wado_rs": {"default": "ftp://x"}}}, "models.imr.wado_rs: expected"),
    ],
)
def test_bad_model_options_are_config_errors(models: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MappingContext.from_mapping({"models": models})
