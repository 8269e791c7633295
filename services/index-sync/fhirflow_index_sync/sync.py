"""The index-sync use case: index each committed change and announce it exactly once.

For each change, in commit order:

1. the search index takes the version, unless it already holds that version or a newer one
   (replays and reordered batches never move a document backwards);
2. a ``ResourceChanged`` v1 event is published, unless the ledger says it already was — also
   for a version too old to index, since every committed change is announced once.

The order within a batch is kept: when a change fails, the ones after it are not processed, so
the retry (Lambda re-delivers from the first failed record; the outbox keeps undelivered rows)
sees them again in order and events leave in version order per resource.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from fhirflow.ports import CommittedChange, EventLedger, EventPublisher, SearchIndex
from fhirflow_contracts import ResourceChanged

logger = logging.getLogger("fhirflow.index_sync")


@dataclass(frozen=True, slots=True)
class SyncReport:
    done: int
    """How many changes from the start of the batch were indexed and announced."""
    error: Exception | None = None
    """Why the change at position ``done`` failed (None when the whole batch succeeded)."""


def resource_changed(change: CommittedChange) -> ResourceChanged:
    stored = change.stored
    return ResourceChanged.of(
        tenant=stored.tenant,
        resource_type=stored.type,
        id=stored.id,
        version=stored.version,
        operation=stored.operation,
        last_updated_ms=stored.last_updated,
        request_id=change.request_id,
    )


class IndexSync:
    def __init__(self, *, index: SearchIndex, ledger: EventLedger, publisher: EventPublisher) -> None:
        self.index = index
        self.ledger = ledger
        self.publisher = publisher

    def process(self, changes: Sequence[CommittedChange]) -> SyncReport:
        """Index and announce ``changes`` in order; stops at the first failure (see the module doc)."""
        indexed = 0
        error: Exception | None = None
        for change in changes:
            try:
                self._index(change)
            except Exception as exc:
                error = exc
                break
            indexed += 1
        try:
            self._announce(changes[:indexed])
        except Exception as exc:
            # Nothing is acknowledged; on the retry the index skips what it has and the ledger
            # skips what was published.
            return SyncReport(0, exc)
        return SyncReport(indexed, error)

    def process_one(self, change: CommittedChange) -> None:
        """One change, raising its failure (the Lambda handler's per-record call)."""
        report = self.process([change])
        if report.error is not None:
            raise report.error

    def _index(self, change: CommittedChange) -> None:
        stored = change.stored
        resource = None if stored.deleted or stored.body is None else orjson.loads(stored.body)
        applied = self.index.apply(stored.tenant, stored.type, stored.id, stored.version, stored.last_updated, resource)
        logger.debug(
            "indexed" if applied else "index already newer",
            extra={"tenant": stored.tenant, "type": stored.type, "id": stored.id, "version": stored.version},
        )

    def _announce(self, changes: Sequence[CommittedChange]) -> None:
        if not changes:
            return
        events = list({e.metadata.event_id: e for e in map(resource_changed, changes)}.values())
        already = self.ledger.published(events)
        fresh = [e for e in events if e.metadata.event_id not in already]
        if not fresh:
            return
        # Publish, then record: a crash in between publishes again on the retry (at least once),
        # never loses an event.
        self.publisher.publish(fresh)
        self.ledger.record(fresh)
