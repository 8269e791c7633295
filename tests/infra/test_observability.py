"""Observability in the stack: the functions' metrics namespace and tracing settings, the dashboard,
and the audit archive; each context flag changes what it says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhirflow_infra.function import METRICS_NAMESPACE
from tests.infra.conftest import Synthesized, cdk_context, make_layer_placeholder, without_aws_credentials


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == "AWS::Lambda::Function"}


def _variables(template: dict[str, Any], name: str) -> set[str]:
    return {f["Environment"]["Variables"].get(name) for f in _functions(template).values()}


CUSTOM = {"fhirflow:metricsNamespace": "acme/fhir", "fhirflow:tracing": "false"}


@pytest.fixture(scope="module")
def customised(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The stack with every observability flag away from its default."""
    from aws_cdk import App

    from fhirflow_infra.application import build

    root = tmp_path_factory.mktemp("infra-observability")
    with without_aws_credentials():
        app = App(context=cdk_context(**CUSTOM), outdir=str(root / "cdk.out"))
        stack = build(app, code_dir=root / "code", layer_dir=make_layer_placeholder(root))
        app.synth()  # cdk-nag runs here
    template: dict[str, Any] = json.loads((root / "cdk.out" / f"{stack.artifact_id}.template.json").read_text())
    return template


def test_every_function_emits_metrics_to_the_namespace_of_the_context_flag(
    synthesized: Synthesized, customised: dict[str, Any]
) -> None:
    assert _variables(synthesized.template, "POWERTOOLS_METRICS_NAMESPACE") == {METRICS_NAMESPACE}
    assert _variables(customised, "POWERTOOLS_METRICS_NAMESPACE") == {"acme/fhir"}


def test_the_stack_stays_within_cloudformations_resource_limit(synthesized: Synthesized) -> None:
    assert len(synthesized.template["Resources"]) <= 500


def test_tracing_is_on_by_default_and_the_flag_turns_the_sdk_off(
    synthesized: Synthesized, customised: dict[str, Any]
) -> None:
    assert _variables(synthesized.template, "POWERTOOLS_TRACE_DISABLED") == {None}
    assert _variables(customised, "POWERTOOLS_TRACE_DISABLED") == {"true"}
    for template in (synthesized.template, customised):  # Lambda's own segments either way
        assert {str(f.get("TracingConfig")) for f in _functions(template).values()} == {str({"Mode": "Active"})}


def test_every_function_may_send_traces(synthesized: Synthesized) -> None:
    roles = {json.dumps(f["Role"]) for f in _functions(synthesized.template).values()}
    allowed: set[str] = set()
    for policy in synthesized.resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if "xray:PutTraceSegments" in actions and statement["Resource"] == "*":
                allowed.update(json.dumps({"Fn::GetAtt": [r["Ref"], "Arn"]}) for r in policy["Properties"]["Roles"])
    assert roles <= allowed
