"""The deliverer's EMF metrics (fhirflow_subscriptions.metrics): the subscription is a dimension
only when the setting asks for it (one metric series per subscription costs money)."""

from __future__ import annotations

import io
import json

from fhirflow_subscriptions.metrics import NAMESPACE, emf_record, emit


def test_an_attempt_is_one_emf_line_with_the_service_dimension_only() -> None:
    out = io.StringIO()
    emit(
        emf_record(group="t/s1", kind="event", outcome="delivered", latency_ms=12.34, per_subscription=False, now_ms=5),
        out,
    )
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["Service"]]
    assert {m["Name"] for m in directive["Metrics"]} == {"NotificationsDelivered", "FailedAttempts", "DeliveryLatency"}
    assert record["_aws"]["Timestamp"] == 5
    assert (record["NotificationsDelivered"], record["FailedAttempts"], record["DeliveryLatency"]) == (1, 0, 12.34)
    assert "SubscriptionId" not in record


def test_the_setting_adds_the_subscription_dimension_and_failures_count_as_attempts() -> None:
    record = emf_record(group="t/s1", kind="handshake", outcome="retry", latency_ms=3.0, per_subscription=True)
    assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Service", "SubscriptionId"]]
    assert record["SubscriptionId"] == "t/s1"
    assert (record["NotificationsDelivered"], record["FailedAttempts"]) == (0, 1)
    handshake = emf_record(group="t/s1", kind="handshake", outcome="delivered", latency_ms=3.0, per_subscription=True)
    assert handshake["NotificationsDelivered"] == 0  # only event notifications count as delivered
