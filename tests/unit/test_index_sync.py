"""index-sync with in-memory adapters: stream records in Lambda's shape → index + events.

The records are built with the DynamoDB store's own item codec, exactly as the stream carries
the version items (NEW_IMAGE, binary attributes base64-encoded as in Lambda's JSON events).
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from fhirflow.adapters.aws import items
from fhirflow.adapters.memory import (
    InMemoryBlobStore,
    InMemoryEventLedger,
    InMemoryEventPublisher,
    InMemorySearchIndex,
)
from fhirflow.local.gateway import LambdaContext
from fhirflow.ports import ResourceVersion
from fhirflow_contracts import ResourceChanged
from fhirflow_index_sync import app
from fhirflow_index_sync.handler import lambda_handler
from fhirflow_index_sync.sync import IndexSync

T0 = 1_700_000_000_000
_sequence = itertools.count(100)


def lambda_value(value: dict[str, Any]) -> dict[str, Any]:
    if "B" in value:
        return {"B": base64.b64encode(value["B"]).decode()}
    return value


def record(
    type_: str,
    id_: str,
    version: int,
    *,
    deleted: bool = False,
    event: str = "INSERT",
    head: bool = False,
    blob: str | None = None,
) -> dict[str, Any]:
    body = None if deleted or blob else orjson.dumps({"resourceType": type_, "id": id_, "v": version})
    stored = ResourceVersion("t", type_, id_, version, T0 + version, deleted, "DELETE" if deleted else "PUT", body)
    item = items.head_item(stored, blob) if head else items.version_item(stored, blob, request_id="req-1", shards=4)
    return {
        "eventID": f"e{version}",
        "eventName": event,
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "Keys": {items.PK: item[items.PK], items.SK: item[items.SK]},
            "NewImage": {k: lambda_value(v) for k, v in item.items()},
            "SequenceNumber": str(next(_sequence)),
            "StreamViewType": "NEW_IMAGE",
        },
    }


class FlakyIndex(InMemorySearchIndex):
    """A search index that fails for the named resource ids until ``heal`` (a named test double)."""

    def __init__(self, failing: set[str]) -> None:
        super().__init__()
        self.failing = failing

    def apply(self, tenant: str, type_: str, id_: str, version: int, last_updated: int, resource: Any) -> bool:
        if id_ in self.failing:
            raise ConnectionError("index unavailable")
        return super().apply(tenant, type_, id_, version, last_updated, resource)

    def heal(self) -> None:
        self.failing = set()


class FailingPublisher(InMemoryEventPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def publish(self, events: Any) -> None:
        if self.down:
            raise ConnectionError("bus unavailable")
        super().publish(events)


@dataclass
class World:
    index: InMemorySearchIndex
    publisher: InMemoryEventPublisher
    ledger: InMemoryEventLedger
    blobs: InMemoryBlobStore

    def run(self, *records: dict[str, Any]) -> list[str]:
        """The handler on one batch; the sequence numbers it reported as failed."""
        response = lambda_handler({"Records": list(records)}, LambdaContext("index-sync", "test"))
        return [f["itemIdentifier"] for f in response["batchItemFailures"]]

    def announced(self) -> list[tuple[str, str, str]]:
        return [(e.id, e.version_id, e.operation) for e in self.publisher.events]


@pytest.fixture
def world() -> World:
    return make_world(InMemorySearchIndex(), InMemoryEventPublisher())


def make_world(index: InMemorySearchIndex, publisher: InMemoryEventPublisher) -> World:
    built = World(index, publisher, InMemoryEventLedger(), InMemoryBlobStore())
    app.use(app.Components(IndexSync(index=index, ledger=built.ledger, publisher=publisher), built.blobs))
    return built


@pytest.fixture(autouse=True)
def _reset_app():
    yield
    app.use(None)


def sequence(rec: dict[str, Any]) -> str:
    return str(rec["dynamodb"]["SequenceNumber"])


def test_a_batch_is_indexed_and_each_change_announced_once(world: World) -> None:
    batch = [
        record("Patient", "a", 1),
        record("Patient", "b", 1),
        record("Patient", "a", 2),
        record("Patient", "b", 2, deleted=True),
    ]
    assert world.run(*batch) == []
    assert world.index.indexed_version("t", "Patient", "a") == 2
    assert world.index.documents[("t", "Patient", "a")].resource == {"resourceType": "Patient", "id": "a", "v": 2}
    assert world.index.indexed_version("t", "Patient", "b") == 2
    assert world.index.documents[("t", "Patient", "b")].resource is None
    assert world.announced() == [("a", "1", "create"), ("b", "1", "create"), ("a", "2", "update"), ("b", "2", "delete")]
    event = world.publisher.events[0]
    assert (event.tenant, event.resource_type, event.request_id) == ("t", "Patient", "req-1")
    assert event.last_updated.timestamp() * 1000 == pytest.approx(T0 + 1)


def test_records_that_are_not_committed_versions_are_ignored(world: World) -> None:
    assert (
        world.run(
            record("Patient", "a", 1, head=True),
            record("Patient", "a", 1, event="MODIFY"),
            record("Patient", "a", 1, event="REMOVE"),
        )
        == []
    )
    assert world.publisher.events == []
    assert world.index.indexed_version("t", "Patient", "a") is None


def test_replaying_a_batch_changes_nothing(world: World) -> None:
    batch = [record("Patient", "a", 1), record("Patient", "a", 2)]
    world.run(*batch)
    before = dict(world.index.documents)
    assert world.run(*batch) == []
    assert world.index.documents == before
    assert world.announced() == [("a", "1", "create"), ("a", "2", "update")]


def test_batches_out_of_order_keep_the_newest_and_announce_each_once(world: World) -> None:
    older, newer = record("Patient", "a", 1), record("Patient", "a", 2)
    world.run(newer)
    world.run(older)
    world.run(newer, older)
    assert world.index.indexed_version("t", "Patient", "a") == 2
    assert sorted(world.announced()) == [("a", "1", "create"), ("a", "2", "update")]


def test_a_failure_fails_that_record_and_the_rest_of_the_batch() -> None:
    index = FlakyIndex({"b"})
    world = make_world(index, InMemoryEventPublisher())
    batch = [record("Patient", "a", 1), record("Patient", "b", 1), record("Patient", "c", 1), record("Patient", "a", 2)]
    assert world.run(*batch) == [sequence(r) for r in batch[1:]]
    assert world.announced() == [("a", "1", "create")]
    assert index.indexed_version("t", "Patient", "c") is None
    index.heal()
    assert world.run(*batch[1:]) == []  # what Lambda re-delivers: from the first failure on
    assert world.announced() == [("a", "1", "create"), ("b", "1", "create"), ("c", "1", "create"), ("a", "2", "update")]


def test_a_publish_failure_is_retried_without_double_announcing() -> None:
    publisher = FailingPublisher()
    world = make_world(InMemorySearchIndex(), publisher)
    batch = [record("Observation", "o", 1)]
    with pytest.raises(Exception, match="All records failed"):
        world.run(*batch)  # every record failed: Powertools fails the invocation, Lambda retries it
    assert world.ledger.ids == set()
    publisher.down = False
    assert world.run(*batch) == []
    assert world.run(*batch) == []
    assert world.announced() == [("o", "1", "create")]


def test_offloaded_bodies_are_read_from_the_blob_store(world: World) -> None:
    world.blobs.put("resources/t/Binary/big/1-x.json", b'{"resourceType": "Binary", "id": "big"}')
    assert world.run(record("Binary", "big", 1, blob="resources/t/Binary/big/1-x.json")) == []
    assert world.index.documents[("t", "Binary", "big")].resource == {"resourceType": "Binary", "id": "big"}


def test_events_are_valid_v1_contracts(world: World) -> None:
    world.run(record("Patient", "a", 1))
    detail = world.publisher.events[0].to_json()
    again = ResourceChanged.model_validate_json(detail)
    assert again == world.publisher.events[0]
    assert orjson.loads(detail)["metadata"]["eventType"] == "ResourceChanged"


class PreparedStream:
    """A stream reader double: each poll hands out the next prepared batch of records."""

    def __init__(self, *batches: list[dict[str, Any]]) -> None:
        self.batches = list(batches)

    def poll(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.batches.pop(0) if self.batches else []


def test_the_local_stream_poller_redelivers_from_the_first_failure() -> None:
    from fhirflow.local.worker import StreamPoller

    index = FlakyIndex({"b"})
    world = make_world(index, InMemoryEventPublisher())
    poller = StreamPoller(
        PreparedStream([record("Patient", "a", 1), record("Patient", "b", 1)], [record("Patient", "c", 1)]),
        lambda_handler,
    )
    assert poller.drain() == 1  # a acknowledged; b failed and is kept, in order
    assert [r["dynamodb"]["NewImage"]["id"]["S"] for r in poller.pending] == ["b"]
    index.heal()
    assert poller.drain() == 2  # b again, then c from the next poll
    assert poller.pending == []
    assert poller.drain() == 0
    assert world.announced() == [("a", "1", "create"), ("b", "1", "create"), ("c", "1", "create")]


def _committed(version: int, request_id: str, last_updated: int = T0) -> Any:
    from fhirflow.ports import CommittedChange

    body = orjson.dumps({"resourceType": "Patient", "id": "p", "v": version})
    stored = ResourceVersion("t", "Patient", "p", version, last_updated + version, False, "PUT", body)
    return CommittedChange(stored, request_id)


def test_prepared_events_are_published_only_for_the_very_version_that_committed() -> None:
    publisher = InMemoryEventPublisher()
    sync = IndexSync(index=InMemorySearchIndex(), ledger=InMemoryEventLedger(), publisher=publisher)
    first = _committed(1, "req-1")
    sync.prepare([first])
    ready = sync._ready[("t", "Patient", "p", 1)][2]
    assert sync.process([first]).done == 1
    assert publisher.events == [ready]  # the prepared object itself: nothing was built again
    # Two writers raced for version 2 and both prepared; the other one's version committed. Its
    # event must say when it committed, not what the loser prepared.
    committed = _committed(2, "req-2", last_updated=T0 + 500)
    sync.prepare([_committed(2, "req-2")])
    assert sync.process([committed]).done == 1
    assert publisher.events[-1] == ResourceChanged.of(
        tenant="t",
        resource_type="Patient",
        id="p",
        version=2,
        operation="update",
        last_updated_ms=T0 + 502,
        request_id="req-2",
    )
    assert not sync._ready  # what did not match was dropped, not kept
