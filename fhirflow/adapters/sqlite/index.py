"""``SqliteSearchIndex``: the embedded search index's resource table.

One row per resource holding the indexed version (a deletion keeps its row as a tombstone, so
that a replayed older version cannot bring the resource back). The version guard is part of
the upsert itself, so concurrent or replayed writes cannot move a row backwards. When the guard
lets a version through, the same transaction replaces the resource's typed search rows
(:mod:`fhirflow.adapters.sqlite.search.writer`), which is what the search service queries.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.search.schema import ensure_schema as ensure_search_schema
from fhirflow.adapters.sqlite.transactions import joined_write

SCHEMA = """
CREATE TABLE IF NOT EXISTS search_index (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    body BLOB,
    PRIMARY KEY (tenant, type, id)
) WITHOUT ROWID;
"""


class SqliteSearchIndex:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)
        ensure_search_schema(db)

    def apply(
        self, tenant: str, type_: str, id_: str, version: int, last_updated: int, resource: dict[str, Any] | None
    ) -> bool:
        body = None if resource is None else orjson.dumps(resource)
        with joined_write(self.db) as conn:
            cursor = conn.execute(
                "INSERT INTO search_index (tenant, type, id, version, deleted, last_updated, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, type, id) DO UPDATE SET version = excluded.version, "
                "deleted = excluded.deleted, last_updated = excluded.last_updated, body = excluded.body "
                "WHERE excluded.version > search_index.version",
                (tenant, type_, id_, version, int(resource is None), last_updated, body),
            )
            if cursor.rowcount == 0:
                return False
            from fhirflow.adapters.sqlite.search.writer import index_resource  # extraction: loaded on first write

            index_resource(conn, tenant, type_, id_, version, last_updated, resource)
            return True

    def indexed_version(self, tenant: str, type_: str, id_: str) -> int | None:
        row = (
            self.db.connection()
            .execute("SELECT version FROM search_index WHERE tenant = ? AND type = ? AND id = ?", (tenant, type_, id_))
            .fetchone()
        )
        return int(row[0]) if row else None

    def document(self, tenant: str, type_: str, id_: str) -> dict[str, Any] | None:
        """The indexed body of a live resource (None when absent or deleted)."""
        row = (
            self.db.connection()
            .execute(
                "SELECT body FROM search_index WHERE tenant = ? AND type = ? AND id = ? AND deleted = 0",
                (tenant, type_, id_),
            )
            .fetchone()
        )
        if row is None or row[0] is None:
            return None
        parsed: dict[str, Any] = orjson.loads(row[0])
        return parsed
