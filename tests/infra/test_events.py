"""index-sync's stream source survives partial failure; the bus routes ResourceChanged to the
example integration queue."""

from __future__ import annotations

import json
from typing import Any

from fhirflow.adapters.aws import items
from fhirflow_contracts import EVENT_SOURCE, ResourceChanged
from tests.infra.conftest import Synthesized


def _queue(synthesized: Synthesized, logical_id: str) -> dict[str, Any]:
    props: dict[str, Any] = synthesized.resources("AWS::SQS::Queue")[logical_id]["Properties"]
    return props


def test_the_stream_source_reports_failures_bisects_and_has_a_dead_letter_queue(synthesized: Synthesized) -> None:
    from aws_cdk.assertions import Match

    stack = synthesized.stack
    synthesized.assertions.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BisectBatchOnFunctionError": True,
            "DestinationConfig": {"OnFailure": {"Destination": Match.any_value()}},
            "StartingPosition": "TRIM_HORIZON",
        },
    )
    mapping = _stream_mapping(synthesized)
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": [synthesized.logical_id(stack.tables.table), "StreamArn"]}
    assert props["FunctionName"] == {"Ref": synthesized.logical_id(stack.index_sync.function)}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BisectBatchOnFunctionError"] is True
    assert 0 < props["MaximumRetryAttempts"] <= 10
    assert props["MaximumRecordAgeInSeconds"] <= 24 * 3600
    assert props["ParallelizationFactor"] == 1, "one batch per shard at a time keeps version order"
    dlq = synthesized.logical_id(stack.index_sync.dead_letter_queue)
    assert props["DestinationConfig"] == {"OnFailure": {"Destination": {"Fn::GetAtt": [dlq, "Arn"]}}}


def _stream_mapping(synthesized: Synthesized) -> dict[str, Any]:
    """The DynamoDB stream's event source mapping (the export worker's is on SQS: tests/infra/test_export.py)."""
    [mapping] = [
        m
        for m in synthesized.resources("AWS::Lambda::EventSourceMapping").values()
        if "StartingPosition" in m["Properties"]
    ]
    return mapping


def test_only_version_inserts_reach_index_sync(synthesized: Synthesized) -> None:
    mapping = _stream_mapping(synthesized)
    [only_filter] = mapping["Properties"]["FilterCriteria"]["Filters"]
    assert json.loads(only_filter["Pattern"]) == {
        "eventName": ["INSERT"],
        "dynamodb": {"Keys": {items.SK: {"S": [{"prefix": items.VERSION_PREFIX}]}}},
    }


def test_the_integration_rule_matches_the_contract_and_has_a_dead_letter_queue(synthesized: Synthesized) -> None:
    events = synthesized.stack.change_events
    rule = synthesized.resources("AWS::Events::Rule")[synthesized.logical_id(events.integration_rule)]
    props = rule["Properties"]
    assert props["EventBusName"] == {"Ref": synthesized.logical_id(events.bus)}
    assert props["EventPattern"] == {"source": [EVENT_SOURCE], "detail-type": [ResourceChanged.DETAIL_TYPE]}
    [target] = props["Targets"]
    queue, dlq = synthesized.logical_id(events.integration_queue), synthesized.logical_id(events.integration_dlq)
    assert target["Arn"] == {"Fn::GetAtt": [queue, "Arn"]}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq, "Arn"]}}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert _queue(synthesized, queue)["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq, "Arn"]}


def test_queues_are_encrypted_with_the_data_key_and_tls_only(synthesized: Synthesized) -> None:
    key = synthesized.logical_id(synthesized.stack.data_key)
    policies = {
        p["Properties"]["Queues"][0]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
        for p in synthesized.resources("AWS::SQS::QueuePolicy").values()
    }
    queues = synthesized.resources("AWS::SQS::Queue")
    # index-sync DLQ, integration queue + DLQ, export work queue + DLQ, reindex chunks + DLQ,
    # subscriptions' changes + DLQ and FIFO notifications + DLQ
    assert len(queues) == 11
    for name, queue in queues.items():
        assert queue["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key, "Arn"]}, name
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in policies[name]
        ), name
