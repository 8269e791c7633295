"""``SqliteResourceStore``: the embedded system of record.

Tables: ``versions`` holds every version (the body lives only here), ``heads`` points at the
current version of each resource, and ``outbox`` records each committed change in the same
transaction, for the worker loop to deliver (it plays the DynamoDB stream's part).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.ports import Change, HistoryPage, HistoryQuery, ResourceVersion, VersionConflict

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
    body BLOB
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

_COLUMNS = "v.tenant, v.type, v.id, v.version, v.last_updated, v.deleted, v.method, v.body"


def _row_to_version(row: tuple[Any, ...]) -> ResourceVersion:
    tenant, type_, id_, version, last_updated, deleted, method, body = row
    return ResourceVersion(tenant, type_, id_, version, last_updated, bool(deleted), method, body)


class SqliteResourceStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)

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
        return _row_to_version(row) if row else None

    def version(self, tenant: str, type_: str, id_: str, version: int) -> ResourceVersion | None:
        row = (
            self.db.connection()
            .execute(
                f"SELECT {_COLUMNS} FROM versions v WHERE v.tenant = ? AND v.type = ? AND v.id = ? AND v.version = ?",
                (tenant, type_, id_, version),
            )
            .fetchone()
        )
        return _row_to_version(row) if row else None

    def commit(self, changes: Sequence[Change]) -> None:
        with self.db.write() as conn:
            for index, change in enumerate(changes):
                self._apply(conn, index, change)

    @staticmethod
    def _apply(conn: sqlite3.Connection, index: int, change: Change) -> None:
        new = change.new
        row = conn.execute(
            "SELECT version FROM heads WHERE tenant = ? AND type = ? AND id = ?", (new.tenant, new.type, new.id)
        ).fetchone()
        current = row[0] if row else None
        if current != change.expected_version:
            raise VersionConflict(index, current)
        cursor = conn.execute(
            "INSERT INTO versions (tenant, type, id, version, last_updated, deleted, method, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (new.tenant, new.type, new.id, new.version, new.last_updated, int(new.deleted), new.method, new.body),
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
        return HistoryPage([_row_to_version(r[1:]) for r in page], next_position)
