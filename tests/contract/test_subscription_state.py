"""The subscriptions state store (fhirflow.subscription_ports) on both adapters (SQLite, and
DynamoDB on DynamoDB Local): gapless, replay-safe event numbers, secrets looked up by version,
retention (docs/subscriptions.md)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.subscriptions import SqliteSubscriptionState
from fhirflow.subscription_ports import Secrets


@pytest.fixture(params=["sqlite", "dynamodb"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    store: Any
    table = None
    if request.param == "sqlite":
        store = SqliteSubscriptionState(SqliteDatabase(tmp_path / "state.sqlite3"))
    else:
        from fhirflow.adapters.aws.dynamodb_subscriptions import DynamoDbSubscriptionState, ensure_subscriptions_table

        local = request.getfixturevalue("dynamodb_local")
        client = local.client()
        table = f"fhirflow-subs-{uuid.uuid4().hex[:10]}"  # the prune watermark is table-wide
        ensure_subscriptions_table(client, table)
        store = DynamoDbSubscriptionState(table, client=client)
    store.put_state("t", "s1", version=1, spec={"kind": "r4"}, status="requested")
    yield store
    if table is not None:
        store.client.delete_table(TableName=table)


def _record(state: Any, source: str, sub: str = "s1") -> tuple[int, bool]:
    return state.record_event("t", sub, source=source, at_ms=1000, focus=("Patient", "p", 1), operation="update")


def test_event_numbers_are_gapless_and_a_replayed_source_keeps_its_number(state: Any) -> None:
    assert [_record(state, s) for s in ("a", "b", "c")] == [(1, True), (2, True), (3, True)]
    assert _record(state, "b") == (2, False)
    assert _record(state, "d") == (4, True)
    found = state.state("t", "s1")
    assert found is not None
    assert found.events == 4
    assert [e.number for e in state.events("t", "s1", since=2, until=3, limit=10)] == [2, 3]


def test_concurrent_numbering_is_atomic(state: Any) -> None:
    numbers: list[int] = []
    lock = threading.Lock()

    def work(prefix: str) -> None:
        for n in range(50):
            number, _ = _record(state, f"{prefix}-{n}")
            with lock:
                numbers.append(number)

    threads = [threading.Thread(target=work, args=(str(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(1, 201))


def test_a_new_spec_keeps_the_counter(state: Any) -> None:
    _record(state, "a")
    state.put_state("t", "s1", version=3, spec={"kind": "topic"}, status="active")
    assert _record(state, "b") == (2, True)


def test_secrets_are_read_by_version_so_an_orphan_of_a_failed_write_is_never_used(
    state: Any,
) -> None:
    state.put_secrets("t", "s1", Secrets(1, (("X-Key", "one"),), (("whsec_a", None),), {"tenant": "t"}))
    state.put_secrets("t", "s1", Secrets(3, (("X-Key", "orphan"),), (("whsec_o", None),), {}))
    found = state.secrets("t", "s1", 2)
    assert found is not None
    assert found.headers == (("X-Key", "one"),)
    state.copy_secrets("t", "s1", 2, 3)  # a system write of version 3 carries version 2's secrets
    again = state.secrets("t", "s1")
    assert again is not None
    assert again.headers == (("X-Key", "one"),)
    assert again.live_signing(0) == ["whsec_a"]


def test_retired_signing_secrets_stop_signing_after_their_overlap() -> None:
    secrets = Secrets(1, (), (("whsec_new", None), ("whsec_old", 5000)))
    assert secrets.live_signing(4999) == ["whsec_new", "whsec_old"]
    assert secrets.live_signing(5000) == ["whsec_new"]


def test_prune_and_forget(state: Any) -> None:
    state.record_event("t", "s1", source="old", at_ms=10, focus=("Patient", "p", 1), operation="create")
    state.record_event("t", "s1", source="new", at_ms=5000, focus=("Patient", "p", 2), operation="update")
    # SQLite deletes and counts; DynamoDB expires by TTL and hides what is older at once (no Scan
    # to count them).
    assert state.prune(events_older_than_ms=1000) == (1 if isinstance(state, SqliteSubscriptionState) else 0)
    assert [e.number for e in state.events("t", "s1", since=1, until=10, limit=10)] == [2]
    assert _record(state, "later") == (3, True)  # the counter outlives the log
    state.advance("subscriptions", 42)
    assert state.cursor("subscriptions") == 42
    state.forget("t", "s1")
    assert state.state("t", "s1") is None
    assert state.secrets("t", "s1") is None


def test_metrics_count_atomically_and_are_forgotten_with_the_subscription(state: Any) -> None:
    from fhirflow.subscription_ports import SubscriptionMetrics

    assert state.metrics("t", "s1") == SubscriptionMetrics()

    def work() -> None:
        for _ in range(25):
            state.count("t", "s1", matched=1)
            state.count("t", "s1", delivered=1, latency_ms=12.5)
            state.count("t", "s1", failed=2)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.metrics("t", "s1") == SubscriptionMetrics(100, 100, 200, 12.5)
    state.count("t", "s1", failed=1)  # a failure leaves the last latency as it was
    state.count("t", "s1", delivered=1, latency_ms=40.0)
    assert state.metrics("t", "s1") == SubscriptionMetrics(100, 101, 201, 40.0)
    assert state.metrics("t", "other") == SubscriptionMetrics()
    state.forget("t", "s1")
    assert state.metrics("t", "s1") == SubscriptionMetrics()
