"""Bulk export's infrastructure: the SQS worker survives partial failure and has a dead-letter
queue; the export functions write job items and export files, never resources."""

from __future__ import annotations

from typing import Any

from fhirflow_export import limits
from tests.infra.conftest import Synthesized
from tests.infra.test_functions import _grants_on, _policy_of

_TABLE_WRITES = ("dynamodb:Put", "dynamodb:Update", "dynamodb:Delete", "dynamodb:BatchWrite")


def _sqs_mapping(synthesized: Synthesized) -> dict[str, Any]:
    worker = synthesized.logical_id(synthesized.stack.export.worker.function)
    [mapping] = [
        m["Properties"]
        for m in synthesized.resources("AWS::Lambda::EventSourceMapping").values()
        if "StartingPosition" not in m["Properties"] and m["Properties"]["FunctionName"] == {"Ref": worker}
    ]
    return mapping


def test_the_worker_takes_one_message_at_a_time_and_reports_failed_ones(synthesized: Synthesized) -> None:
    export = synthesized.stack.export
    mapping = _sqs_mapping(synthesized)
    assert mapping["FunctionName"] == {"Ref": synthesized.logical_id(export.worker.function)}
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [synthesized.logical_id(export.queue), "Arn"]}
    assert mapping["BatchSize"] == 1
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    worker = synthesized.resources("AWS::Lambda::Function")[synthesized.logical_id(export.worker.function)]
    assert worker["Properties"]["Handler"] == "fhirflow_export.handler.worker_handler"
    assert worker["Properties"]["Timeout"] == limits.WORKER_TIMEOUT_SECONDS


def test_the_work_queue_is_encrypted_and_dead_letters_after_the_last_delivery(synthesized: Synthesized) -> None:
    export = synthesized.stack.export
    queue = synthesized.resources("AWS::SQS::Queue")[synthesized.logical_id(export.queue)]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [synthesized.logical_id(export.dead_letter_queue), "Arn"]},
        "maxReceiveCount": limits.MAX_RECEIVES,
    }
    assert queue["VisibilityTimeout"] >= 6 * limits.WORKER_TIMEOUT_SECONDS
    assert queue["KmsMasterKeyId"] == {"Fn::GetAtt": [synthesized.logical_id(synthesized.stack.data_key), "Arn"]}


def test_both_export_functions_know_the_queue_and_the_export_bucket(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    functions = synthesized.resources("AWS::Lambda::Function")
    for function in (stack.export.worker.function, stack.api_functions["export"].function):
        env = functions[synthesized.logical_id(function)]["Properties"]["Environment"]["Variables"]
        assert env["FHIRFLOW_EXPORT_QUEUE_URL"] == {"Ref": synthesized.logical_id(stack.export.queue)}
        assert env["FHIRFLOW_EXPORT_BUCKET"] == {"Ref": synthesized.logical_id(stack.buckets.exports)}
    crud = functions[synthesized.logical_id(stack.api_functions["crud"].function)]["Properties"]
    assert "FHIRFLOW_EXPORT_QUEUE_URL" not in crud["Environment"]["Variables"]


def test_export_functions_write_only_job_items_of_the_resource_table(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    table = synthesized.logical_id(stack.tables.table)
    for function in (stack.export.worker, stack.api_functions["export"]):
        statements = _policy_of(synthesized, function)
        writes = [
            s
            for s in statements
            if table in str(s["Resource"])
            and any(
                a.startswith(("dynamodb:Put", "dynamodb:Update", "dynamodb:Delete", "dynamodb:BatchWrite"))
                for a in _actions(s)
            )
        ]
        assert writes, "the job store writes job items"
        for statement in writes:
            assert _actions(statement) <= {"dynamodb:PutItem", "dynamodb:GetItem"}
            assert statement["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["xj#*"]}}
        on_blobs = _grants_on(statements, synthesized.logical_id(stack.buckets.blobs))
        assert not [a for a in on_blobs if a.startswith(("s3:Put", "s3:Delete"))]


def test_only_the_worker_writes_export_files_and_both_may_delete_them(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    exports = synthesized.logical_id(stack.buckets.exports)
    worker = _grants_on(_policy_of(synthesized, stack.export.worker), exports)
    api = _grants_on(_policy_of(synthesized, stack.api_functions["export"]), exports)
    assert any(a.startswith("s3:PutObject") for a in worker)
    assert not any(a.startswith("s3:PutObject") for a in api)
    assert any(a.startswith("s3:GetObject") for a in api), "presigned URLs are signed with the function's role"
    assert any(a.startswith("s3:DeleteObject") for a in api)
    assert any(a.startswith("s3:DeleteObject") for a in worker)


def test_the_export_dead_letter_queue_has_an_alarm(synthesized: Synthesized) -> None:
    dlq = synthesized.logical_id(synthesized.stack.export.dead_letter_queue)
    alarms = synthesized.resources("AWS::CloudWatch::Alarm").values()
    assert any(dlq in str(alarm["Properties"].get("Dimensions", "")) for alarm in alarms)


def _actions(statement: dict[str, Any]) -> set[str]:
    granted = statement["Action"]
    return {granted} if isinstance(granted, str) else set(granted)
