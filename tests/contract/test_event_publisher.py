"""The EventPublisher contract: what is published reaches the consumers, in order, intact.

EventBridge is moto's, with a rule that routes fhirflow's ResourceChanged events to SQS, as the
subscriptions matcher's queue is routed in AWS; the embedded event log is read back by sequence.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from fhirflow.ports import EventPublisher
from fhirflow_contracts import ResourceChanged

Delivered = Callable[[], list[ResourceChanged]]


@pytest.fixture(params=["local", "eventbridge", "memory"])
def publisher(request: pytest.FixtureRequest, tmp_path) -> tuple[EventPublisher, Delivered]:
    if request.param == "local":
        from fhirflow.adapters.sqlite.database import SqliteDatabase
        from fhirflow.adapters.sqlite.events import SqliteEventLog

        log = SqliteEventLog(SqliteDatabase(tmp_path / "events.sqlite3"))
        return log, lambda: [ResourceChanged.model_validate_json(e.detail) for e in log.read(limit=1000)]
    if request.param == "eventbridge":
        from fhirflow.adapters.aws.eventbridge import EventBridgeEventPublisher

        moto = request.getfixturevalue("moto")
        bus, queue = moto.bus_to_queue()

        def delivered() -> list[ResourceChanged]:
            envelopes = moto.drain_queue(queue)
            assert all(e["source"] == "fhirflow" and e["detail-type"] == "ResourceChanged" for e in envelopes)
            return [ResourceChanged.model_validate(e["detail"]) for e in envelopes]

        return EventBridgeEventPublisher(bus, client=moto.client("events")), delivered
    from fhirflow.adapters.memory import InMemoryEventPublisher

    memory = InMemoryEventPublisher()
    return memory, lambda: list(memory.events)


def changes(count: int) -> list[ResourceChanged]:
    return [
        ResourceChanged.of(
            tenant="t",
            resource_type="Observation",
            id=f"o{i}",
            version=1 + i % 3,
            operation="create",
            last_updated_ms=1_700_000_000_000 + i,
            request_id=f"req-{i}",
        )
        for i in range(count)
    ]


def test_published_events_arrive_intact(publisher: tuple[EventPublisher, Delivered]) -> None:
    port, delivered = publisher
    sent = changes(23)  # more than one PutEvents call holds
    port.publish(sent)
    received = delivered()
    assert sorted(received, key=lambda e: e.id) == sorted(sent, key=lambda e: e.id)
    assert json.loads(received[0].to_json())["metadata"]["version"] == "v1"


def test_publishing_nothing_is_a_no_op(publisher: tuple[EventPublisher, Delivered]) -> None:
    port, delivered = publisher
    port.publish([])
    assert delivered() == []
