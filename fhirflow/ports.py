"""Ports: what the use cases need from the outside world, as ``typing.Protocol``s.

Every port has an embedded adapter (SQLite, files) and an AWS adapter; both pass the same
contract tests. Domain code receives adapters; it never chooses one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Operation = Literal["create", "update", "delete"]
Method = Literal["POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    """One version of one resource, as stored (http://hl7.org/fhir/R4/resource.html#versions).

    ``body`` is the resource's JSON with ``meta.versionId`` and ``meta.lastUpdated`` set, or
    None for a deletion marker. ``last_updated`` is milliseconds since the epoch (UTC).
    """

    tenant: str
    type: str
    id: str
    version: int
    last_updated: int
    deleted: bool
    method: Method
    body: bytes | None

    @property
    def operation(self) -> Operation:
        if self.deleted:
            return "delete"
        return "create" if self.version == 1 or self.method == "POST" else "update"


@dataclass(frozen=True, slots=True)
class Change:
    """A new version to commit, guarded by the version the writer saw.

    ``expected_version`` None means the resource must not exist yet (create); an int means the
    current version must be exactly that (optimistic concurrency, which is also ``If-Match``).
    """

    new: ResourceVersion
    expected_version: int | None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Instance (type and id), type (type only) or system history (neither); newest first."""

    tenant: str
    type: str | None = None
    id: str | None = None
    since: int | None = None
    """Only versions with last_updated >= since (ms)."""
    at: tuple[int, int] | None = None
    """Only versions current at some point in [low, high) (ms): http.html#history ``_at``."""
    count: int = 50
    after: str | None = None
    """Keyset cursor from a previous page's ``next``: only versions older than that page's last.
    Opaque to the use cases (the adapter's own position encoding); signed before it reaches a client."""


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[ResourceVersion]
    next: str | None
    """The position after this page's last entry, or None at the end."""


class VersionConflict(Exception):
    """A change's expected version did not hold. ``index`` is the change's place in the commit."""

    def __init__(self, index: int, current_version: int | None) -> None:
        super().__init__(f"change {index}: current version is {current_version}")
        self.index = index
        self.current_version = current_version


class ResourceStore(Protocol):
    """The system of record: versions of resources, per tenant (DESIGN.md §3)."""

    def current(self, tenant: str, type_: str, id_: str) -> ResourceVersion | None:
        """The latest version (possibly a deletion marker), or None if the resource never existed."""
        ...

    def version(self, tenant: str, type_: str, id_: str, version: int) -> ResourceVersion | None:
        """One version for vread (http.html#vread), or None."""
        ...

    def commit(self, changes: Sequence[Change]) -> None:
        """Write all changes atomically or none (raises VersionConflict naming the first failing one)."""
        ...

    def history(self, query: HistoryQuery) -> HistoryPage:
        """http.html#history: versions newest first, with keyset paging."""
        ...


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        import time

        return time.time_ns() // 1_000_000
