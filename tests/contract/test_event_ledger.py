"""The EventLedger contract: SQLite, DynamoDB Local and the in-memory fake."""

from __future__ import annotations

import pytest

from fhirflow.ports import EventLedger
from fhirflow_contracts import ResourceChanged


@pytest.fixture(params=["sqlite", "dynamodb", "memory"])
def ledger(request: pytest.FixtureRequest, tmp_path) -> EventLedger:
    if request.param == "sqlite":
        from fhirflow.adapters.sqlite.database import SqliteDatabase
        from fhirflow.adapters.sqlite.events import SqliteEventLedger

        return SqliteEventLedger(SqliteDatabase(tmp_path / "ledger.sqlite3"))
    if request.param == "dynamodb":
        from fhirflow.adapters.aws.dynamodb_ledger import DynamoDbEventLedger

        tables = request.getfixturevalue("shared_tables")
        return DynamoDbEventLedger(tables.ledger, client=tables.client)
    from fhirflow.adapters.memory import InMemoryEventLedger

    return InMemoryEventLedger()


def event(tenant: str, id_: str, version: int) -> ResourceChanged:
    return ResourceChanged.of(
        tenant=tenant, resource_type="Patient", id=id_, version=version, operation="update", last_updated_ms=1
    )


def test_records_and_reports_published_events(ledger: EventLedger, tenant: str) -> None:
    a, b, c = event(tenant, "a", 1), event(tenant, "a", 2), event(tenant, "b", 1)
    assert ledger.published([a, b, c]) == set()
    ledger.record([a, c])
    assert ledger.published([a, b, c]) == {a.metadata.event_id, c.metadata.event_id}
    ledger.record([a, b])  # recording again is harmless
    assert ledger.published([a, b, c]) == {a.metadata.event_id, b.metadata.event_id, c.metadata.event_id}
    assert ledger.published([]) == set()


def test_many_events_at_once(ledger: EventLedger, tenant: str) -> None:
    events = [event(tenant, f"r{i}", 1) for i in range(230)]  # over the 100/25-item batch limits
    ledger.record(events[:130])
    assert ledger.published(events) == {e.metadata.event_id for e in events[:130]}


def test_tenants_are_separate(ledger: EventLedger, tenant: str) -> None:
    ledger.record([event(tenant, "a", 1)])
    assert ledger.published([event(tenant + "-other", "a", 1)]) == set()
