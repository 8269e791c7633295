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


def _dashboard(template: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's body with each reference rendered as ``<LogicalId>`` or ``<LogicalId.Attribute>``."""
    [dashboard] = [r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    rendered = []
    for part in parts:
        if isinstance(part, str):
            rendered.append(part)
        elif "Ref" in part:
            rendered.append(f"<{part['Ref']}>")
        else:
            rendered.append("<{}.{}>".format(*part["Fn::GetAtt"]))
    body: dict[str, Any] = json.loads("".join(rendered))
    return body


def _graphs(template: dict[str, Any]) -> dict[str, list[list[Any]]]:
    return {w["properties"]["title"]: w["properties"].get("metrics", []) for w in _dashboard(template)["widgets"]}


def test_the_dashboard_shows_the_api_every_function_the_queues_and_the_search_domain(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    graphs = _graphs(synthesized.template)
    assert [m[:2] for m in graphs["API 4xx and 5xx"]] == [
        ["AWS/ApiGateway", "4XXError"],
        ["AWS/ApiGateway", "5XXError"],
    ]
    assert [m[-1]["stat"] for m in graphs["API latency (ms)"]] == ["p50", "p99"]
    assert graphs["API requests"][0][:2] == ["AWS/ApiGateway", "Count"]
    functions = {synthesized.logical_id(f.function) for f in stack.functions()}
    for title in ("Function duration p50 (ms)", "Function duration p99 (ms)", "Function throttles", "Function errors"):
        shown = {m[3].strip("<>") for m in graphs[title]}
        assert shown == functions, title
    queues = synthesized.resources("AWS::SQS::Queue")
    shown_queues = {m[3].strip("<>").split(".")[0] for m in graphs["Dead-letter queue depths"]}
    expected = [stack.index_sync.dead_letter_queue, stack.export.dead_letter_queue, stack.change_events.integration_dlq]
    expected += list(stack.subscriptions.dead_letter_queues.values())
    assert shown_queues == {synthesized.logical_id(q) for q in expected}
    assert shown_queues <= set(queues)
    assert graphs["Stream lag (ms)"][0][:2] == ["AWS/Lambda", "IteratorAge"]
    status = graphs["OpenSearch cluster status"]
    assert [m[:2] for m in status] == [["AWS/ES", "ClusterStatus.red"], ["AWS/ES", "ClusterStatus.yellow"]]
    assert graphs["OpenSearch free storage (MB)"][0][1] == "FreeStorageSpace"


def test_the_dashboard_graphs_the_functions_emf_metrics_from_their_namespace(
    synthesized: Synthesized, customised: dict[str, Any]
) -> None:
    from fhirflow_infra.function import METRICS_NAMESPACE

    for template, namespace in ((synthesized.template, METRICS_NAMESPACE), (customised, "acme/fhir")):
        graphs = _graphs(template)
        expressions = {
            title: metrics[0][0]["expression"]
            for title, metrics in graphs.items()
            if metrics and isinstance(metrics[0][0], dict)
        }
        # The dimension sets fhirflow.observability emits (tests/unit/test_observability.py reads them).
        assert expressions["Requests by interaction and status"] == (
            f"SEARCH('{{\"{namespace}\",service,interaction,status_class}} MetricName=\"Requests\"', 'Sum', 300)"
        )
        assert expressions["Latency p99 by interaction (ms)"].startswith(
            f"SEARCH('{{\"{namespace}\",service,interaction,status_class}} MetricName=\"Latency\"', 'p99'"
        )
        assert f'"{namespace}",service,resource_type' in expressions["Requests by resource type"]
        assert f'"{namespace}",function_name,service' in expressions["Cold starts"]
