"""The embedded mode's event bus and publication ledger.

``SqliteEventLog`` plays EventBridge: published ``ResourceChanged`` events are appended to the
``events`` table in order, for the local consumers (subscriptions) to read by sequence.
``SqliteEventLedger`` remembers which events were published, so that the outbox drain emits each
change once even when it is retried after a crash. ``SharedTransactionLedger`` replaces it when
the events go to ``SqliteEventLog`` in the outbox's own database: there a delivery, its events and
the outbox rows' removal commit together or not at all, so there is nothing to remember.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.transactions import joined_write

if TYPE_CHECKING:
    from fhirflow_contracts import ResourceChanged

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    source TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    tenant TEXT NOT NULL,
    detail TEXT NOT NULL,
    published_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_ledger (
    event_id TEXT PRIMARY KEY,
    recorded_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_ledger_age ON event_ledger (recorded_at);
"""

LEDGER_RETENTION_MS = 7 * 24 * 3600 * 1000
"""How long a publication is remembered: far longer than any retry of the outbox takes."""
_PRUNE_EVERY = 1000


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    seq: int
    event_id: str
    source: str
    detail_type: str
    tenant: str
    detail: str


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqliteEventLog:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)

    def publish(self, events: Sequence[ResourceChanged]) -> None:
        if not events:
            return
        now = _now_ms()
        rows = [
            (e.metadata.event_id, e.metadata.source, e.metadata.event_type, e.tenant, e.to_json(), now) for e in events
        ]
        with joined_write(self.db) as conn:
            conn.executemany(
                "INSERT INTO events (event_id, source, detail_type, tenant, detail, published_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def read(self, *, after_seq: int = 0, limit: int = 100) -> list[LoggedEvent]:
        """Events after a consumer's position, oldest first."""
        rows = (
            self.db.connection()
            .execute(
                "SELECT seq, event_id, source, detail_type, tenant, detail FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
            .fetchall()
        )
        return [LoggedEvent(*row) for row in rows]


class SqliteEventLedger:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)
        self._recorded = 0

    def published(self, events: Sequence[ResourceChanged]) -> set[str]:
        if not events:
            return set()
        ids = list({e.metadata.event_id for e in events})
        marks = ",".join("?" * len(ids))
        rows = (
            self.db.connection()
            .execute(f"SELECT event_id FROM event_ledger WHERE event_id IN ({marks})", ids)
            .fetchall()
        )
        return {row[0] for row in rows}

    def record(self, events: Sequence[ResourceChanged]) -> None:
        if not events:
            return
        now = _now_ms()
        with joined_write(self.db) as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO event_ledger (event_id, recorded_at) VALUES (?, ?)",
                [(e.metadata.event_id, now) for e in events],
            )
            self._recorded += len(events)
            if self._recorded >= _PRUNE_EVERY:
                self._recorded = 0
                conn.execute("DELETE FROM event_ledger WHERE recorded_at < ?", (now - LEDGER_RETENTION_MS,))


class SharedTransactionLedger:
    """The ledger of a SQLite outbox whose events go to ``SqliteEventLog`` in the same database.

    Every delivery runs in one SQLite transaction (``SqliteOutbox.delivery``, or the writer's own
    under a SAVEPOINT): the index rows, the published events and the removal of the delivered
    outbox rows commit together. A change is delivered again only if that transaction rolled
    back, and then its events were rolled back with it, so no event is ever published twice and
    the drain need not look anything up or record anything (a SELECT and a random B-tree insert
    per change, inside the write lock, with ``SqliteEventLedger``)."""

    def published(self, events: Sequence[ResourceChanged]) -> set[str]:
        return set()

    def record(self, events: Sequence[ResourceChanged]) -> None:
        return None
