"""The deliverer's CloudWatch metrics, as Embedded Metric Format log lines (AWS: a Lambda's stdout
goes to CloudWatch Logs, which extracts the metrics; no API call, no extra latency).

Per attempt: ``NotificationsDelivered`` (an event notification accepted), ``FailedAttempts`` and
``DeliveryLatency`` (ms), in the namespace ``fhirflow/subscriptions`` with the dimension ``Service``.
The subscription becomes a dimension only when ``FHIRFLOW_SUBSCRIPTIONS_METRICS_PER_SUBSCRIPTION``
says so: every distinct dimension value is a metric series of its own, billed per series, so 10,000
subscriptions would be 30,000 custom metrics. The counters kept with each subscription's state (shown
by ``$status``) need no such cost.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

NAMESPACE = "fhirflow/subscriptions"
SERVICE = "subscriptions-deliverer"


def emf_record(
    *, group: str, kind: str, outcome: str, latency_ms: float, per_subscription: bool, now_ms: int | None = None
) -> dict[str, Any]:
    """One attempt as an EMF document (``group``: ``{tenant}/{subscription id}``)."""
    dimensions = ["Service", "SubscriptionId"] if per_subscription else ["Service"]
    record: dict[str, Any] = {
        "_aws": {
            "Timestamp": now_ms if now_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [dimensions],
                    "Metrics": [
                        {"Name": "NotificationsDelivered", "Unit": "Count"},
                        {"Name": "FailedAttempts", "Unit": "Count"},
                        {"Name": "DeliveryLatency", "Unit": "Milliseconds"},
                    ],
                }
            ],
        },
        "Service": SERVICE,
        "NotificationsDelivered": 1 if outcome == "delivered" and kind == "event" else 0,
        "FailedAttempts": 0 if outcome == "delivered" else 1,
        "DeliveryLatency": round(latency_ms, 3),
    }
    if per_subscription:
        record["SubscriptionId"] = group
    return record


def emit(record: dict[str, Any], stream: TextIO | None = None) -> None:
    """Write the document as one log line (CloudWatch Logs reads EMF from the function's output)."""
    out = stream or sys.stdout
    out.write(json.dumps(record, separators=(",", ":")) + "\n")
    out.flush()
