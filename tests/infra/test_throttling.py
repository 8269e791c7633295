"""Throttling: the stage throttles every method by default; with ``fhirflow:apiKeys`` every
route but the preflights needs an API key under a usage plan; index-sync, the stream consumer,
has reserved concurrency of its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirflow_infra.api import DEFAULT_THROTTLE
from fhirflow_infra.stack import STREAM_CONCURRENCY
from tests.infra.conftest import (
    DEPLOYER_SETTINGS,
    Synthesized,
    cdk_context,
    make_layer_placeholder,
    without_aws_credentials,
)


def _stage(template: dict[str, Any]) -> dict[str, Any]:
    [stage] = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::ApiGateway::Stage"]
    return stage


def _of_type(template: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == type_]


def test_the_stage_throttles_every_method_by_default(synthesized: Synthesized) -> None:
    [settings] = _stage(synthesized.template)["MethodSettings"]
    assert settings["HttpMethod"] == "*"
    assert settings["ResourcePath"] == "/*"
    assert settings["ThrottlingRateLimit"] == DEFAULT_THROTTLE.rate_limit
    assert settings["ThrottlingBurstLimit"] == DEFAULT_THROTTLE.burst_limit
    # No keys unless asked for.
    assert _of_type(synthesized.template, "AWS::ApiGateway::UsagePlan") == []
    assert not any(m.get("ApiKeyRequired") for m in _of_type(synthesized.template, "AWS::ApiGateway::Method"))


def test_the_stream_consumer_has_reserved_concurrency(synthesized: Synthesized) -> None:
    index_sync = synthesized.template["Resources"][synthesized.logical_id(synthesized.stack.index_sync.function)]
    assert index_sync["Properties"]["ReservedConcurrentExecutions"] == STREAM_CONCURRENCY


@pytest.fixture(scope="module")
def with_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aws_cdk import App

    from fhirflow_infra.application import build

    root = tmp_path_factory.mktemp("infra-keys")
    context = cdk_context(
        **{
            "fhirflow:settings": {**DEPLOYER_SETTINGS, "cors_origins": ["https://app.example.org"]},
            "fhirflow:alarmEmail": "ops@example.org",
            "fhirflow:apiKeys": "true",
            "fhirflow:throttle": '{"rateLimit": 25, "burstLimit": 50}',
            "fhirflow:streamConcurrency": "0",
        }
    )
    with without_aws_credentials():
        app = App(context=context, outdir=str(root / "cdk.out"))
        stack = build(app, code_dir=root / "code", layer_dir=make_layer_placeholder(root))
        app.synth()  # cdk-nag runs here
    template: dict[str, Any] = json.loads((Path(root / "cdk.out") / f"{stack.artifact_id}.template.json").read_text())
    return template


def test_api_keys_guard_every_route_under_a_usage_plan(with_keys: dict[str, Any]) -> None:
    methods = _of_type(with_keys, "AWS::ApiGateway::Method")
    for method in methods:
        assert method.get("ApiKeyRequired", False) is (method["HttpMethod"] != "OPTIONS"), method["HttpMethod"]
    [plan] = _of_type(with_keys, "AWS::ApiGateway::UsagePlan")
    assert plan["Throttle"] == {"RateLimit": 25, "BurstLimit": 50}
    assert len(plan["ApiStages"]) == 1
    [key] = _of_type(with_keys, "AWS::ApiGateway::UsagePlanKey")
    assert key["KeyType"] == "API_KEY"
    assert len(_of_type(with_keys, "AWS::ApiGateway::ApiKey")) == 1
    [settings] = _stage(with_keys)["MethodSettings"]
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (25, 50)
    assert "ApiKeyId" in with_keys["Outputs"]


def test_stream_concurrency_zero_reserves_nothing(with_keys: dict[str, Any]) -> None:
    functions = _of_type(with_keys, "AWS::Lambda::Function")
    assert all("ReservedConcurrentExecutions" not in f for f in functions)
