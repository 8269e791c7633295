"""The embedded reindex adapters: ``SqliteReindexJobStore`` and ``SqliteReindexer``.

Jobs live in the database file, so a job survives a restart of ``fhirflow serve`` and goes on
from the last batch it saved. The walk reads the index's own table (``search_index``: every
current resource with its body, or the store's body when the store holds it inline) in (type, id)
keyset order, so it needs nothing from the store and works whichever store feeds the index.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.index import IndexedResource, SqliteSearchIndex
from fhirflow.reindex_ports import ReindexBatch, ReindexJob

SCHEMA = """
CREATE TABLE IF NOT EXISTS reindex_jobs (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    status TEXT NOT NULL,
    created INTEGER NOT NULL,
    worker TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    doc BLOB NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reindex_jobs_open ON reindex_jobs (status, created);
"""
_OPEN = ("queued", "running")


class SqliteReindexJobStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)

    def create(self, job: ReindexJob) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO reindex_jobs (tenant, id, revision, status, created, doc) VALUES (?, ?, ?, ?, ?, ?)",
                (job.tenant, job.id, job.revision, job.status, job.created_ms, orjson.dumps(job.to_json())),
            )

    def get(self, tenant: str, job_id: str) -> ReindexJob | None:
        row = (
            self.db.connection()
            .execute("SELECT doc FROM reindex_jobs WHERE tenant = ? AND id = ?", (tenant, job_id))
            .fetchone()
        )
        return None if row is None else ReindexJob.from_json(orjson.loads(row[0]))

    def claim(self, worker: str, now_ms: int, lease_ms: int) -> ReindexJob | None:
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT tenant, id, doc FROM reindex_jobs WHERE status IN (?, ?) "
                "AND (lease_until < ? OR worker = ?) ORDER BY created LIMIT 1",
                (*_OPEN, now_ms, worker),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE reindex_jobs SET worker = ?, lease_until = ? WHERE tenant = ? AND id = ?",
                (worker, now_ms + lease_ms, row[0], row[1]),
            )
        return ReindexJob.from_json(orjson.loads(row[2]))

    def claim_job(self, tenant: str, job_id: str, revision: int, worker: str, now_ms: int, lease_ms: int) -> bool:
        with self.db.write() as conn:
            cursor = conn.execute(
                "UPDATE reindex_jobs SET worker = ?, lease_until = ? WHERE tenant = ? AND id = ? AND revision = ? "
                "AND status IN (?, ?) AND (lease_until < ? OR worker = ?)",
                (worker, now_ms + lease_ms, tenant, job_id, revision, *_OPEN, now_ms, worker),
            )
            return cursor.rowcount == 1

    def save(self, job: ReindexJob, worker: str, lease_until_ms: int) -> ReindexJob | None:
        stored = ReindexJob.from_json({**job.to_json(), "revision": job.revision + 1})
        with self.db.write() as conn:
            cursor = conn.execute(
                "UPDATE reindex_jobs SET revision = ?, status = ?, lease_until = ?, doc = ? "
                "WHERE tenant = ? AND id = ? AND revision = ? AND worker = ?",
                (
                    stored.revision,
                    stored.status,
                    lease_until_ms,
                    orjson.dumps(stored.to_json()),
                    job.tenant,
                    job.id,
                    job.revision,
                    worker,
                ),
            )
            return stored if cursor.rowcount == 1 else None


class SqliteReindexer:
    """The embedded index's side of a reindex job (:class:`fhirflow.reindex_ports.Reindexer`)."""

    def __init__(self, index: SqliteSearchIndex) -> None:
        self.index = index
        self.db = index.db

    def catalog_state(self, tenant: str) -> int:
        return self.index.catalog.generation(tenant)

    def total(self, tenant: str, types: Sequence[str]) -> int:
        where, params = _type_filter(types)
        row = (
            self.db.connection()
            .execute(
                f"SELECT COUNT(*) FROM search_index i WHERE i.tenant = ? AND i.deleted = 0{where}", (tenant, *params)
            )
            .fetchone()
        )
        return int(row[0])

    def batch(self, tenant: str, types: Sequence[str], after: tuple[str, str] | None, limit: int) -> ReindexBatch:
        where, params = _type_filter(types)
        body = "i.body"
        join = ""
        if self.index.bodies_from_store:  # the index keeps no copy of a body the store holds inline
            body = "COALESCE(i.body, v.body)"
            join = (
                " LEFT JOIN versions v ON i.body IS NULL AND v.tenant = i.tenant AND v.type = i.type "
                "AND v.id = i.id AND v.version = i.version"
            )
        start = after or ("", "")
        rows = (
            self.db.connection()
            .execute(
                f"SELECT i.type, i.id, i.version, i.last_updated, {body} FROM search_index i{join} "
                f"WHERE i.tenant = ? AND i.deleted = 0{where} AND (i.type, i.id) > (?, ?) "
                "ORDER BY i.type, i.id LIMIT ?",
                (tenant, *params, *start, limit),
            )
            .fetchall()
        )
        if not rows:
            return ReindexBatch(position=after, processed=0, done=True)
        current: list[IndexedResource] = []
        errors: list[str] = []
        for rtype, id_, version, last_updated, raw in rows:
            if raw is None:
                errors.append(f"{rtype}/{id_}: the index holds no body for version {version}")
                continue
            current.append(IndexedResource(rtype, id_, int(version), int(last_updated), orjson.loads(raw)))
        done, skipped, failed = self.index.reindex(tenant, current)
        last = rows[-1]
        return ReindexBatch(
            position=(str(last[0]), str(last[1])),
            processed=done,
            skipped=skipped,
            errors=(*errors, *failed),
            done=len(rows) < limit,
        )

    def finish(self, tenant: str, types: Sequence[str], url: str | None, since: int) -> tuple[str, ...]:
        with self.db.write() as conn:
            return self.index.catalog.mark_searchable(conn, tenant, types, url, since)


def _type_filter(types: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    if not types:
        return "", ()
    return " AND i.type IN (SELECT value FROM json_each(?))", (orjson.dumps(list(types)).decode(),)
