"""One SQLite database file shared by the embedded adapters.

WAL mode lets readers proceed while one writer commits; ``BEGIN IMMEDIATE`` takes the write
lock up front so that a read-check-write (the optimistic concurrency check) cannot interleave
with another writer. Each thread gets its own connection, as sqlite3 requires.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # NORMAL in WAL mode is durable against application crashes; a power loss may lose the
    # last transactions but never corrupts the database. Right for the embedded mode.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-65536",
    "PRAGMA mmap_size=268435456",
    # Each write adds dozens of search-index rows; checkpointing the WAL every 1,000 pages (the
    # default) made a request pay for a checkpoint every few writes. The worker loop checkpoints
    # passively in the background (SqliteDatabase.checkpoint); this is the ceiling.
    "PRAGMA wal_autocheckpoint=10000",
)


class SqliteDatabase:
    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 30_000) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schemas: list[str] = []
        self._writers = threading.RLock()
        self._lock_file: BinaryIO | None = None
        self._lock_pid = 0

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            # Under the writers' lock: on a new database, ``journal_mode=WAL`` converts the file,
            # which upgrades the pragma's own read lock to a write lock, and SQLite does not wait
            # on that upgrade (no busy handler: it would deadlock), so two processes opening a new
            # data directory at once had one fail at once with "database is locked".
            with self._writers, self._process_lock():
                for pragma in _PRAGMAS:
                    conn.execute(pragma)
            self._local.conn = conn
        return conn

    def ensure_schema(self, ddl: str) -> None:
        """Create tables once per process (idempotent DDL), as a writer among the others."""
        with self._schema_lock:
            if ddl in self._schemas:
                return
            conn = self.connection()
            with self._writers, self._process_lock():
                conn.executescript(ddl)
            self._schemas.append(ddl)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all statements inside commit together or not at all.

        Writers queue on a lock (a thread lock, and ``flock`` on a file beside the database for
        other processes) before ``BEGIN IMMEDIATE``: SQLite's own busy handler polls with sleeps of
        up to 100 ms, so a writer could sleep long after the lock was free; a queued writer
        starts the moment the previous one commits. SQLite's lock still guards correctness."""
        conn = self.connection()
        with self._writers, self._process_lock():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        if fcntl is None or self.path == ":memory:":
            yield
            return
        if self._lock_file is None or self._lock_pid != os.getpid():  # a forked child needs its own
            self._lock_file = open(self.path + ".writer-lock", "a+b")  # noqa: SIM115 (held for the process's life)
            self._lock_pid = os.getpid()
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)

    def checkpoint(self) -> None:
        """Copy the WAL back into the database without blocking readers or writers (PASSIVE)."""
        self.connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
