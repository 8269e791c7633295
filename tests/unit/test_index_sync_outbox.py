"""The embedded mode's drain: the SQLite outbox into the index-sync use case.

With ``index_on_write`` the store drains after each commit, so a write is indexed and announced
before it returns (read-your-writes); without it (or after a crash between commit and drain),
the worker's drain delivers the leftovers, each change exactly once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from fhirflow import runtime
from fhirflow.adapters.memory import InMemorySearchIndex
from fhirflow.adapters.sqlite.events import SharedTransactionLedger, SqliteEventLedger, SqliteEventLog
from fhirflow.adapters.sqlite.index import SqliteSearchIndex
from fhirflow.adapters.sqlite.outbox import SqliteOutbox
from fhirflow.local.worker import OutboxDrainer, Worker, outbox_drainer
from fhirflow.ports import Change, ResourceVersion
from fhirflow.settings import Settings
from fhirflow_contracts import ResourceChanged
from fhirflow_index_sync.sync import IndexSync

T0 = 1_700_000_000_000


def change(id_: str, version: int, *, expected: int | None, deleted: bool = False, size: int = 0) -> Change:
    body = None if deleted else orjson.dumps({"resourceType": "Patient", "id": id_, "pad": "x" * size})
    new = ResourceVersion(
        "default", "Patient", id_, version, T0 + version, deleted, "DELETE" if deleted else "PUT", body
    )
    return Change(new, expected, "req")


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return dataclasses.replace(Settings(data_dir=tmp_path / "data", blob_threshold_bytes=1024), **overrides)  # type: ignore[arg-type]


def announced(events: SqliteEventLog) -> list[tuple[str, str, str]]:
    parsed = [ResourceChanged.model_validate_json(e.detail) for e in events.read(limit=1000)]
    return [(e.id, e.version_id, e.operation) for e in parsed]


def test_each_write_is_indexed_and_announced_before_commit_returns(tmp_path: Path) -> None:
    config = settings(tmp_path)
    store = runtime.build_store(config)
    db = runtime.sqlite_database(config)
    index, events = SqliteSearchIndex(db), SqliteEventLog(db)
    store.commit([change("a", 1, expected=None)])
    assert index.indexed_version("default", "Patient", "a") == 1
    assert announced(events) == [("a", "1", "create")]
    store.commit([change("a", 2, expected=1, size=5000)])  # over the threshold: the body is a blob
    assert index.document("default", "Patient", "a")["pad"] == "x" * 5000
    store.commit([change("a", 3, expected=2, deleted=True)])
    assert index.indexed_version("default", "Patient", "a") == 3
    assert index.document("default", "Patient", "a") is None
    assert announced(events) == [("a", "1", "create"), ("a", "2", "update"), ("a", "3", "delete")]
    assert SqliteOutbox(db).size() == 0


def test_leftovers_are_drained_once_by_the_worker(tmp_path: Path) -> None:
    config = settings(tmp_path, index_on_write=False)
    store = runtime.build_store(config)
    db = runtime.sqlite_database(config)
    for n in range(3):
        store.commit([change(f"p{n}", 1, expected=None)])
    outbox, events = SqliteOutbox(db), SqliteEventLog(db)
    assert outbox.size() == 3
    assert events.read() == []
    drainer = outbox_drainer(config)
    assert drainer.drain() == 3
    assert drainer.drain() == 0
    assert announced(events) == [("p0", "1", "create"), ("p1", "1", "create"), ("p2", "1", "create")]
    store.commit([change("p0", 2, expected=1)])
    worker = Worker(drainer, interval=0.01).start()
    try:
        for _ in range(500):
            if outbox.size() == 0:
                break
            worker._stop.wait(0.01)
    finally:
        worker.stop()
    assert announced(events)[-1] == ("p0", "2", "update")
    assert len(announced(events)) == 4


class BrokenIndex(InMemorySearchIndex):
    """Fails for one resource id until repaired (a named test double of the SearchIndex port)."""

    broken = "p1"

    def apply(self, tenant, type_, id_, version, last_updated, resource):  # type: ignore[no-untyped-def]
        if id_ == self.broken:
            raise ConnectionError("index down")
        return super().apply(tenant, type_, id_, version, last_updated, resource)


def test_a_failing_change_stays_in_the_outbox_with_everything_after_it(tmp_path: Path) -> None:
    config = settings(tmp_path, index_on_write=False)
    store = runtime.build_store(config)
    db = runtime.sqlite_database(config)
    for n in range(4):
        store.commit([change(f"p{n}", 1, expected=None)])
    index, events = BrokenIndex(), SqliteEventLog(db)
    sync = IndexSync(index=index, ledger=SqliteEventLedger(db), publisher=events)
    outbox = SqliteOutbox(db, blobs=runtime.build_blobs(config))
    drainer = OutboxDrainer(outbox, lambda: sync)
    with pytest.raises(ConnectionError):
        drainer.drain()
    assert announced(events) == [("p0", "1", "create")]
    assert [e.change.stored.id for e in outbox.pending()] == ["p1", "p2", "p3"]
    index.broken = ""
    assert drainer.drain() == 3
    assert [e[0] for e in announced(events)] == ["p0", "p1", "p2", "p3"]


def test_a_drain_failure_after_commit_does_not_fail_the_write(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = settings(tmp_path, index_on_write=False)
    store = runtime.build_store(config)
    db = runtime.sqlite_database(config)
    sync = IndexSync(index=BrokenIndex(), ledger=SqliteEventLedger(db), publisher=SqliteEventLog(db))
    drainer = OutboxDrainer(SqliteOutbox(db), lambda: sync)
    store.after_commit = drainer.after_commit  # type: ignore[attr-defined]
    store.commit([change("p1", 1, expected=None)])
    assert store.current("default", "Patient", "p1") is not None
    assert SqliteOutbox(db).size() == 1
    assert "outbox drain after commit failed" in caplog.text


def test_the_embedded_events_need_no_ledger_of_their_own(tmp_path: Path) -> None:
    assert isinstance(runtime.build_ledger(settings(tmp_path)), SharedTransactionLedger)
    eventbridge = settings(tmp_path, events="eventbridge")  # published outside SQLite's transaction
    assert isinstance(runtime.build_ledger(eventbridge), SqliteEventLedger)


class RemovalFails(SqliteOutbox):
    """An outbox whose first removal fails: after the batch was indexed and its events published,
    inside the delivery's transaction."""

    failures = 1

    def remove(self, seqs: list[int]) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        super().remove(seqs)


def test_a_delivery_rolled_back_after_publishing_publishes_each_event_once_on_retry(tmp_path: Path) -> None:
    config = settings(tmp_path, index_on_write=False)
    store = runtime.build_store(config)
    db = runtime.sqlite_database(config)
    for n in range(3):
        store.commit([change(f"p{n}", 1, expected=None)])
    index, events = SqliteSearchIndex(db), SqliteEventLog(db)
    sync = IndexSync(index=index, ledger=SharedTransactionLedger(), publisher=events)
    drainer = OutboxDrainer(RemovalFails(db), lambda: sync)
    with pytest.raises(OSError, match="disk full"):
        drainer.drain()
    assert events.read() == []  # published, then rolled back with the rest of the delivery
    assert index.indexed_version("default", "Patient", "p0") is None
    assert drainer.drain() == 3
    assert announced(events) == [("p0", "1", "create"), ("p1", "1", "create"), ("p2", "1", "create")]
    assert drainer.drain() == 0
    assert len(events.read(limit=1000)) == 3


def test_dependencies_build_the_embedded_adapters_on_first_use(tmp_path: Path) -> None:
    from fhirflow.adapters.filesystem import FileBlobStore

    deps = runtime.build_dependencies(settings(tmp_path))
    assert deps._index is None
    assert isinstance(deps.index, SqliteSearchIndex)
    assert deps.index is deps.index
    assert isinstance(deps.events, SqliteEventLog)
    assert isinstance(deps.blobs, FileBlobStore)
    assert deps.blobs.root == tmp_path / "data" / "blobs"


def test_the_index_copies_only_the_bodies_the_store_keeps_out_of_line(tmp_path: Path) -> None:
    config = settings(tmp_path)
    store = runtime.build_store(config)
    db = runtime.sqlite_database(config)
    store.commit([change("small", 1, expected=None), change("large", 1, expected=None, size=5000)])
    copies = dict(db.connection().execute("SELECT id, body IS NOT NULL FROM search_index").fetchall())
    assert copies == {"small": 0, "large": 1}
    index = SqliteSearchIndex(db, bodies_from_store=True)
    assert index.document("default", "Patient", "small")["id"] == "small"
    assert index.document("default", "Patient", "large")["pad"] == "x" * 5000


def test_a_write_that_fails_in_a_batch_leaves_nothing_of_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhirflow.adapters.sqlite.search import writer
    from fhirflow.ports import IndexWrite, IndexWriteSkipped

    db = runtime.sqlite_database(settings(tmp_path))
    index = SqliteSearchIndex(db)
    real = writer.index_resource

    def failing(conn, tenant, type_, id_, *args, **kwargs):  # after the write's first statement
        if id_ == "bad":
            raise OSError("disk trouble")
        return real(conn, tenant, type_, id_, *args, **kwargs)

    monkeypatch.setattr(writer, "index_resource", failing)
    writes = [
        IndexWrite("default", "Patient", id_, 1, T0, {"resourceType": "Patient", "id": id_, "gender": "male"})
        for id_ in ("a", "b", "bad", "c")
    ]
    results = index.apply_batch(writes)
    assert results[:2] == [True, True]
    assert isinstance(results[2], OSError)
    assert isinstance(results[3], IndexWriteSkipped)
    rows = db.connection().execute("SELECT id FROM search_index ORDER BY id").fetchall()
    assert rows == [("a",), ("b",)]  # nothing of "bad" (its search_index row came first), nor of "c"
    found = db.connection().execute("SELECT id FROM search_resource ORDER BY id").fetchall()
    assert found == [("a",), ("b",)]
    monkeypatch.setattr(writer, "index_resource", real)
    assert index.apply_batch(writes) == [False, False, True, True]  # the retry indexes the rest
