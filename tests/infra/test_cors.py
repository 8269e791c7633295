"""CORS in AWS: with ``cors_origins`` set, API Gateway answers browser preflights (OPTIONS) for
every resource, and cdk-nag still passes; without it, no OPTIONS method exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import (
    DEPLOYER_SETTINGS,
    Synthesized,
    cdk_context,
    make_layer_placeholder,
    without_aws_credentials,
)

ORIGIN = "https://app.example.org"


@pytest.fixture(scope="module")
def with_cors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aws_cdk import App

    from fhirflow_infra.application import build

    root = tmp_path_factory.mktemp("infra-cors")
    settings = {**DEPLOYER_SETTINGS, "cors_origins": [ORIGIN]}
    with without_aws_credentials():
        app = App(
            context=cdk_context(**{"fhirflow:settings": settings, "fhirflow:alarmEmail": "ops@example.org"}),
            outdir=str(root / "cdk.out"),
        )
        stack = build(app, code_dir=root / "code", layer_dir=make_layer_placeholder(root))
        app.synth()  # cdk-nag runs here: an unacknowledged finding on the OPTIONS methods fails it
    template: dict[str, Any] = json.loads((Path(root / "cdk.out") / f"{stack.artifact_id}.template.json").read_text())
    return template


def _methods(template: dict[str, Any], verb: str) -> list[dict[str, Any]]:
    return [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::ApiGateway::Method" and r["Properties"]["HttpMethod"] == verb
    ]


def test_every_resource_answers_a_preflight_for_the_configured_origin(with_cors: dict[str, Any]) -> None:
    resources = [r for r in with_cors["Resources"].values() if r["Type"] == "AWS::ApiGateway::Resource"]
    options = _methods(with_cors, "OPTIONS")
    assert len(options) == len(resources) + 1  # and the root
    for method in options:
        assert method["AuthorizationType"] == "NONE"
        assert method["Integration"]["Type"] == "MOCK"
        # Binary media types are */*: without this the mock's text answer fails as binary (500).
        assert method["Integration"]["ContentHandling"] == "CONVERT_TO_TEXT"
        headers = method["Integration"]["IntegrationResponses"][0]["ResponseParameters"]
        assert headers["method.response.header.Access-Control-Allow-Origin"] == f"'{ORIGIN}'"
        assert "Authorization" in headers["method.response.header.Access-Control-Allow-Headers"]
        assert "If-None-Exist" in headers["method.response.header.Access-Control-Allow-Headers"]


def test_the_lambdas_are_told_the_origins(with_cors: dict[str, Any]) -> None:
    functions = [r for r in with_cors["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    api = [
        f for f in functions if "FHIRFLOW_CORS_ORIGINS" in f["Properties"].get("Environment", {}).get("Variables", {})
    ]
    assert api, "no function got FHIRFLOW_CORS_ORIGINS"
    assert {f["Properties"]["Environment"]["Variables"]["FHIRFLOW_CORS_ORIGINS"] for f in api} == {ORIGIN}


def test_without_origins_there_is_no_preflight(synthesized: Synthesized) -> None:
    assert _methods(synthesized.template, "OPTIONS") == []
