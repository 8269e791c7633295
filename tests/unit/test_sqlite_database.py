"""The embedded database file: opening a brand-new data directory from several processes at once
(issue 14, defect 8: ``fhirflow import`` into a new directory lost a bundle to "database is locked")."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.store import SCHEMA


def test_opening_a_new_database_waits_for_another_process_setting_it_up(tmp_path: Path) -> None:
    """Another process opening the same new file holds, for a moment, the cross-process writers'
    lock and, inside it, SQLite's write lock of its journal-mode change. Opening the file now must
    wait for it and go on, not fail at once: SQLite does not wait on the read-to-write upgrade
    that ``PRAGMA journal_mode=WAL`` makes on a new file."""
    path = tmp_path / "new" / "fhirflow.sqlite3"
    other = SqliteDatabase(path)  # the other process's handle: its own lock-file description
    outcome: list[object] = []

    def open_and_write() -> None:
        db = SqliteDatabase(path)
        try:
            db.ensure_schema(SCHEMA)
            with db.write() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
                conn.execute("INSERT INTO probe VALUES (1)")
            outcome.append("ok")
        except sqlite3.OperationalError as exc:
            outcome.append(exc)
        finally:
            db.close()

    with other._writers, other._process_lock():  # stands for the other process
        setting_up = sqlite3.connect(path, isolation_level=None, timeout=30)
        setting_up.execute("BEGIN IMMEDIATE")  # its journal-mode change, in progress
        opener = threading.Thread(target=open_and_write)
        opener.start()
        opener.join(0.5)
        setting_up.execute("PRAGMA user_version = 1")
        setting_up.execute("COMMIT")
        setting_up.close()
    opener.join(30)
    assert outcome == ["ok"]
