"""The embedded subscriptions state store (fhirflow.subscription_ports), in the server's SQLite database.

Event numbers are allocated in one write transaction with the counter (``UPDATE ... events + 1``)
and keyed by the source event, so numbers are gapless and a replayed source event keeps its number.
"""

from __future__ import annotations

import json
from typing import Any

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.transactions import joined_write
from fhirflow.subscription_ports import (
    LoggedNotificationEvent,
    Secrets,
    SubscriptionMetrics,
    SubscriptionState,
    pairs,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscription_secrets (
    tenant TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
    headers TEXT NOT NULL, signing TEXT NOT NULL, owner TEXT NOT NULL,
    PRIMARY KEY (tenant, id, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscription_state (
    tenant TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
    spec TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    events INTEGER NOT NULL DEFAULT 0, last_sent_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscription_events (
    tenant TEXT NOT NULL, id TEXT NOT NULL, number INTEGER NOT NULL, source TEXT NOT NULL,
    at_ms INTEGER NOT NULL, focus_type TEXT NOT NULL, focus_id TEXT NOT NULL, focus_version INTEGER NOT NULL,
    operation TEXT NOT NULL,
    PRIMARY KEY (tenant, id, number)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS subscription_events_source ON subscription_events (tenant, id, source);
CREATE INDEX IF NOT EXISTS subscription_events_age ON subscription_events (at_ms);
CREATE TABLE IF NOT EXISTS subscription_metrics (
    tenant TEXT NOT NULL, id TEXT NOT NULL,
    matched INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    last_latency_ms REAL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscription_cursor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
"""


class SqliteSubscriptionState:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)

    # -- secrets ------------------------------------------------------------------------------

    def note_write(self, tenant: str, id_: str, version: int, at_ms: int) -> None:
        """Nothing to do: the embedded matcher reads the events table in commit order, so a
        Subscription's change is always handled before any change committed after it."""

    def put_secrets(self, tenant: str, id_: str, secrets: Secrets) -> None:
        with joined_write(self.db) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO subscription_secrets VALUES (?, ?, ?, ?, ?, ?)",
                (
                    tenant,
                    id_,
                    secrets.version,
                    json.dumps(secrets.headers),
                    json.dumps(secrets.signing),
                    json.dumps(secrets.owner),
                ),
            )

    def secrets(self, tenant: str, id_: str, version: int | None = None) -> Secrets | None:
        row = (
            self.db.connection()
            .execute(
                "SELECT version, headers, signing, owner FROM subscription_secrets WHERE tenant = ? AND id = ? "
                "AND version <= ? ORDER BY version DESC LIMIT 1",
                (tenant, id_, version if version is not None else 2**62),
            )
            .fetchone()
        )
        if row is None:
            return None
        return Secrets(row[0], pairs(json.loads(row[1])), pairs(json.loads(row[2])), json.loads(row[3]))

    def copy_secrets(self, tenant: str, id_: str, from_version: int, to_version: int) -> None:
        found = self.secrets(tenant, id_, from_version)
        if found is not None:
            self.put_secrets(tenant, id_, Secrets(to_version, found.headers, found.signing, found.owner))

    # -- metrics ------------------------------------------------------------------------------

    def count(
        self,
        tenant: str,
        id_: str,
        *,
        matched: int = 0,
        delivered: int = 0,
        failed: int = 0,
        latency_ms: float | None = None,
    ) -> None:
        with joined_write(self.db) as conn:  # one upsert: atomic, and inside the caller's transaction if any
            conn.execute(
                "INSERT INTO subscription_metrics VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, id) DO UPDATE SET "
                "matched = matched + excluded.matched, delivered = delivered + excluded.delivered, "
                "failed = failed + excluded.failed, "
                "last_latency_ms = coalesce(excluded.last_latency_ms, last_latency_ms)",
                (tenant, id_, matched, delivered, failed, latency_ms),
            )

    def metrics(self, tenant: str, id_: str) -> SubscriptionMetrics:
        row = (
            self.db.connection()
            .execute(
                "SELECT matched, delivered, failed, last_latency_ms FROM subscription_metrics "
                "WHERE tenant = ? AND id = ?",
                (tenant, id_),
            )
            .fetchone()
        )
        return SubscriptionMetrics(*row) if row else SubscriptionMetrics()

    # -- state --------------------------------------------------------------------------------

    def put_state(self, tenant: str, id_: str, *, version: int, spec: dict[str, Any], status: str) -> None:
        with joined_write(self.db) as conn:
            conn.execute(
                "INSERT INTO subscription_state (tenant, id, version, spec, status) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, id) DO UPDATE SET version = excluded.version, spec = excluded.spec, "
                "status = excluded.status",
                (tenant, id_, version, json.dumps(spec), status),
            )

    def state(self, tenant: str, id_: str) -> SubscriptionState | None:
        row = (
            self.db.connection()
            .execute(
                "SELECT tenant, id, version, spec, status, error, events, last_sent_ms FROM subscription_state "
                "WHERE tenant = ? AND id = ?",
                (tenant, id_),
            )
            .fetchone()
        )
        return _state(row) if row else None

    def states(self) -> list[SubscriptionState]:
        rows = (
            self.db.connection()
            .execute("SELECT tenant, id, version, spec, status, error, events, last_sent_ms FROM subscription_state")
            .fetchall()
        )
        return [_state(row) for row in rows]

    def set_status(self, tenant: str, id_: str, status: str, error: str | None) -> None:
        with joined_write(self.db) as conn:
            conn.execute(
                "UPDATE subscription_state SET status = ?, error = ? WHERE tenant = ? AND id = ?",
                (status, error, tenant, id_),
            )

    def forget(self, tenant: str, id_: str) -> None:
        with joined_write(self.db) as conn:
            for table in ("subscription_state", "subscription_secrets", "subscription_events", "subscription_metrics"):
                conn.execute(f"DELETE FROM {table} WHERE tenant = ? AND id = ?", (tenant, id_))

    # -- events -------------------------------------------------------------------------------

    def record_event(
        self, tenant: str, id_: str, *, source: str, at_ms: int, focus: tuple[str, str, int], operation: str
    ) -> tuple[int, bool]:
        with joined_write(self.db) as conn:
            row = conn.execute(
                "SELECT number FROM subscription_events WHERE tenant = ? AND id = ? AND source = ?",
                (tenant, id_, source),
            ).fetchone()
            if row is not None:
                return int(row[0]), False
            counted = conn.execute(
                "UPDATE subscription_state SET events = events + 1 WHERE tenant = ? AND id = ? RETURNING events",
                (tenant, id_),
            ).fetchone()
            if counted is None:
                raise LookupError(f"no state for subscription {tenant}/{id_}")
            number = int(counted[0])
            conn.execute(
                "INSERT INTO subscription_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tenant, id_, number, source, at_ms, focus[0], focus[1], focus[2], operation),
            )
            return number, True

    def events(self, tenant: str, id_: str, *, since: int, until: int, limit: int) -> list[LoggedNotificationEvent]:
        rows = (
            self.db.connection()
            .execute(
                "SELECT number, at_ms, focus_type, focus_id, focus_version, operation FROM subscription_events "
                "WHERE tenant = ? AND id = ? AND number BETWEEN ? AND ? ORDER BY number LIMIT ?",
                (tenant, id_, since, until, limit),
            )
            .fetchall()
        )
        return [LoggedNotificationEvent(*row) for row in rows]

    def mark_sent(self, tenant: str, id_: str, at_ms: int) -> None:
        with joined_write(self.db) as conn:
            conn.execute(
                "UPDATE subscription_state SET last_sent_ms = MAX(last_sent_ms, ?) WHERE tenant = ? AND id = ?",
                (at_ms, tenant, id_),
            )

    # -- the consumer's position --------------------------------------------------------------

    def cursor(self, name: str) -> int:
        row = self.db.connection().execute("SELECT seq FROM subscription_cursor WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def advance(self, name: str, seq: int) -> None:
        with joined_write(self.db) as conn:
            conn.execute(
                "INSERT INTO subscription_cursor VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                (name, seq),
            )

    def prune(self, *, events_older_than_ms: int) -> int:
        with joined_write(self.db) as conn:
            return conn.execute("DELETE FROM subscription_events WHERE at_ms < ?", (events_older_than_ms,)).rowcount


def _state(row: tuple[Any, ...]) -> SubscriptionState:
    return SubscriptionState(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7])
