"""Writes that join an enclosing transaction.

The outbox drain runs index-sync's writes (search index, event log, publication ledger) and the
removal of the delivered outbox rows as one SQLite transaction: one commit per drain instead of
one per adapter call, and the event log, ledger and outbox can never disagree. Each adapter still
works on its own, outside a drain, in a transaction of its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from fhirflow.adapters.sqlite.database import SqliteDatabase


@contextmanager
def joined_write(db: SqliteDatabase) -> Iterator[sqlite3.Connection]:
    """The enclosing write transaction of this thread's connection, or a new one."""
    conn = db.connection()
    if conn.in_transaction:
        yield conn
        return
    with db.write() as own:
        yield own
