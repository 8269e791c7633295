"""``SqliteResourceStore``: the embedded system of record.

Tables: ``versions`` holds every version (the body lives only here), ``heads`` points at the
current version of each resource, and ``outbox`` records each committed change in the same
transaction, for the worker loop to deliver (it plays the DynamoDB stream's part).

A body over ``blob_threshold`` bytes is kept in the BlobStore instead (``body`` NULL, ``blob``
its key), as the DynamoDB store keeps large bodies in S3: the two modes behave alike for a
10 MB resource. ``after_commit`` runs after each successful commit; the embedded runtime wires
it to the outbox drain, which is how a write is indexed before its response (read-your-writes).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from fhirflow.adapters.offload import BODY_CONTENT_TYPE, body_key
from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.group_commit import GroupCommit, PendingWrite
from fhirflow.ports import BlobStore, Change, ClaimTaken, HistoryPage, HistoryQuery, ResourceVersion, VersionConflict

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    method TEXT NOT NULL,
    body BLOB,
    blob TEXT,
    created INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_key ON versions (tenant, type, id, version);
CREATE INDEX IF NOT EXISTS versions_type_seq ON versions (tenant, type, seq);
CREATE INDEX IF NOT EXISTS versions_tenant_seq ON versions (tenant, seq);
CREATE TABLE IF NOT EXISTS heads (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, type, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    operation TEXT NOT NULL,
    last_updated INTEGER NOT NULL,
    request_id TEXT NOT NULL
);
"""

UNIQUES_SCHEMA = """
CREATE TABLE IF NOT EXISTS uniques (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    hash TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (tenant, type, hash)
) WITHOUT ROWID;
"""
"""Uniqueness keys of conditional criteria (fhirflow.conditional): which resource took each one.
A row is written in the transaction of the change that claims it; a row whose owner was since
deleted or changed stays until a later claim replaces it (compare-and-set on ``id``)."""

_COLUMNS = "v.tenant, v.type, v.id, v.version, v.last_updated, v.deleted, v.method, v.body, v.blob, v.created"

DEFAULT_BLOB_THRESHOLD = 64 * 1024


class SqliteResourceStore:
    def __init__(
        self,
        db: SqliteDatabase,
        *,
        blobs: BlobStore | None = None,
        blob_threshold: int = DEFAULT_BLOB_THRESHOLD,
        after_commit: Callable[[], None] | None = None,
        in_transaction: Callable[[Sequence[Change]], None] | None = None,
        before_transaction: Callable[[Sequence[Change]], None] | None = None,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.blob_threshold = blob_threshold
        self.after_commit = after_commit
        self.in_transaction = in_transaction
        """Runs inside each commit's transaction after its changes (the embedded outbox drain)."""
        self.before_transaction = before_transaction
        """Runs before each commit takes the write lock: work that needs no lock (preparing the
        changes' search rows) happens there, while another writer may hold it."""
        self._group = GroupCommit(db, self._apply_change_set)
        db.ensure_schema(SCHEMA)
        db.ensure_schema(UNIQUES_SCHEMA)
        _add_blob_column(db)

    def _row_to_version(self, row: tuple[Any, ...]) -> ResourceVersion:
        tenant, type_, id_, version, last_updated, deleted, method, body, blob, created = row
        if blob is not None:
            assert self.blobs is not None, "a version's body is in the blob store, but none is configured"
            body = self.blobs.get(blob)
        return ResourceVersion(tenant, type_, id_, version, last_updated, bool(deleted), method, body, bool(created))

    def current(self, tenant: str, type_: str, id_: str) -> ResourceVersion | None:
        row = (
            self.db.connection()
            .execute(
                f"SELECT {_COLUMNS} FROM heads h JOIN versions v ON v.seq = h.seq "
                "WHERE h.tenant = ? AND h.type = ? AND h.id = ?",
                (tenant, type_, id_),
            )
            .fetchone()
        )
        return self._row_to_version(row) if row else None

    def version(self, tenant: str, type_: str, id_: str, version: int) -> ResourceVersion | None:
        row = (
            self.db.connection()
            .execute(
                f"SELECT {_COLUMNS} FROM versions v WHERE v.tenant = ? AND v.type = ? AND v.id = ? AND v.version = ?",
                (tenant, type_, id_, version),
            )
            .fetchone()
        )
        return self._row_to_version(row) if row else None

    def claim_owner(self, tenant: str, type_: str, key: str) -> str | None:
        row = (
            self.db.connection()
            .execute("SELECT id FROM uniques WHERE tenant = ? AND type = ? AND hash = ?", (tenant, type_, key))
            .fetchone()
        )
        return str(row[0]) if row else None

    def commit(self, changes: Sequence[Change]) -> None:
        if self.before_transaction is not None:
            self.before_transaction(changes)
        offloaded = self._offload(changes)
        try:
            # Concurrent writers of this process share one transaction (fhirflow.adapters.sqlite.group_commit);
            # each change set still commits or fails on its own.
            self._group.commit(PendingWrite(changes, offloaded), self.in_transaction)
        except BaseException:
            for key in offloaded.values():
                self._delete_blob_quietly(key)
            raise
        if self.after_commit is not None:
            self.after_commit()

    def _apply_change_set(self, conn: sqlite3.Connection, pending: PendingWrite) -> None:
        for index, change in enumerate(pending.changes):
            self._apply(conn, index, change, pending.offloaded.get(index))

    def _offload(self, changes: Sequence[Change]) -> dict[int, str]:
        """Write the large bodies to the blob store first; the rows then point at them."""
        offloaded: dict[int, str] = {}
        if self.blobs is None:
            return offloaded
        try:
            for index, change in enumerate(changes):
                new = change.new
                if new.body is not None and len(new.body) > self.blob_threshold:
                    key = body_key(new.tenant, new.type, new.id, new.version)
                    self.blobs.put(key, new.body, content_type=BODY_CONTENT_TYPE)
                    offloaded[index] = key
        except BaseException:
            for key in offloaded.values():
                self._delete_blob_quietly(key)
            raise
        return offloaded

    def _delete_blob_quietly(self, key: str) -> None:
        # Cleanup after a failed commit; the original error is what the caller must see.
        assert self.blobs is not None
        with contextlib.suppress(Exception):  # an orphaned blob is harmless; losing the real error is not
            self.blobs.delete(key)

    @staticmethod
    def _apply(conn: sqlite3.Connection, index: int, change: Change, blob: str | None) -> None:
        new = change.new if blob is None else replace(change.new, body=None)
        row = conn.execute(
            "SELECT version FROM heads WHERE tenant = ? AND type = ? AND id = ?", (new.tenant, new.type, new.id)
        ).fetchone()
        current = row[0] if row else None
        if current != change.expected_version:
            raise VersionConflict(index, current)
        if change.claim is not None:
            _take_claim(conn, index, change)
        cursor = conn.execute(
            "INSERT INTO versions (tenant, type, id, version, last_updated, deleted, method, body, blob, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.tenant,
                new.type,
                new.id,
                new.version,
                new.last_updated,
                int(new.deleted),
                new.method,
                new.body,
                blob,
                int(new.created),
            ),
        )
        conn.execute(
            "INSERT INTO heads (tenant, type, id, version, seq) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant, type, id) DO UPDATE SET version = excluded.version, seq = excluded.seq",
            (new.tenant, new.type, new.id, new.version, cursor.lastrowid),
        )
        conn.execute(
            "INSERT INTO outbox (tenant, type, id, version, operation, last_updated, request_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (new.tenant, new.type, new.id, new.version, new.operation, new.last_updated, change.request_id),
        )

    def history(self, query: HistoryQuery) -> HistoryPage:
        where = ["v.tenant = ?"]
        args: list[Any] = [query.tenant]
        if query.type is not None:
            where.append("v.type = ?")
            args.append(query.type)
        if query.id is not None:
            where.append("v.id = ?")
            args.append(query.id)
        if query.since is not None:
            where.append("v.last_updated >= ?")
            args.append(query.since)
        if query.at is not None:
            low, high = query.at
            # Current at some point in [low, high): began before high, and not superseded by low.
            where.append("v.last_updated < ?")
            args.append(high)
            where.append(
                "NOT EXISTS (SELECT 1 FROM versions n WHERE n.tenant = v.tenant AND n.type = v.type "
                "AND n.id = v.id AND n.version = v.version + 1 AND n.last_updated <= ?)"
            )
            args.append(low)
        if query.after is not None:
            where.append("v.seq < ?")
            args.append(int(query.after))
        args.append(query.count + 1)
        rows = (
            self.db.connection()
            .execute(
                f"SELECT v.seq, {_COLUMNS} FROM versions v WHERE {' AND '.join(where)} ORDER BY v.seq DESC LIMIT ?",
                args,
            )
            .fetchall()
        )
        page = rows[: query.count]
        next_position = str(page[-1][0]) if len(rows) > query.count and page else None
        return HistoryPage([self._row_to_version(r[1:]) for r in page], next_position)


def _take_claim(conn: sqlite3.Connection, index: int, change: Change) -> None:
    """The claim's compare-and-set, inside the commit's write transaction (BEGIN IMMEDIATE: no
    other writer runs between the read and the write)."""
    assert change.claim is not None
    new, claim = change.new, change.claim
    row = conn.execute(
        "SELECT id FROM uniques WHERE tenant = ? AND type = ? AND hash = ?", (new.tenant, new.type, claim.key)
    ).fetchone()
    owner = str(row[0]) if row else None
    if owner != claim.replaces:
        raise ClaimTaken(index, owner)
    conn.execute(
        "INSERT INTO uniques (tenant, type, hash, id) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (tenant, type, hash) DO UPDATE SET id = excluded.id",
        (new.tenant, new.type, claim.key, new.id),
    )


_ADDED_COLUMNS = (("blob", "blob TEXT"), ("created", "created INTEGER NOT NULL DEFAULT 0"))


def _add_blob_column(db: SqliteDatabase) -> None:
    """Databases made by earlier versions lack ``versions.blob`` (large bodies) and ``versions.created``."""
    conn = db.connection()
    columns = {row[1] for row in conn.execute("PRAGMA table_info(versions)")}
    missing = [ddl for name, ddl in _ADDED_COLUMNS if name not in columns]
    if missing:
        with db.write() as tx:
            present = {row[1] for row in tx.execute("PRAGMA table_info(versions)")}
            for name, ddl in _ADDED_COLUMNS:
                if name not in present:
                    tx.execute(f"ALTER TABLE versions ADD COLUMN {ddl}")
