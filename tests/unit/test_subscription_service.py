"""The subscriptions service in-process, on the embedded adapters (no sockets): the matcher's
replay safety and its tolerance of a change it cannot handle. Delivery itself is e2e
(tests/e2e/test_subscriptions.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirflow.adapters.sqlite.events import SqliteEventLog
from fhirflow.runtime import build_dependencies, sqlite_database
from fhirflow.settings import Settings
from fhirflow_subscriptions.hook import state_store
from fhirflow_subscriptions.local import Matcher, delivery_queue
from fhirflow_subscriptions.service import SubscriptionService
from tests.unit.test_authz_kit import InProcessClient

TOPIC = "https://fhirflow.dev/fhir/SubscriptionTopic/Observation"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, audit="off", subscriptions_allow_http=True, subscriptions_allow_private=True)


def _subscription(code: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "unit",
        "criteria": TOPIC,
        "_criteria": {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f"code={code}"}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": "http://127.0.0.1:9/hook",
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": "id-only"}]},
        },
    }


def _observation(code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": code}]}}


def test_replaying_the_change_events_queues_nothing_twice_and_keeps_the_numbers(settings: Settings) -> None:
    api = InProcessClient(build_dependencies(settings))
    service = SubscriptionService(build_dependencies(settings), state_store(settings), delivery_queue(settings))
    events = SqliteEventLog(sqlite_database(settings))
    matcher = Matcher(service, events)
    created = api.request("POST", "/Subscription", body=_subscription("x"))
    assert created.status == 201, created.body
    sub_id = created.body["id"]
    matcher.drain()
    for _ in range(3):
        assert api.request("POST", "/Observation", body=_observation("x")).status == 201
    api.request("POST", "/Observation", body=_observation("other"))
    matcher.drain()
    queue = delivery_queue(settings)
    group = f"default/{sub_id}"
    before = queue.depth(group)
    assert before == 4  # the handshake and three events

    service.consume(events.read(after_seq=0, limit=1000))  # a crash before the cursor moved: all again

    assert queue.depth(group) == before
    state = service.state.state("default", sub_id)
    assert state is not None
    assert state.events == 3
    logged = service.state.events("default", sub_id, since=1, until=10, limit=10)
    assert [e.number for e in logged] == [1, 2, 3]


def test_a_change_that_cannot_be_handled_is_skipped_not_retried_forever(settings: Settings) -> None:
    api = InProcessClient(build_dependencies(settings))
    service = SubscriptionService(build_dependencies(settings), state_store(settings), delivery_queue(settings))
    events = SqliteEventLog(sqlite_database(settings))
    api.request("POST", "/Subscription", body=_subscription("y"))
    Matcher(service, events).drain()
    api.request("POST", "/Observation", body=_observation("y"))
    good = events.read(after_seq=0, limit=1000)[-1]
    poison = type(good)(good.seq + 1000, "poison", good.source, good.detail_type, good.tenant, json.dumps({}))
    assert service.consume([good, poison]) == 2
    assert service.skipped == 1
    assert service.state.cursor("subscriptions") == poison.seq
    state = service.state.state(good.tenant, next(iter(service.specs))[1])
    assert state is not None
    assert state.events == 1


def test_changes_before_the_subscription_are_not_its_events_even_after_a_restart(settings: Settings) -> None:
    api = InProcessClient(build_dependencies(settings))
    events = SqliteEventLog(sqlite_database(settings))
    api.request("POST", "/Observation", body=_observation("z"))  # before the subscription
    sub_id = api.request("POST", "/Subscription", body=_subscription("z")).body["id"]
    api.request("POST", "/Observation", body=_observation("z"))  # after it
    first = SubscriptionService(build_dependencies(settings), state_store(settings), delivery_queue(settings))
    Matcher(first, events).drain()
    first.state.advance("subscriptions", 0)  # the matcher restarts behind: everything is met again

    second = SubscriptionService(build_dependencies(settings), state_store(settings), delivery_queue(settings))
    second.load()
    Matcher(second, events).drain()

    state = second.state.state("default", sub_id)
    assert state is not None
    assert state.events == 1
