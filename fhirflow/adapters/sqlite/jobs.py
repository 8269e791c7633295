"""The embedded mode's job adapters: ``SqliteExportJobStore`` (bulk export jobs) and
``SqliteJobQueue`` (the export queue that the local worker loop drains, SQS's part).

Both live in the embedded database file, so jobs and queued work survive a restart of
``fhirflow serve`` like the resources do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from fhirflow.adapters.sqlite.database import SqliteDatabase

if TYPE_CHECKING:
    from pydantic import BaseModel

    from fhirflow_contracts import ExportJob

Command = TypeVar("Command", bound="BaseModel")
RETRY_CAP_MS = 30_000
"""A failed step comes back after 1, 2, 4 … s, at most this: the embedded stand-in for SQS's
visibility timeout, short enough that a local job resumes soon after its cause is gone."""

logger = logging.getLogger("fhirflow.jobs")

SCHEMA = """
CREATE TABLE IF NOT EXISTS export_jobs (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    receives INTEGER NOT NULL DEFAULT 0,
    visible_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS job_queue_visible ON job_queue (queue, visible_at, seq);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqliteExportJobStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)

    def create(self, job: ExportJob) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO export_jobs (tenant, id, revision, doc) VALUES (?, ?, ?, ?)",
                (job.tenant, job.id, job.revision, job.to_json()),
            )

    def get(self, tenant: str, job_id: str) -> ExportJob | None:
        from fhirflow_contracts import ExportJob

        row = (
            self.db.connection()
            .execute("SELECT doc FROM export_jobs WHERE tenant = ? AND id = ?", (tenant, job_id))
            .fetchone()
        )
        return None if row is None else ExportJob.from_json(row[0])

    def replace(self, job: ExportJob) -> ExportJob | None:
        stored = job.model_copy(update={"revision": job.revision + 1})
        with self.db.write() as conn:
            cursor = conn.execute(
                "UPDATE export_jobs SET revision = ?, doc = ? WHERE tenant = ? AND id = ? AND revision = ?",
                (stored.revision, stored.to_json(), job.tenant, job.id, job.revision),
            )
            return stored if cursor.rowcount == 1 else None


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    seq: int
    body: str
    receives: int
    """How many times this message has been received, this time included (SQS's ApproximateReceiveCount)."""


class SqliteJobQueue:
    """One named queue in the embedded database, with SQS's semantics where they matter: a received
    message is invisible for ``visibility_ms`` and comes back unless deleted; receives are counted."""

    def __init__(self, db: SqliteDatabase, queue: str, *, visibility_ms: int = 300_000) -> None:
        self.db = db
        self.queue = queue
        self.visibility_ms = visibility_ms
        db.ensure_schema(SCHEMA)

    def send(self, body: str, *, delay_seconds: int = 0) -> None:
        visible_at = _now_ms() + max(delay_seconds, 0) * 1000
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO job_queue (queue, body, visible_at) VALUES (?, ?, ?)", (self.queue, body, visible_at)
            )

    def receive(self, limit: int = 1) -> list[QueuedMessage]:
        """Up to ``limit`` visible messages, oldest first, made invisible for the visibility timeout."""
        now = _now_ms()
        with self.db.write() as conn:
            rows = conn.execute(
                "SELECT seq, body, receives FROM job_queue WHERE queue = ? AND visible_at <= ? ORDER BY seq LIMIT ?",
                (self.queue, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE job_queue SET receives = receives + 1, visible_at = ? WHERE seq = ?",
                [(now + self.visibility_ms, row[0]) for row in rows],
            )
        return [QueuedMessage(seq, body, receives + 1) for seq, body, receives in rows]

    def delete(self, seq: int) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM job_queue WHERE seq = ?", (seq,))

    def retry_later(self, seq: int, delay_ms: int) -> None:
        """Make a failed message visible again after ``delay_ms`` (instead of the full visibility timeout)."""
        with self.db.write() as conn:
            conn.execute("UPDATE job_queue SET visible_at = ? WHERE seq = ?", (_now_ms() + delay_ms, seq))

    def drain(self, command: type[Command], step: Callable[[Command, QueuedMessage], object], *, what: str) -> int:
        """SQS's and a worker Lambda's part in the embedded mode: run ``step`` on every visible
        message, one at a time, continuations included; returns how many were done. A message that
        is not a ``command`` is dropped (as a redrive would, with an error logged); a step that
        raises puts its message back after a backoff and ends this drain."""
        from pydantic import ValidationError

        done = 0
        while True:
            messages = self.receive(1)
            if not messages:
                return done
            message = messages[0]
            try:
                parsed = command.model_validate_json(message.body)
            except ValidationError:
                logger.error("dropping a message that is not a %s", command.__name__, extra={"seq": message.seq})
                self.delete(message.seq)
                continue
            try:
                step(parsed, message)
            except Exception:
                logger.exception("%s failed; it will be retried", what, extra={"queue": self.queue})
                self.retry_later(message.seq, min(1000 * 2**message.receives, RETRY_CAP_MS))
                return done
            self.delete(message.seq)
            done += 1

    def depth(self) -> int:
        row = self.db.connection().execute("SELECT COUNT(*) FROM job_queue WHERE queue = ?", (self.queue,)).fetchone()
        return int(row[0])
