"""``SqliteOutbox``: the embedded mode's change stream.

``SqliteResourceStore`` writes one ``outbox`` row per committed change in the same transaction
as the change itself, so the outbox holds exactly the committed changes, in commit order. This
adapter reads them with their bodies (as the DynamoDB stream's NEW_IMAGE carries the version
item) and removes the ones that were delivered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.store import SCHEMA as STORE_SCHEMA
from fhirflow.adapters.sqlite.transactions import joined_write
from fhirflow.ports import BlobStore, CommittedChange, ResourceVersion

VersionKey = tuple[str, str, str, int]
"""(tenant, type, id, version)"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    change: CommittedChange


class SqliteOutbox:
    def __init__(self, db: SqliteDatabase, *, blobs: BlobStore | None = None) -> None:
        self.db = db
        self.blobs = blobs
        db.ensure_schema(STORE_SCHEMA)

    def pending(
        self, limit: int = 500, *, known: Mapping[VersionKey, CommittedChange] | None = None
    ) -> list[OutboxEntry]:
        """The oldest undelivered changes, in commit order. ``known``: changes the caller holds in
        memory (the writer's own, just committed), taken from there rather than read back."""
        if known:
            heads = (
                self.db.connection()
                .execute("SELECT seq, tenant, type, id, version FROM outbox ORDER BY seq LIMIT ?", (limit,))
                .fetchall()
            )
            found = [(seq, known.get((tenant, type_, id_, version))) for seq, tenant, type_, id_, version in heads]
            if all(change is not None for _, change in found):
                return [OutboxEntry(seq, change) for seq, change in found if change is not None]
        rows = (
            self.db.connection()
            .execute(
                "SELECT o.seq, o.tenant, o.type, o.id, o.version, o.last_updated, o.request_id, "
                "v.deleted, v.method, v.body, v.blob, v.created "
                "FROM outbox o JOIN versions v "
                "ON v.tenant = o.tenant AND v.type = o.type AND v.id = o.id AND v.version = o.version "
                "ORDER BY o.seq LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        entries = []
        for seq, tenant, type_, id_, version, last_updated, request_id, deleted, method, inline, blob, created in rows:
            body = inline
            if blob is not None:
                assert self.blobs is not None, "a version's body is in the blob store, but none is configured"
                body = self.blobs.get(blob)
            stored = ResourceVersion(
                tenant, type_, id_, version, last_updated, bool(deleted), method, body, created=bool(created)
            )
            entries.append(OutboxEntry(seq, CommittedChange(stored, request_id)))
        return entries

    def remove(self, seqs: Sequence[int]) -> None:
        """Forget delivered changes."""
        if not seqs:
            return
        with joined_write(self.db) as conn:
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs])

    @contextmanager
    def delivery(self) -> Iterator[None]:
        """One write transaction around reading, delivering and removing a batch: what the
        SQLite adapters of the delivery write inside it commits with the removal, at once."""
        with self.db.write():
            yield

    def size(self) -> int:
        row = self.db.connection().execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(row[0])
