"""Observability in the stack: the functions' metrics namespace and tracing settings, the dashboard,
and the audit archive; each context flag changes what it says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirflow_infra.function import METRICS_NAMESPACE
from tests.infra.conftest import Synthesized, cdk_context, make_layer_placeholder, without_aws_credentials


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == "AWS::Lambda::Function"}


def _variables(template: dict[str, Any], name: str) -> set[str]:
    return {f["Environment"]["Variables"].get(name) for f in _functions(template).values()}


CUSTOM = {"fhirflow:metricsNamespace": "acme/fhir", "fhirflow:tracing": "false", "fhirflow:auditRetentionDays": "30"}


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
    functions = {synthesized.logical_id(f.function) for f in (*stack.functions(), stack.index_provisioning.handler)}
    for title in ("Function duration p50 (ms)", "Function duration p99 (ms)", "Function throttles", "Function errors"):
        shown = {m[3].strip("<>") for m in graphs[title]}
        assert shown == functions, title
    queues = synthesized.resources("AWS::SQS::Queue")
    shown_queues = {m[3].strip("<>").split(".")[0] for m in graphs["Dead-letter queue depths"]}
    expected = [
        stack.index_sync.dead_letter_queue,
        stack.export.dead_letter_queue,
        stack.reindexing.dead_letter_queue,
        stack.change_events.integration_dlq,
    ]
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


# -- the audit archive ------------------------------------------------------------------------


def _one(template: dict[str, Any], type_: str) -> tuple[str, dict[str, Any]]:
    [(logical_id, resource)] = [(k, v) for k, v in template["Resources"].items() if v["Type"] == type_]
    return logical_id, resource["Properties"]


def _archive_bucket(template: dict[str, Any]) -> dict[str, Any]:
    _, stream = _one(template, "AWS::KinesisFirehose::DeliveryStream")
    bucket_id = stream["ExtendedS3DestinationConfiguration"]["BucketARN"]["Fn::GetAtt"][0]
    bucket: dict[str, Any] = template["Resources"][bucket_id]["Properties"]
    return bucket


def test_the_archive_bucket_is_encrypted_with_the_data_key_and_expires_records_after_the_retention(
    synthesized: Synthesized, customised: dict[str, Any]
) -> None:
    from fhirflow_infra.audit import AUDIT_RETENTION_DAYS

    key = synthesized.logical_id(synthesized.stack.data_key)
    for template, days in ((synthesized.template, AUDIT_RETENTION_DAYS), (customised, 30)):
        bucket = _archive_bucket(template)
        [encryption] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert encryption["ServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "aws:kms",
            "KMSMasterKeyID": {"Fn::GetAtt": [key, "Arn"]},
        }
        assert bucket["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True
        [rule] = bucket["LifecycleConfiguration"]["Rules"]
        assert rule["ExpirationInDays"] == days
        assert rule["Status"] == "Enabled"
        assert "LoggingConfiguration" in bucket


def test_the_api_functions_audit_lines_stream_encrypted_into_the_bucket_by_day(synthesized: Synthesized) -> None:
    from fhirflow_infra.audit import FILTER_PATTERN

    key = synthesized.logical_id(synthesized.stack.data_key)
    stream_id, stream = _one(synthesized.template, "AWS::KinesisFirehose::DeliveryStream")
    assert stream["DeliveryStreamEncryptionConfigurationInput"] == {
        "KeyARN": {"Fn::GetAtt": [key, "Arn"]},
        "KeyType": "CUSTOMER_MANAGED_CMK",
    }
    destination = stream["ExtendedS3DestinationConfiguration"]
    assert destination["EncryptionConfiguration"] == {
        "KMSEncryptionConfig": {"AWSKMSKeyARN": {"Fn::GetAtt": [key, "Arn"]}}
    }
    assert destination["Prefix"] == "audit/!{timestamp:yyyy/MM/dd}/"
    processors = [p["Type"] for p in destination["ProcessingConfiguration"]["Processors"]]
    assert processors == ["Decompression", "CloudWatchLogProcessing", "AppendDelimiterToRecord"]
    filters = synthesized.resources("AWS::Logs::SubscriptionFilter")
    groups = {json.dumps(f["Properties"]["LogGroupName"]) for f in filters.values()}
    api_groups = {
        json.dumps({"Ref": synthesized.logical_id(f.log_group)}) for f in synthesized.stack.api_functions.values()
    }
    assert groups == api_groups
    for subscription in filters.values():
        assert subscription["Properties"]["FilterPattern"] == FILTER_PATTERN
        assert subscription["Properties"]["DestinationArn"] == {"Fn::GetAtt": [stream_id, "Arn"]}


def test_the_athena_table_has_a_column_per_field_of_the_audit_record_and_reads_the_streams_days(
    synthesized: Synthesized,
) -> None:
    from fhirflow.authz.audit import AuditRecord
    from fhirflow_infra.audit import audit_columns

    _, table = _one(synthesized.template, "AWS::Glue::Table")
    _, database = _one(synthesized.template, "AWS::Glue::Database")
    assert table["DatabaseName"] == database["DatabaseInput"]["Name"]
    columns = [(c["Name"], c["Type"]) for c in table["TableInput"]["StorageDescriptor"]["Columns"]]
    assert columns == audit_columns()
    assert [name for name, _ in columns] == list(AuditRecord.__annotations__)
    assert dict(columns)["outcome"] == "struct<status:int,result:string,reason:string>"
    assert dict(columns)["what"] == (
        "struct<interaction:string,method:string,type:string,id:string,version:string,query:array<string>>"
    )
    assert dict(columns)["duration_ms"] == "double"
    serde = table["TableInput"]["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"]
    assert serde == "org.openx.data.jsonserde.JsonSerDe"
    parameters = table["TableInput"]["Parameters"]
    assert table["TableInput"]["PartitionKeys"] == [{"Name": "day", "Type": "string"}]
    assert parameters["projection.day.format"] == "yyyy/MM/dd"  # the stream's !{timestamp:yyyy/MM/dd}
    template = json.dumps(parameters["storage.location.template"])
    assert "/audit/${day}/" in template


def test_a_handlers_audit_line_is_what_the_filter_selects_and_the_table_reads(tmp_path: Path) -> None:
    """Executed: the line a crud handler logs in a Lambda-like process, read as Athena would."""
    from fhirflow_infra.audit import audit_columns
    from tests.unit.test_observability import REQUEST_ID, invoke, patient_create

    [line] = [line for line in invoke(tmp_path, [patient_create()]) if line.get("audit") == "fhir-request"]
    for name, hive in audit_columns():
        assert name in line, name
        assert _conforms(line[name], hive), (name, hive, line[name])
    assert line["request_id"] == REQUEST_ID
    assert line["what"]["type"] == "Patient"


def _conforms(value: Any, hive: str) -> bool:
    """Whether a JSON value reads as the Hive type (None reads as NULL in any column)."""
    if value is None:
        return True
    if hive.startswith("array<"):
        return isinstance(value, list) and all(_conforms(v, hive[6:-1]) for v in value)
    if hive.startswith("struct<"):
        fields = dict(_struct_fields(hive[7:-1]))
        return (
            isinstance(value, dict)
            and set(value) <= set(fields)
            and all(_conforms(v, fields[k]) for k, v in value.items())
        )
    scalar = {"string": str, "int": int, "double": (int, float), "boolean": bool}[hive]
    return isinstance(value, scalar)


def _struct_fields(body: str) -> list[tuple[str, str]]:
    fields, depth, start = [], 0, 0
    for index, char in enumerate(body + ","):
        depth += char == "<"
        depth -= char == ">"
        if char == "," and depth == 0:
            name, _, hive = body[start:index].partition(":")
            fields.append((name, hive))
            start = index + 1
    return fields
