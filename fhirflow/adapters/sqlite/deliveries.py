"""``SqliteDeliveryQueue``: the embedded mode's durable webhook queue, FIFO per group, and the
delivery log (SQS FIFO's role in AWS: DESIGN.md §3).

Jobs live in ``delivery_jobs`` in queue order (``seq``). Each group with jobs has one row in
``delivery_groups`` naming its head job and when the group is next claimable (``due_ms``): the head's
``not_before_ms``, or the end of the lease while a deliverer holds it. Claiming reads the due
groups through an index on ``due_ms``, so its cost does not grow with a backlog that a dead
endpoint piles up in its own group, and only heads are ever handed out: order within a group and
isolation between groups follow from the table's shape. A crash leaves the lease to expire and the
same job (same ``job_id``) is claimed again: at least once.

Every write takes the database's write lock (``SqliteDatabase.write``: a thread lock and ``flock``
across processes), so dispatchers in several ``fhirflow serve`` processes never claim the same head;
inside an enclosing write transaction (``joined_write``) a write joins it instead, so a producer can
enqueue in the same commit that moves its own cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.transactions import joined_write
from fhirflow.delivery_ports import Attempt, ClaimedJob, DeliveryJob

SCHEMA = """
CREATE TABLE IF NOT EXISTS delivery_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    grp TEXT NOT NULL,
    job_id TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    not_before_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS delivery_jobs_group ON delivery_jobs (grp, seq);
CREATE TABLE IF NOT EXISTS delivery_groups (
    grp TEXT PRIMARY KEY,
    head_seq INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivery_groups_due ON delivery_groups (due_ms);
CREATE TABLE IF NOT EXISTS delivery_done (
    job_id TEXT PRIMARY KEY,
    done_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivery_done_time ON delivery_done (done_ms);
CREATE TABLE IF NOT EXISTS delivery_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grp TEXT NOT NULL,
    job_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER,
    latency_ms REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS delivery_log_group ON delivery_log (grp, id);
CREATE INDEX IF NOT EXISTS delivery_log_time ON delivery_log (at_ms);
"""


class SqliteDeliveryQueue:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.ensure_schema(SCHEMA)

    def enqueue(self, jobs: Sequence[DeliveryJob], *, now_ms: int | None = None) -> None:
        if not jobs:
            return
        created = _now_ms() if now_ms is None else now_ms
        with joined_write(self.db) as conn:
            for job in jobs:
                if conn.execute("SELECT 1 FROM delivery_done WHERE job_id = ?", (job.job_id,)).fetchone():
                    continue  # delivered already: a replayed producer changes nothing
                cursor = conn.execute(
                    "INSERT INTO delivery_jobs (grp, job_id, payload, created_ms, not_before_ms)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING",
                    (job.group, job.job_id, job.payload, created, job.not_before_ms),
                )
                if cursor.rowcount == 1:
                    conn.execute(
                        "INSERT INTO delivery_groups (grp, head_seq, due_ms) VALUES (?, ?, ?)"
                        " ON CONFLICT (grp) DO NOTHING",
                        (job.group, cursor.lastrowid, job.not_before_ms),
                    )

    def claim(self, *, now_ms: int, limit: int, lease_ms: int) -> list[ClaimedJob]:
        if limit <= 0 or self._next_due(now_ms) is None:
            return []  # the common idle case: no write lock taken
        with joined_write(self.db) as conn:
            rows = conn.execute(
                "SELECT j.grp, j.job_id, j.payload, j.attempts, j.created_ms, j.seq"
                " FROM delivery_groups g JOIN delivery_jobs j ON j.seq = g.head_seq"
                " WHERE g.due_ms <= ? ORDER BY g.due_ms LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            until = now_ms + lease_ms
            conn.executemany(
                "UPDATE delivery_groups SET due_ms = ?, leased = 1 WHERE grp = ?", [(until, row[0]) for row in rows]
            )
        return [
            ClaimedJob(grp, job_id, bytes(payload), attempts, created, until)
            for grp, job_id, payload, attempts, created, _ in rows
        ]

    def complete(self, job_id: str, *, now_ms: int | None = None) -> None:
        with joined_write(self.db) as conn:
            row = conn.execute("SELECT grp, seq FROM delivery_jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return
            group, seq = row
            conn.execute("DELETE FROM delivery_jobs WHERE seq = ?", (seq,))
            conn.execute(
                "INSERT OR REPLACE INTO delivery_done (job_id, done_ms) VALUES (?, ?)",
                (job_id, _now_ms() if now_ms is None else now_ms),
            )
            self._advance(conn, group)

    def retry(self, job_id: str, *, not_before_ms: int, attempts: int, leased_until_ms: int | None = None) -> None:
        with joined_write(self.db) as conn:
            row = conn.execute("SELECT grp, seq FROM delivery_jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return
            if leased_until_ms is not None:
                lease = conn.execute("SELECT due_ms, leased FROM delivery_groups WHERE grp = ?", (row[0],)).fetchone()
                if lease is None or tuple(lease) != (leased_until_ms, 1):
                    return  # the lease ran out and another deliverer holds the job now: it settles it
            conn.execute(
                "UPDATE delivery_jobs SET not_before_ms = ?, attempts = ? WHERE seq = ?",
                (not_before_ms, attempts, row[1]),
            )
            conn.execute(
                "UPDATE delivery_groups SET due_ms = ?, leased = 0 WHERE grp = ? AND head_seq = ?",
                (not_before_ms, row[0], row[1]),
            )

    def drop_group(self, group: str) -> int:
        with joined_write(self.db) as conn:
            removed = conn.execute("DELETE FROM delivery_jobs WHERE grp = ?", (group,)).rowcount
            conn.execute("DELETE FROM delivery_groups WHERE grp = ?", (group,))
            return int(removed)

    def log_attempt(self, group: str, job_id: str, attempt: Attempt, at_ms: int) -> None:
        with joined_write(self.db) as conn:
            conn.execute(
                "INSERT INTO delivery_log (grp, job_id, at_ms, outcome, status, latency_ms, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (group, job_id, at_ms, attempt.outcome, attempt.status, round(attempt.latency_ms, 3), attempt.error),
            )

    def attempts(self, group: str, *, limit: int = 20) -> list[dict[str, Any]]:
        rows = (
            self.db.connection()
            .execute(
                "SELECT job_id, at_ms, outcome, status, latency_ms, error FROM delivery_log"
                " WHERE grp = ? ORDER BY id DESC LIMIT ?",
                (group, limit),
            )
            .fetchall()
        )
        keys = ("job_id", "at_ms", "outcome", "status", "latency_ms", "error")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def prune(self, *, older_than_ms: int) -> None:
        with joined_write(self.db) as conn:
            conn.execute("DELETE FROM delivery_log WHERE at_ms < ?", (older_than_ms,))
            conn.execute("DELETE FROM delivery_done WHERE done_ms < ?", (older_than_ms,))

    def next_due_ms(self) -> int | None:
        return self._next_due(None)

    def depth(self, group: str | None = None) -> int:
        """Jobs waiting (in one group, or in all)."""
        conn = self.db.connection()
        if group is None:
            row = conn.execute("SELECT COUNT(*) FROM delivery_jobs").fetchone()
        else:
            row = conn.execute("SELECT COUNT(*) FROM delivery_jobs WHERE grp = ?", (group,)).fetchone()
        return int(row[0])

    def _next_due(self, now_ms: int | None) -> int | None:
        row = self.db.connection().execute("SELECT MIN(due_ms) FROM delivery_groups").fetchone()
        if row is None or row[0] is None or (now_ms is not None and row[0] > now_ms):
            return None
        return int(row[0])

    @staticmethod
    def _advance(conn: Any, group: str) -> None:
        """Make the group's next job its head, or forget the group when it is empty."""
        head = conn.execute(
            "SELECT seq, not_before_ms FROM delivery_jobs WHERE grp = ? ORDER BY seq LIMIT 1", (group,)
        ).fetchone()
        if head is None:
            conn.execute("DELETE FROM delivery_groups WHERE grp = ?", (group,))
        else:
            conn.execute(
                "UPDATE delivery_groups SET head_seq = ?, due_ms = ?, leased = 0 WHERE grp = ?",
                (head[0], head[1], group),
            )


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000
