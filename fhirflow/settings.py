"""Settings from the environment, the same way in Lambda and in the embedded mode.

A plain dataclass rather than pydantic-settings: it is read on every cold start, and
importing pydantic would add tens of milliseconds to each handler's import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True, slots=True)
class Settings:
    store: str = "sqlite"
    """``sqlite`` (embedded) or ``dynamodb``."""
    data_dir: Path = field(default_factory=lambda: Path(".fhirflow"))
    base_url: str | None = None
    """The public FHIR base URL; derived from the request's Host header when unset."""
    max_body_bytes: int = 16 * 1024 * 1024
    update_create: bool = True
    """Allow PUT to create a resource with a client-chosen id (http.html#upsert)."""
    history_default_count: int = 50
    history_max_count: int = 1000
    max_bundle_entries: int = 10_000
    """Entries per batch/transaction; the default loads every Synthea patient as one transaction."""
    cursor_secret: str | None = None
    """HMAC key for paging cursors; the embedded mode keeps a generated one in the data dir."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            store=os.environ.get("FHIRFLOW_STORE", "sqlite"),
            data_dir=Path(os.environ.get("FHIRFLOW_DATA_DIR", ".fhirflow")),
            base_url=os.environ.get("FHIRFLOW_BASE_URL") or None,
            max_body_bytes=_int("FHIRFLOW_MAX_BODY_BYTES", 16 * 1024 * 1024),
            update_create=_flag("FHIRFLOW_UPDATE_CREATE", True),
            history_default_count=_int("FHIRFLOW_HISTORY_DEFAULT_COUNT", 50),
            history_max_count=_int("FHIRFLOW_HISTORY_MAX_COUNT", 1000),
            max_bundle_entries=_int("FHIRFLOW_MAX_BUNDLE_ENTRIES", 10_000),
            cursor_secret=os.environ.get("FHIRFLOW_CURSOR_SECRET") or None,
        )

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "fhirflow.sqlite3"
