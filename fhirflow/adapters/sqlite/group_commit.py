"""Group commit: concurrent writers of one process share a SQLite transaction.

A commit's cost is mostly fixed: every B-tree page a write touches is written to the WAL once per
transaction, and one create touches some fifty (the version, its head and outbox rows, the search
rows in a dozen value indexes, the full-text index, the change event). Writers that arrive while
a transaction is being committed therefore queue, and the next transaction carries all of them:
pages shared by their rows are written once, and the BEGIN/COMMIT, the outbox drain and the event
ledger lookups are paid once per group instead of once per write.

Each writer's change set still succeeds or fails on its own: it is applied under a SAVEPOINT, and a
conflict (``VersionConflict``, a taken uniqueness claim) rolls back to that savepoint and is raised
in that writer's thread only. The others commit. A failure of the transaction itself (the drain hook
or COMMIT raising) fails every change set of the group; nothing of it was committed.

The writer that finds nobody committing leads: it takes the write lock, then commits the queue as
it finds it (so writers that arrived while it waited for the lock come along), then hands
leadership to the first writer that queued meanwhile, so that no request thread keeps committing
for others after its own work is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

    from fhirflow.adapters.sqlite.database import SqliteDatabase
    from fhirflow.ports import Change

ApplyChangeSet = Callable[["sqlite3.Connection", "PendingWrite"], None]
InTransaction = Callable[[Sequence["Change"]], None]


@dataclass(eq=False)
class PendingWrite:
    """One writer's change set waiting for a transaction."""

    changes: Sequence[Change]
    offloaded: dict[int, str]
    """Index of a change → key of its body in the blob store (too large to keep inline)."""
    error: BaseException | None = None
    lead: bool = False
    """Set when this writer is handed the leadership instead of a result."""
    finished: bool = False
    wake: threading.Event = field(default_factory=threading.Event)


class GroupCommit:
    def __init__(self, db: SqliteDatabase, apply: ApplyChangeSet) -> None:
        self.db = db
        self.apply = apply
        self._lock = threading.Lock()
        self._queue: list[PendingWrite] = []
        self._leading = False

    def commit(self, pending: PendingWrite, in_transaction: InTransaction | None) -> None:
        """Commit ``pending`` (alone or with others'); raises its own failure."""
        with self._lock:
            self._queue.append(pending)
            lead = not self._leading
            self._leading = True
        while not lead:
            pending.wake.wait()
            pending.wake.clear()
            if pending.finished:
                break
            lead = pending.lead
        if lead:
            self._lead(in_transaction)
        if pending.error is not None:
            raise pending.error

    def _lead(self, in_transaction: InTransaction | None) -> None:
        group: list[PendingWrite] = []
        try:
            # The write lock first, the queue second: writers that arrive while this one waits
            # for the lock (held by another process, or another writer of this one) join its group.
            with self.db.write() as conn:
                with self._lock:
                    group, self._queue = self._queue, []
                self._apply_group(conn, group, in_transaction)
        except BaseException as error:  # nothing of the group was committed
            if not group:  # it failed before taking the queue: those writers were its group
                with self._lock:
                    group, self._queue = self._queue, []
            for member in group:
                if member.error is None:
                    member.error = error
            if not isinstance(error, Exception):
                raise
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
            for member in group:
                member.finished = True
                member.wake.set()
            if successor is not None:
                successor.lead = True
                successor.wake.set()

    def _apply_group(
        self, conn: sqlite3.Connection, group: list[PendingWrite], in_transaction: InTransaction | None
    ) -> None:
        committed: list[Change] = []
        for member in group:
            conn.execute("SAVEPOINT change_set")
            try:
                self.apply(conn, member)
            except Exception as error:  # this writer's conflict; the others go on
                conn.execute("ROLLBACK TO change_set")
                member.error = error
            conn.execute("RELEASE change_set")
            if member.error is None:
                committed.extend(member.changes)
        if in_transaction is not None and committed:
            in_transaction(committed)
