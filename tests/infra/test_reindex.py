"""``$reindex``'s infrastructure: a queue of job chunks with a dead-letter queue and its alarm, an
SQS worker that survives partial failure, and least privilege — the worker alone rewrites index
documents, the search API only starts jobs and reads them, neither writes a resource."""

from __future__ import annotations

from typing import Any

from fhirflow_search import reindex_queue as limits
from tests.infra.conftest import Synthesized
from tests.infra.test_functions import _grants_on, _policy_of

_TABLE_WRITES = ("dynamodb:Put", "dynamodb:Update", "dynamodb:Delete", "dynamodb:BatchWrite", "dynamodb:Transact")


def _actions(statement: dict[str, Any]) -> set[str]:
    granted = statement["Action"]
    return {granted} if isinstance(granted, str) else set(granted)


def test_the_worker_takes_one_chunk_at_a_time_and_reports_failed_ones(synthesized: Synthesized) -> None:
    reindexing = synthesized.stack.reindexing
    worker = synthesized.logical_id(reindexing.worker.function)
    [mapping] = [
        m["Properties"]
        for m in synthesized.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": worker}
    ]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [synthesized.logical_id(reindexing.queue), "Arn"]}
    assert mapping["BatchSize"] == 1
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    function = synthesized.resources("AWS::Lambda::Function")[worker]["Properties"]
    assert function["Handler"] == "fhirflow_search.reindex_handler.lambda_handler"
    assert function["Timeout"] == limits.WORKER_TIMEOUT_SECONDS


def test_the_queue_is_encrypted_dead_letters_after_the_last_delivery_and_outlives_a_lease(
    synthesized: Synthesized,
) -> None:
    reindexing = synthesized.stack.reindexing
    queue = synthesized.resources("AWS::SQS::Queue")[synthesized.logical_id(reindexing.queue)]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [synthesized.logical_id(reindexing.dead_letter_queue), "Arn"]},
        "maxReceiveCount": limits.MAX_RECEIVES,
    }
    # A message comes back only after the lease of a worker that died holding it has run out.
    assert queue["VisibilityTimeout"] * 1000 > limits.LEASE_MS > limits.WORKER_TIMEOUT_SECONDS * 1000
    assert queue["KmsMasterKeyId"] == {"Fn::GetAtt": [synthesized.logical_id(synthesized.stack.data_key), "Arn"]}
    dlq = synthesized.resources("AWS::SQS::Queue")[synthesized.logical_id(reindexing.dead_letter_queue)]
    assert dlq["Properties"]["KmsMasterKeyId"] == queue["KmsMasterKeyId"]


def test_an_alarm_watches_the_dead_letter_queue(synthesized: Synthesized) -> None:
    queue_name = {"Fn::GetAtt": [synthesized.logical_id(synthesized.stack.reindexing.dead_letter_queue), "QueueName"]}
    watching = [
        a["Properties"]
        for a in synthesized.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
        and {"Name": "QueueName", "Value": queue_name} in a["Properties"].get("Dimensions", [])
    ]
    assert len(watching) == 1
    assert watching[0]["Threshold"] == 1


def test_the_search_api_and_the_worker_know_the_queue_and_may_send_to_it(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    queue = synthesized.logical_id(stack.reindexing.queue)
    functions = synthesized.resources("AWS::Lambda::Function")
    for function in (stack.reindexing.worker, stack.api_functions["search"]):
        env = functions[synthesized.logical_id(function.function)]["Properties"]["Environment"]["Variables"]
        assert env["FHIRFLOW_REINDEX_QUEUE_URL"] == {"Ref": queue}
        assert "sqs:SendMessage" in _grants_on(_policy_of(synthesized, function), queue)
    crud = functions[synthesized.logical_id(stack.api_functions["crud"].function)]["Properties"]
    assert "FHIRFLOW_REINDEX_QUEUE_URL" not in crud["Environment"]["Variables"]
    assert not _grants_on(_policy_of(synthesized, stack.api_functions["crud"]), queue)


def _table_writes(synthesized: Synthesized, function: Any) -> dict[str, set[str]]:
    """Write actions on the resource table, by the LeadingKeys prefix they are limited to."""
    table = synthesized.logical_id(synthesized.stack.tables.table)
    out: dict[str, set[str]] = {}
    for statement in _policy_of(synthesized, function):
        if table not in str(statement["Resource"]):
            continue
        writes = {a for a in _actions(statement) if a.startswith(_TABLE_WRITES)}
        if not writes:
            continue
        condition = statement.get("Condition", {}).get("ForAllValues:StringLike", {})
        for prefix in condition.get("dynamodb:LeadingKeys", ["*"]):
            out.setdefault(prefix, set()).update(writes)
    return out


def test_the_worker_writes_only_job_and_search_parameter_items_and_never_creates_a_job(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    assert _table_writes(synthesized, stack.reindexing.worker) == {
        "sp#*": {"dynamodb:PutItem", "dynamodb:DeleteItem"},
        "rj#*": {"dynamodb:UpdateItem"},
    }
    # It reads no resource (the index holds the bodies it rewrites) and no blob.
    statements = _policy_of(synthesized, stack.reindexing.worker)
    table = synthesized.logical_id(stack.tables.table)
    assert _grants_on(statements, table) == {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "dynamodb:UpdateItem",
    }
    assert all(s.get("Condition", {}).get("ForAllValues:StringLike") for s in statements if table in str(s["Resource"]))
    assert not _grants_on(statements, synthesized.logical_id(stack.buckets.blobs))
    assert not _grants_on(statements, synthesized.logical_id(stack.tables.ledger))


def test_the_stack_stays_under_cloudformations_resource_limit(synthesized: Synthesized) -> None:
    count = len(synthesized.template["Resources"])
    print(f"resources: {count}")
    assert count < 500  # CloudFormation refuses more
