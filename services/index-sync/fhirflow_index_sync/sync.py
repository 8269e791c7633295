"""The index-sync use case: index each committed change and announce it exactly once.

For each change, in commit order:

1. the search index takes the version, unless it already holds that version or a newer one
   (replays and reordered batches never move a document backwards); a batch's versions go to
   the index together (``SearchIndex.apply_batch``: one bulk request on OpenSearch);
2. a ``ResourceChanged`` v1 event is published, unless the ledger says it already was — also
   for a version too old to index, since every committed change is announced once.

The order within a batch is kept: when a change fails, the ones after it are not announced (a
bulk index may already hold some of them: the version guard makes their second write a no-op),
so the retry (Lambda re-delivers from the first failed record; the outbox keeps undelivered
rows) sees them again in order and events leave in version order per resource.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from fhirflow.ports import CommittedChange, EventLedger, EventPublisher, IndexWrite, ResourceVersion, SearchIndex
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


_READY_LIMIT = 4096
"""Events built ahead (``IndexSync.prepare``) and not yet taken: a bound, should a write that
prepared its events never reach ``process`` (it failed before committing)."""


class IndexSync:
    def __init__(self, *, index: SearchIndex, ledger: EventLedger, publisher: EventPublisher) -> None:
        self.index = index
        self.ledger = ledger
        self.publisher = publisher
        # (tenant, type, id, version) → (the committed version object, its request id, its event)
        self._ready: OrderedDict[tuple[str, str, str, int], tuple[ResourceVersion, str, ResourceChanged]] = (
            OrderedDict()
        )
        self._ready_lock = threading.Lock()

    def prepare(self, changes: Sequence[CommittedChange]) -> None:
        """Build the changes' events ahead of :meth:`process`: the embedded store calls this before
        it takes SQLite's write lock, so that only the event's row is written under it. Optional:
        ``process`` builds an event itself when none was prepared from the very same version."""
        built = [(change, resource_changed(change)) for change in changes]
        with self._ready_lock:
            for change, event in built:
                stored = change.stored
                self._ready[(stored.tenant, stored.type, stored.id, stored.version)] = (
                    stored,
                    change.request_id,
                    event,
                )
            while len(self._ready) > _READY_LIMIT:
                self._ready.popitem(last=False)

    def _event(self, change: CommittedChange) -> ResourceChanged:
        """The change's event: the prepared one when it was built from this very version object
        (two writers racing for one version prepare different objects; only the winner commits)."""
        stored = change.stored
        if self._ready:
            with self._ready_lock:
                found = self._ready.pop((stored.tenant, stored.type, stored.id, stored.version), None)
            if found is not None and found[0] is stored and found[1] == change.request_id:
                return found[2]
        return resource_changed(change)

    def process(self, changes: Sequence[CommittedChange]) -> SyncReport:
        """Index and announce ``changes`` in order; stops at the first failure (see the module doc)."""
        writes: list[IndexWrite] = []
        error: Exception | None = None
        for change in changes:
            try:
                writes.append(self._write(change))
            except Exception as exc:  # a body that does not parse: the batch stops there
                error = exc
                break
        indexed = len(writes)
        if writes:
            try:
                results = self.index.apply_batch(writes)
            except Exception as exc:  # adapters report per write; this is one that did not
                results = [exc] * len(writes)
            debug = logger.isEnabledFor(logging.DEBUG)
            for position, (write, result) in enumerate(zip(writes, results, strict=True)):
                if isinstance(result, Exception):
                    indexed, error = position, result
                    break
                if debug:
                    logger.debug(
                        "indexed" if result else "index already newer",
                        extra={"tenant": write.tenant, "type": write.type, "id": write.id, "version": write.version},
                    )
        try:
            self._announce(changes[:indexed])
        except Exception as exc:
            # Nothing is acknowledged; on the retry the index skips what it has and the ledger
            # skips what was published.
            return SyncReport(0, exc)
        return SyncReport(indexed, error)

    @staticmethod
    def _write(change: CommittedChange) -> IndexWrite:
        stored = change.stored
        resource = None
        if not stored.deleted and stored.body is not None:
            resource = stored.resource if stored.resource is not None else orjson.loads(stored.body)
        return IndexWrite(stored.tenant, stored.type, stored.id, stored.version, stored.last_updated, resource)

    def _announce(self, changes: Sequence[CommittedChange]) -> None:
        if not changes:
            return
        events = list({e.metadata.event_id: e for e in map(self._event, changes)}.values())
        already = self.ledger.published(events)
        fresh = [e for e in events if e.metadata.event_id not in already]
        if not fresh:
            return
        # Publish, then record: a crash in between publishes again on the retry (at least once),
        # never loses an event.
        self.publisher.publish(fresh)
        self.ledger.record(fresh)
