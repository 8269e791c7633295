"""Alarms on every function's errors and throttles, stream lag, dead-letter queues and API 5xx."""

from __future__ import annotations

from typing import Any

from tests.infra.conftest import Synthesized


def _alarms(synthesized: Synthesized) -> list[dict[str, Any]]:
    return [a["Properties"] for a in synthesized.resources("AWS::CloudWatch::Alarm").values()]


def _watching(alarms: list[dict[str, Any]], metric: str, dimension: Any) -> list[dict[str, Any]]:
    return [a for a in alarms if a["MetricName"] == metric and dimension in [d["Value"] for d in a["Dimensions"]]]


def test_every_function_has_error_and_throttle_alarms(synthesized: Synthesized) -> None:
    alarms = _alarms(synthesized)
    functions = synthesized.resources("AWS::Lambda::Function")
    for name in functions:
        for metric in ("Errors", "Throttles"):
            assert len(_watching(alarms, metric, {"Ref": name})) == 1, f"{name} {metric}"


def test_stream_lag_and_every_dead_letter_queue_have_alarms(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    alarms = _alarms(synthesized)
    assert _watching(alarms, "IteratorAge", {"Ref": synthesized.logical_id(stack.index_sync.function)})
    dead_letter_queues = [stack.index_sync.dead_letter_queue, stack.change_events.integration_dlq]
    for queue in dead_letter_queues:
        queue_name = {"Fn::GetAtt": [synthesized.logical_id(queue), "QueueName"]}
        [alarm] = _watching(alarms, "ApproximateNumberOfMessagesVisible", queue_name)
        assert alarm["Threshold"] == 1


def test_api_5xx_alarm(synthesized: Synthesized) -> None:
    from aws_cdk.assertions import Match

    synthesized.assertions.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/ApiGateway",
            "MetricName": "5XXError",
            "Dimensions": Match.array_with([Match.object_like({"Name": "ApiName"})]),
        },
    )


def test_every_alarm_notifies_the_encrypted_topic(synthesized: Synthesized) -> None:
    topic_id, topic = synthesized.only("AWS::SNS::Topic")
    assert topic["Properties"]["KmsMasterKeyId"] == {
        "Fn::GetAtt": [synthesized.logical_id(synthesized.stack.data_key), "Arn"]
    }
    alarms = _alarms(synthesized)
    # dead-letter queues beyond the two above: export, reindex, subscriptions x2
    functions, dead_letter_queues = len(synthesized.resources("AWS::Lambda::Function")), 6
    assert len(alarms) == 2 * functions + 1 + dead_letter_queues + 1  # + stream lag, + API 5xx
    assert all(a["AlarmActions"] == [{"Ref": topic_id}] for a in alarms)
    _, subscription = synthesized.only("AWS::SNS::Subscription")
    assert subscription["Properties"]["Endpoint"] == "ops@example.org"


def test_cloudwatch_may_use_the_data_key_for_the_alarm_topic_only(synthesized: Synthesized) -> None:
    """CloudWatch publishes alarms to the encrypted topic; the key policy lets it use the key for
    that one topic (SNS's encryption context), not for anything the key protects."""
    key = synthesized.template["Resources"][synthesized.logical_id(synthesized.stack.data_key)]
    [statement] = [
        s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com"
    ]
    topic_id = synthesized.logical_id(synthesized.stack.alarms.topic)
    topic = synthesized.template["Resources"][topic_id]["Properties"]
    condition = statement["Condition"]["StringEquals"]["kms:EncryptionContext:aws:sns:topicArn"]
    parts = condition["Fn::Join"][1]
    assert parts[-1].endswith(f":{topic['TopicName']}")
    assert {"Ref": "AWS::AccountId"} in parts
    assert {"Ref": "AWS::Region"} in parts
