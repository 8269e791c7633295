"""``SqliteSearchIndex``: the embedded search index's resource table.

One row per resource holding the indexed version (a deletion keeps its row as a tombstone, so
that a replayed older version cannot bring the resource back). The version guard is part of
the upsert itself, so concurrent or replayed writes cannot move a row backwards. When the guard
lets a version through, the same transaction replaces the resource's typed search rows
(:mod:`fhirflow.adapters.sqlite.search.writer`), which is what the search service queries.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.search.schema import ensure_schema as ensure_search_schema
from fhirflow.adapters.sqlite.searchparams import catalog_for
from fhirflow.adapters.sqlite.transactions import joined_write
from fhirflow.ports import IndexWrite, IndexWriteSkipped

if TYPE_CHECKING:
    from fhirflow.adapters.sqlite.search.writer import PreparedRows
    from fhirflow.searchparams.registry import Registry

logger = logging.getLogger("fhirflow.index")

_PREPARED_LIMIT = 4096
"""Prepared versions kept for ``apply``; one whose write failed is dropped by the oldest-first cap."""

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
    def __init__(self, db: SqliteDatabase, *, bodies_from_store: bool = False) -> None:
        self.db = db
        self.bodies_from_store = bodies_from_store
        """The embedded store's ``versions`` table is in this database: keep no second copy of a
        body it holds inline (the search engine reads it there); only of one it keeps in the
        blob store. Off when the index serves another store (``serve --store dynamodb``)."""
        db.ensure_schema(SCHEMA)
        ensure_search_schema(db)
        self.catalog = catalog_for(db)
        """The tenants' runtime search parameters: rows are built with the tenant's registry, and
        indexing a SearchParameter records it there in the same transaction."""
        # (tenant, type, id, version) → (the resource it was built from, its rows, the registry used)
        self._prepared: OrderedDict[tuple[str, str, str, int], tuple[dict[str, Any], PreparedRows, Registry]] = (
            OrderedDict()
        )
        self._prepared_lock = threading.Lock()

    def prepare(
        self, tenant: str, type_: str, id_: str, version: int, last_updated: int, resource: dict[str, Any]
    ) -> None:
        """Build a version's search rows ahead of ``apply`` (before the writer takes SQLite's write
        lock, so that another writer's SQL can run meanwhile). Optional: ``apply`` builds them
        itself when nothing was prepared, and a failure here only leaves the work to it."""
        from fhirflow.adapters.sqlite.search.writer import prepare_resource

        try:
            registry = self.catalog.last_index_registry(tenant)  # no read here: apply checks it
            prepared = prepare_resource(tenant, type_, id_, version, last_updated, resource, registry=registry)
        except Exception:  # apply meets the same failure and reports it where it belongs
            logger.debug("preparing search rows failed", extra={"type": type_, "id": id_, "version": version})
            return
        with self._prepared_lock:
            self._prepared[(tenant, type_, id_, version)] = (resource, prepared, registry)
            while len(self._prepared) > _PREPARED_LIMIT:
                self._prepared.popitem(last=False)

    def _take_prepared(
        self, tenant: str, type_: str, id_: str, version: int, resource: dict[str, Any] | None, registry: Registry
    ) -> PreparedRows | None:
        """The rows prepared from this very ``resource`` object. Two writers racing for the same
        version prepare from different objects, and the loser's rows must not index the winner.
        Rows built with another ``registry`` (a SearchParameter changed meanwhile) are dropped too."""
        with self._prepared_lock:
            found = self._prepared.pop((tenant, type_, id_, version), None)
        return found[1] if found is not None and found[0] is resource and found[2] is registry else None

    def apply(
        self, tenant: str, type_: str, id_: str, version: int, last_updated: int, resource: dict[str, Any] | None
    ) -> bool:
        with joined_write(self.db) as conn:
            # The registry as of this transaction: rows are always built with the parameters that
            # hold when they commit, which is what makes a reindex's "searchable" mark true.
            registry = self.catalog.index_registry(tenant, conn)
            inline = (
                resource is not None
                and self.bodies_from_store
                and _inline_in_store(conn, [IndexWrite(tenant, type_, id_, version, last_updated, resource)])
            )
            return self._apply(conn, registry, tenant, type_, id_, version, last_updated, resource, bool(inline))

    def _apply(
        self,
        conn: Any,
        registry: Registry,
        tenant: str,
        type_: str,
        id_: str,
        version: int,
        last_updated: int,
        resource: dict[str, Any] | None,
        inline_in_store: bool,
    ) -> bool:
        prepared = self._take_prepared(tenant, type_, id_, version, resource, registry)
        body = orjson.dumps(resource) if resource is not None and not inline_in_store else None
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

        index_resource(conn, tenant, type_, id_, version, last_updated, resource, registry=registry, prepared=prepared)
        if type_ == "SearchParameter":
            self.catalog.record(conn, tenant, id_, version, resource)
        return True

    def apply_batch(self, writes: Sequence[IndexWrite]) -> list[bool | Exception]:
        """The writes in one transaction (the caller's, when it is inside one), in order; after a
        failure the rest are skipped. The registry and where the bodies are stored are read once
        per batch. A failed write leaves nothing of itself: the batch runs under a savepoint, and
        after a failure the writes before it are applied again from there."""
        if not writes:
            return []
        with joined_write(self.db) as conn:
            conn.execute("SAVEPOINT index_batch")
            try:
                results = self._apply_in_order(conn, writes)
                failed = next((i for i, result in enumerate(results) if isinstance(result, Exception)), None)
                if failed is not None:
                    conn.execute("ROLLBACK TO index_batch")
                    again = self._apply_in_order(conn, writes[:failed])
                    if any(isinstance(result, Exception) for result in again):  # not the same twice: give up
                        conn.execute("ROLLBACK TO index_batch")
                        return [results[failed], *(IndexWriteSkipped() for _ in writes[1:])]
                    results = again + results[failed:]
            finally:
                conn.execute("RELEASE index_batch")
        return results

    def _apply_in_order(self, conn: Any, writes: Sequence[IndexWrite]) -> list[bool | Exception]:
        results: list[bool | Exception] = []
        try:
            inline = _inline_in_store(conn, writes) if self.bodies_from_store else set()
        except Exception as exc:
            return [exc, *(IndexWriteSkipped() for _ in writes[1:])]
        registries: dict[str, Registry] = {}
        for write in writes:
            if results and isinstance(results[-1], Exception):
                results.append(IndexWriteSkipped())
                continue
            try:
                registry = registries.get(write.tenant)
                if registry is None:
                    registry = registries[write.tenant] = self.catalog.index_registry(write.tenant, conn)
                key = (write.tenant, write.type, write.id, write.version)
                results.append(
                    self._apply(
                        conn,
                        registry,
                        write.tenant,
                        write.type,
                        write.id,
                        write.version,
                        write.last_updated,
                        write.resource,
                        key in inline,
                    )
                )
                if write.type == "SearchParameter":  # it may have changed the tenant's parameters
                    registries.pop(write.tenant, None)
            except Exception as exc:  # reported per write, as the port says
                results.append(exc)
        return results

    def reindex(self, tenant: str, current: Sequence[IndexedResource]) -> tuple[int, int, list[str]]:
        """Recompute the search rows of resources the index holds with the tenant's parameters as
        they are now: a forced re-index that bypasses ``apply``'s version guard (a reindex job's
        batch). A resource whose indexed version moved since it was read is skipped: its write
        indexed it with the current parameters. Returns (recomputed, skipped, error messages)."""
        from fhirflow.adapters.sqlite.search.writer import store_search_rows

        registry = self.catalog.index_registry(tenant)
        built, errors = _build_rows(tenant, current, registry)  # outside the write lock
        done = skipped = 0
        with joined_write(self.db) as conn:
            now = self.catalog.index_registry(tenant, conn)
            if now is not registry:  # a SearchParameter changed meanwhile: the rows must match the new set
                built, errors = _build_rows(tenant, current, now)
            for item, rows in built:
                found = conn.execute(
                    "SELECT version, deleted FROM search_index WHERE tenant = ? AND type = ? AND id = ?",
                    (tenant, item.type, item.id),
                ).fetchone()
                if found is None or found[1] or int(found[0]) != item.version:
                    skipped += 1
                    continue
                store_search_rows(conn, tenant, rows)
                done += 1
        return done, skipped, errors

    def indexed_version(self, tenant: str, type_: str, id_: str) -> int | None:
        row = (
            self.db.connection()
            .execute("SELECT version FROM search_index WHERE tenant = ? AND type = ? AND id = ?", (tenant, type_, id_))
            .fetchone()
        )
        return int(row[0]) if row else None

    def document(self, tenant: str, type_: str, id_: str) -> dict[str, Any] | None:
        """The indexed body of a live resource (None when absent or deleted)."""
        statement = "SELECT body FROM search_index i WHERE tenant = ? AND type = ? AND id = ? AND deleted = 0"
        if self.bodies_from_store:
            statement = (
                "SELECT COALESCE(i.body, v.body) FROM search_index i LEFT JOIN versions v ON i.body IS NULL "
                "AND v.tenant = i.tenant AND v.type = i.type AND v.id = i.id AND v.version = i.version "
                "WHERE i.tenant = ? AND i.type = ? AND i.id = ? AND i.deleted = 0"
            )
        row = self.db.connection().execute(statement, (tenant, type_, id_)).fetchone()
        if row is None or row[0] is None:
            return None
        parsed: dict[str, Any] = orjson.loads(row[0])
        return parsed


_INLINE_CHUNK = 200  # 4 parameters each: well under SQLite's limit of 32,766


def _inline_in_store(conn: Any, writes: Sequence[IndexWrite]) -> set[tuple[str, str, str, int]]:
    """Which of the writes' versions the store holds with their body inline (the index then keeps
    no copy of it): one query per 200 writes, each looked up by the ``versions_key`` index."""
    keys = [(w.tenant, w.type, w.id, w.version) for w in writes if w.resource is not None]
    found: set[tuple[str, str, str, int]] = set()
    for start in range(0, len(keys), _INLINE_CHUNK):
        chunk = keys[start : start + _INLINE_CHUNK]
        rows = ",".join(["(?, ?, ?, ?)"] * len(chunk))
        found.update(
            conn.execute(
                f"SELECT v.tenant, v.type, v.id, v.version FROM (VALUES {rows}) k CROSS JOIN versions v "
                "ON v.tenant = k.column1 AND v.type = k.column2 AND v.id = k.column3 AND v.version = k.column4 "
                "WHERE v.body IS NOT NULL",
                [part for key in chunk for part in key],
            ).fetchall()
        )
    return found


@dataclass(frozen=True, slots=True)
class IndexedResource:
    """A current version as the index holds it (what a reindex batch recomputes)."""

    type: str
    id: str
    version: int
    last_updated: int
    resource: dict[str, Any]


def _build_rows(
    tenant: str, current: Sequence[IndexedResource], registry: Registry
) -> tuple[list[tuple[IndexedResource, PreparedRows]], list[str]]:
    from fhirflow.adapters.sqlite.search.writer import prepare_resource

    built: list[tuple[IndexedResource, PreparedRows]] = []
    errors: list[str] = []
    for item in current:
        try:
            rows = prepare_resource(
                tenant, item.type, item.id, item.version, item.last_updated, item.resource, registry=registry
            )
        except Exception as exc:  # one resource's failure is reported, not the batch's
            errors.append(f"{item.type}/{item.id}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        built.append((item, rows))
    return built, errors
