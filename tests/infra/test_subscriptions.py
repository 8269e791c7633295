"""Subscriptions' infrastructure (issue 12, AWS): bus rule → SQS (DLQ) → matcher → SQS FIFO (DLQ) →
deliverer with partial batch responses, a ticker on a schedule, alarms on both dead-letter queues,
and grants that name only what each function uses (no Scan anywhere)."""

from __future__ import annotations

from typing import Any

from tests.infra.conftest import Synthesized
from tests.infra.test_functions import _grants_on, _policy_of


def _queue(synthesized: Synthesized, queue: Any) -> dict[str, Any]:
    return synthesized.resources("AWS::SQS::Queue")[synthesized.logical_id(queue)]["Properties"]


def _mapping(synthesized: Synthesized, function: Any) -> dict[str, Any]:
    ref = {"Ref": synthesized.logical_id(function)}
    [found] = [
        m["Properties"]
        for m in synthesized.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == ref
    ]
    return found


def test_the_notification_queue_is_fifo_with_a_fifo_dead_letter_queue(synthesized: Synthesized) -> None:
    subs = synthesized.stack.subscriptions
    fifo = _queue(synthesized, subs.notifications)
    assert fifo["FifoQueue"] is True
    assert fifo.get("ContentBasedDeduplication") in (None, False)  # the notification id de-duplicates
    assert fifo["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert fifo["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": [synthesized.logical_id(subs.notifications_dlq), "Arn"]
    }
    assert _queue(synthesized, subs.notifications_dlq)["FifoQueue"] is True
    changes = _queue(synthesized, subs.changes)
    assert "FifoQueue" not in changes
    assert changes["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": [synthesized.logical_id(subs.changes_dlq), "Arn"]
    }
    key = {"Fn::GetAtt": [synthesized.logical_id(synthesized.stack.data_key), "Arn"]}
    for queue in (subs.changes, subs.changes_dlq, subs.notifications, subs.notifications_dlq):
        assert _queue(synthesized, queue)["KmsMasterKeyId"] == key


def test_the_bus_rule_feeds_the_matcher_which_feeds_the_deliverer(synthesized: Synthesized) -> None:
    subs = synthesized.stack.subscriptions
    rule = synthesized.resources("AWS::Events::Rule")[synthesized.logical_id(subs.rule)]["Properties"]
    assert rule["EventBusName"] == {"Ref": synthesized.logical_id(synthesized.stack.change_events.bus)}
    assert rule["EventPattern"] == {"source": ["fhirflow"], "detail-type": ["ResourceChanged"]}
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [synthesized.logical_id(subs.changes), "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [synthesized.logical_id(subs.changes_dlq), "Arn"]}
    for function, queue in ((subs.matcher, subs.changes), (subs.deliverer, subs.notifications)):
        mapping = _mapping(synthesized, function.function)
        assert mapping["EventSourceArn"] == {"Fn::GetAtt": [synthesized.logical_id(queue), "Arn"]}
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    functions = synthesized.resources("AWS::Lambda::Function")
    handlers = {
        name: functions[synthesized.logical_id(f.function)]["Properties"]["Handler"]
        for name, f in (("matcher", subs.matcher), ("deliverer", subs.deliverer), ("ticker", subs.ticker))
    }
    assert handlers == {
        "matcher": "fhirflow_subscriptions.aws.match_handler",
        "deliverer": "fhirflow_subscriptions.aws.deliver_handler",
        "ticker": "fhirflow_subscriptions.aws.tick_handler",
    }
    # Visibility must cover a whole batch of the deliverer (Lambda refuses a shorter one).
    deliverer = functions[synthesized.logical_id(subs.deliverer.function)]["Properties"]
    assert _queue(synthesized, subs.notifications)["VisibilityTimeout"] >= deliverer["Timeout"]
    env = deliverer["Environment"]["Variables"]
    assert env["FHIRFLOW_SUBSCRIPTIONS_QUEUE_URL"] == {"Ref": synthesized.logical_id(subs.notifications)}
    assert env["FHIRFLOW_SUBSCRIPTIONS_TABLE"] == {"Ref": synthesized.logical_id(subs.table)}


def test_the_ticker_runs_every_minute_from_eventbridge_scheduler(synthesized: Synthesized) -> None:
    subs = synthesized.stack.subscriptions
    schedule = synthesized.resources("AWS::Scheduler::Schedule")[synthesized.logical_id(subs.schedule)]
    assert schedule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert schedule["Properties"]["Target"]["Arn"] == {
        "Fn::GetAtt": [synthesized.logical_id(subs.ticker.function), "Arn"]
    }


def test_both_dead_letter_queues_alarm(synthesized: Synthesized) -> None:
    subs = synthesized.stack.subscriptions
    alarms = [a["Properties"] for a in synthesized.resources("AWS::CloudWatch::Alarm").values()]
    for queue in (subs.changes_dlq, subs.notifications_dlq):
        name = {"Fn::GetAtt": [synthesized.logical_id(queue), "QueueName"]}
        watching = [
            a
            for a in alarms
            if a.get("MetricName") == "ApproximateNumberOfMessagesVisible"
            and {"Name": "QueueName", "Value": name} in a.get("Dimensions", [])
        ]
        assert len(watching) == 1
        assert watching[0]["Threshold"] == 1


def test_the_state_table_expires_logs_by_ttl_and_has_the_listing_index(synthesized: Synthesized) -> None:
    subs = synthesized.stack.subscriptions
    table = synthesized.resources("AWS::DynamoDB::Table")[synthesized.logical_id(subs.table)]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["listing"]
    assert table["SSESpecification"]["SSEEnabled"] is True


def test_least_privilege(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    subs = stack.subscriptions
    table = synthesized.logical_id(subs.table)
    fifo = synthesized.logical_id(subs.notifications)
    changes = synthesized.logical_id(subs.changes)
    everyone: dict[str, set[str]] = {}
    for name, function in (
        ("matcher", subs.matcher),
        ("deliverer", subs.deliverer),
        ("ticker", subs.ticker),
        ("crud", stack.api_functions["crud"]),
        ("subscriptions-api", stack.api_functions["subscriptions"]),
        ("search", stack.api_functions["search"]),
    ):
        everyone[name] = _grants_on(_policy_of(synthesized, function), table)
        assert "dynamodb:Scan" not in everyone[name], name
    assert "dynamodb:UpdateItem" in everyone["matcher"]
    assert "dynamodb:UpdateItem" in everyone["crud"]  # the write hook keeps secrets there
    assert everyone["subscriptions-api"] == {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}
    assert everyone["search"] == set()
    # Only the matcher and the ticker send notifications; only the deliverer receives them.
    matcher = _grants_on(_policy_of(synthesized, subs.matcher), fifo)
    deliverer = _grants_on(_policy_of(synthesized, subs.deliverer), fifo)
    assert "sqs:SendMessage" in matcher
    assert "sqs:ReceiveMessage" not in matcher
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= deliverer
    assert "sqs:SendMessage" not in deliverer
    assert _grants_on(_policy_of(synthesized, stack.api_functions["crud"]), fifo) == set()
    assert "sqs:ReceiveMessage" in _grants_on(_policy_of(synthesized, subs.matcher), changes)
    assert _grants_on(_policy_of(synthesized, subs.deliverer), changes) == set()


def test_the_state_table_is_backed_up_with_the_resource_tables(synthesized: Synthesized) -> None:
    table = synthesized.logical_id(synthesized.stack.subscriptions.table)
    selections = synthesized.resources("AWS::Backup::BackupSelection").values()
    [selection] = [s for s in selections if table in str(s["Properties"]["BackupSelection"]["Resources"])]
    plan = synthesized.logical_id(synthesized.stack.tables.backups.plan)
    assert selection["Properties"]["BackupPlanId"] == {"Fn::GetAtt": [plan, "BackupPlanId"]}


def test_notifications_waiting_in_the_blobs_bucket_outlive_the_fifo_queue_then_expire(synthesized: Synthesized) -> None:
    from fhirflow_subscriptions.aws import NOTIFICATIONS_PREFIX

    bucket = synthesized.template["Resources"][synthesized.logical_id(synthesized.stack.buckets.blobs)]
    rules = {r.get("Prefix"): r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    kept = _queue(synthesized, synthesized.stack.subscriptions.notifications)["MessageRetentionPeriod"] / 86400
    assert kept < rules[NOTIFICATIONS_PREFIX]["ExpirationInDays"] <= 31
    assert rules[NOTIFICATIONS_PREFIX]["NoncurrentVersionExpiration"]["NoncurrentDays"] <= 1
