"""In-memory BlobStore, SearchIndex, EventPublisher and EventLedger (thread-safe)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhirflow.ports import BlobNotFound, IndexWrite, apply_each

if TYPE_CHECKING:
    from fhirflow_contracts import ResourceChanged


class InMemoryBlobStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        self.blobs[key] = bytes(data)

    def get(self, key: str) -> bytes:
        try:
            return self.blobs[key]
        except KeyError as exc:
            raise BlobNotFound(key) from exc

    def delete(self, key: str) -> None:
        self.blobs.pop(key, None)


@dataclass(frozen=True, slots=True)
class IndexedResource:
    version: int
    last_updated: int
    resource: dict[str, Any] | None


class InMemorySearchIndex:
    def __init__(self) -> None:
        self.documents: dict[tuple[str, str, str], IndexedResource] = {}
        self._lock = threading.Lock()

    def apply(
        self, tenant: str, type_: str, id_: str, version: int, last_updated: int, resource: dict[str, Any] | None
    ) -> bool:
        key = (tenant, type_, id_)
        with self._lock:
            held = self.documents.get(key)
            if held is not None and held.version >= version:
                return False
            self.documents[key] = IndexedResource(version, last_updated, resource)
            return True

    def indexed_version(self, tenant: str, type_: str, id_: str) -> int | None:
        held = self.documents.get((tenant, type_, id_))
        return held.version if held else None

    def apply_batch(self, writes: Sequence[IndexWrite]) -> list[bool | Exception]:
        """One write after the other through :meth:`apply` (so a double overriding it fails
        writes one by one); after a failure the rest are skipped."""
        return apply_each(self, writes)


class InMemoryEventPublisher:
    def __init__(self) -> None:
        self.events: list[ResourceChanged] = []

    def publish(self, events: Sequence[ResourceChanged]) -> None:
        self.events.extend(events)


class InMemoryEventLedger:
    def __init__(self) -> None:
        self.ids: set[str] = set()

    def published(self, events: Sequence[ResourceChanged]) -> set[str]:
        return self.ids.intersection(e.metadata.event_id for e in events)

    def record(self, events: Sequence[ResourceChanged]) -> None:
        self.ids.update(e.metadata.event_id for e in events)
