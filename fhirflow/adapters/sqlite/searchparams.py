"""``SqliteSearchParamCatalog``: each tenant's runtime search parameters, next to the embedded index.

Three tables, all written in the transactions of the index itself:

- ``search_param_custom``: the tenant's SearchParameter resources as the index last saw them
  (:class:`~fhirflow.adapters.sqlite.index.SqliteSearchIndex` records each one it indexes), with
  the digest of their definition and ``since``, the generation at which that definition began;
- ``search_param_searchable``: (id, since, base) of the parameters a reindex covered. A marking
  names the definition it was made for, so a changed definition is unsearchable until the next
  reindex, and a deleted and re-created one too (data written in between lacks its values);
- ``search_param_generation``: one counter per tenant, bumped by every change to the two others.

A tenant's registries are cached per process with the generation they were built at; each use
reads the counter (one primary-key lookup) and rebuilds only when it moved, so processes that
share the database see each other's changes on their next request. Tenants without parameters of
their own share the official registry.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import orjson

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.reindex_ports import CustomParam
from fhirflow.searchparams.registry import Registry
from fhirflow.searchparams.tenant import TenantParams, official, tenant_params, to_mark

SCHEMA = """
CREATE TABLE IF NOT EXISTS search_param_generation (
    tenant TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS search_param_custom (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    since INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS search_param_searchable (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    since INTEGER NOT NULL,
    base TEXT NOT NULL,
    PRIMARY KEY (tenant, id, since, base)
) WITHOUT ROWID;
"""


def _generation(conn: sqlite3.Connection, tenant: str) -> int:
    row = conn.execute("SELECT generation FROM search_param_generation WHERE tenant = ?", (tenant,)).fetchone()
    return int(row[0]) if row else 0


def _bump(conn: sqlite3.Connection, tenant: str) -> int:
    row = conn.execute(
        "INSERT INTO search_param_generation (tenant, generation) VALUES (?, 1) "
        "ON CONFLICT (tenant) DO UPDATE SET generation = generation + 1 RETURNING generation",
        (tenant,),
    ).fetchone()
    return int(row[0])


class SqliteSearchParamCatalog:
    """The :class:`fhirflow.reindex_ports.SearchParamCatalog` of the embedded index."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)
        self._cache: dict[str, TenantParams] = {}
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------------

    def generation(self, tenant: str, conn: sqlite3.Connection | None = None) -> int:
        return _generation(conn or self.db.connection(), tenant)

    def params(self, tenant: str, conn: sqlite3.Connection | None = None) -> TenantParams:
        """The tenant's parameters as of ``conn``'s transaction (or now)."""
        conn = conn or self.db.connection()
        generation = _generation(conn, tenant)
        with self._lock:
            cached = self._cache.get(tenant)
        if cached is not None and cached.generation == generation:
            return cached
        if generation == 0:
            built = official()
        elif conn.in_transaction:
            built = self._build(conn, tenant)
        else:
            conn.execute("BEGIN")  # the counter and the rows from one snapshot
            try:
                built = self._build(conn, tenant)
            finally:
                conn.execute("COMMIT")
        with self._lock:
            self._cache[tenant] = built
        return built

    def _build(self, conn: sqlite3.Connection, tenant: str) -> TenantParams:
        generation = _generation(conn, tenant)
        rows = conn.execute("SELECT id, since, body FROM search_param_custom WHERE tenant = ?", (tenant,)).fetchall()
        marks = {
            (str(id_), int(since), str(base))
            for id_, since, base in conn.execute(
                "SELECT id, since, base FROM search_param_searchable WHERE tenant = ?", (tenant,)
            )
        }
        definitions = {str(id_): (int(since), orjson.loads(body)) for id_, since, body in rows}
        return tenant_params(generation, definitions, marks)

    def index_registry(self, tenant: str, conn: sqlite3.Connection | None = None) -> Registry:
        return self.params(tenant, conn).index

    def last_index_registry(self, tenant: str) -> Registry:
        """The tenant's write registry as this process last saw it, without reading the database:
        for work done ahead of a write (``SqliteSearchIndex.prepare``), which the write checks
        against :meth:`index_registry` inside its transaction and redoes if it changed."""
        with self._lock:
            cached = self._cache.get(tenant)
        return cached.index if cached is not None else self.index_registry(tenant)

    def searchable_registry(self, tenant: str) -> Registry:
        return self.params(tenant).search

    def custom_params(self, tenant: str) -> tuple[CustomParam, ...]:
        return self.params(tenant).custom

    # -- writing (inside the caller's transaction) ------------------------------------------------

    def record(
        self, conn: sqlite3.Connection, tenant: str, id_: str, version: int, resource: dict[str, Any] | None
    ) -> None:
        """The index took version ``version`` of SearchParameter ``id_`` (None: deleted)."""
        from fhirflow.searchparams.custom import definition_digest

        old = conn.execute(
            "SELECT digest, since FROM search_param_custom WHERE tenant = ? AND id = ?", (tenant, id_)
        ).fetchone()
        generation = _bump(conn, tenant)
        if resource is None:
            conn.execute("DELETE FROM search_param_custom WHERE tenant = ? AND id = ?", (tenant, id_))
            conn.execute("DELETE FROM search_param_searchable WHERE tenant = ? AND id = ?", (tenant, id_))
            return
        digest = definition_digest(resource)
        since = int(old[1]) if old is not None and old[0] == digest else generation
        conn.execute(
            "INSERT INTO search_param_custom (tenant, id, version, digest, since, body) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant, id) DO UPDATE SET version = excluded.version, digest = excluded.digest, "
            "since = excluded.since, body = excluded.body",
            (tenant, id_, version, digest, since, orjson.dumps(resource)),
        )
        conn.execute(
            "DELETE FROM search_param_searchable WHERE tenant = ? AND id = ? AND since != ?", (tenant, id_, since)
        )

    def mark_searchable(
        self, conn: sqlite3.Connection, tenant: str, types: Sequence[str], url: str | None, since: int
    ) -> tuple[str, ...]:
        """Mark the parameters a reindex of ``types`` that started at generation ``since`` covered;
        ``Base.code`` of each one that is searchable now."""
        marked: list[str] = []
        fresh = False
        for param, defined in to_mark(self.params(tenant, conn), types, url, since):
            cursor = conn.execute(
                "INSERT OR IGNORE INTO search_param_searchable (tenant, id, since, base) VALUES (?, ?, ?, ?)",
                (tenant, param.id, defined, param.base),
            )
            fresh = fresh or cursor.rowcount > 0
            marked.append(f"{param.base}.{param.code}")
        if fresh:
            _bump(conn, tenant)
        return tuple(marked)


_catalogs: weakref.WeakKeyDictionary[SqliteDatabase, SqliteSearchParamCatalog] = weakref.WeakKeyDictionary()
_catalogs_lock = threading.Lock()


def catalog_for(db: SqliteDatabase) -> SqliteSearchParamCatalog:
    """The process's catalog of ``db``: the index, the search service and /metadata share one cache."""
    with _catalogs_lock:
        found = _catalogs.get(db)
        if found is None:
            found = _catalogs[db] = SqliteSearchParamCatalog(db)
        return found
