"""The dependencies a use case receives, built from settings by each service's composition root.

Adapters are built lazily and only once per process; importing this module does no I/O and
imports no AWS SDK (the DynamoDB adapter imports boto3 when it is first built).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fhirflow.ports import AccessPolicy, AllowAll, Authenticator, Clock, ResourceStore, SystemClock
from fhirflow.settings import Settings

if TYPE_CHECKING:
    from fhirflow.adapters.sqlite.database import SqliteDatabase
    from fhirflow.cursor import CursorSigner


@dataclass
class Dependencies:
    settings: Settings
    store: ResourceStore
    cursors: CursorSigner
    clock: Clock = field(default_factory=SystemClock)
    policy: AccessPolicy = field(default_factory=AllowAll)
    authenticator: Authenticator | None = None
    """None: authorization is off (embedded mode on loopback only)."""


_databases: dict[str, SqliteDatabase] = {}
_lock = threading.Lock()


def sqlite_database(settings: Settings) -> SqliteDatabase:
    """One SqliteDatabase per file per process, shared by every embedded adapter."""
    from fhirflow.adapters.sqlite.database import SqliteDatabase

    key = str(settings.sqlite_path.resolve())
    with _lock:
        if key not in _databases:
            _databases[key] = SqliteDatabase(settings.sqlite_path)
        return _databases[key]


def build_store(settings: Settings) -> ResourceStore:
    if settings.store == "sqlite":
        from fhirflow.adapters.sqlite.store import SqliteResourceStore

        return SqliteResourceStore(sqlite_database(settings))
    raise ValueError(f"Unknown store '{settings.store}' (FHIRFLOW_STORE); expected 'sqlite'")


def build_dependencies(settings: Settings | None = None) -> Dependencies:
    from fhirflow.cursor import CursorSigner

    settings = settings or Settings.from_env()
    cursors = CursorSigner.from_secret_or_file(settings.cursor_secret, settings.data_dir / "cursor.key")
    return Dependencies(settings=settings, store=build_store(settings), cursors=cursors)
