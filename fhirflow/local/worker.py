"""The embedded mode's worker loop: it plays the DynamoDB stream's part (DESIGN.md §6).

- ``OutboxDrainer`` delivers the SQLite outbox (one row per committed change, written in the
  change's own transaction) to the index-sync use case, in commit order, and removes what was
  delivered. The store calls it right after each commit (read-your-writes); the background
  ``Worker`` drains whatever is left, e.g. after a crash between a commit and its drain.
- ``StreamPoller`` is the same loop for ``fhirflow serve --store dynamodb``: it reads the
  table's real stream (DynamoDB Local's) and hands the records to the index-sync Lambda handler
  as Lambda's event source mapping would, re-delivering from the first failed record. A second
  worker plays the transaction sweeper's EventBridge schedule there
  (``fhirflow_bundle.transaction.wiring.LocalSweeper``).

Each batch is read, delivered and removed from the outbox in one SQLite write transaction (the
SQLite index, event log and ledger join it), so a batch commits whole or not at all and two
drains, even in two processes, cannot deliver one change twice. After a write, the drain runs
inside the writer's own transaction (``drain_joined``, under a SAVEPOINT): one commit per write,
and a failing drain leaves the write committed and its outbox rows for the worker.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fhirflow.local.loop import Worker
from fhirflow.ports import Change, CommittedChange

if TYPE_CHECKING:
    from fhirflow.adapters.sqlite.outbox import SqliteOutbox
    from fhirflow.settings import Settings
    from fhirflow_index_sync.sync import IndexSync

logger = logging.getLogger("fhirflow.worker")

_BATCH = 500


class OutboxDrainer:
    def __init__(self, outbox: SqliteOutbox, sync_factory: Callable[[], IndexSync]) -> None:
        self.outbox = outbox
        self._sync_factory = sync_factory
        self._sync: IndexSync | None = None
        self._lock = threading.Lock()
        self._behind = True  # something may be pending that drain_joined did not deliver

    @property
    def sync(self) -> IndexSync:
        if self._sync is None:
            self._sync = self._sync_factory()
        return self._sync

    def drain(self) -> int:
        """Deliver everything pending; returns how many changes were delivered. Raises the first
        failure (after removing the changes delivered before it)."""
        delivered = 0
        with self._lock:
            sync = self.sync  # built first: building it creates tables, which commits
            while True:
                with self.outbox.delivery():
                    entries = self.outbox.pending(_BATCH)
                    if not entries:
                        return delivered
                    report = sync.process([e.change for e in entries])
                    self.outbox.remove([e.seq for e in entries[: report.done]])
                delivered += report.done
                if report.error is not None:
                    raise report.error
                if len(entries) < _BATCH:
                    return delivered

    def housekeeping(self) -> None:
        """Background upkeep between drains: checkpoint the WAL here, not in a request."""
        self.outbox.db.checkpoint()

    def prepare(self, changes: Sequence[Change]) -> None:
        """The store's before-transaction hook: build the changes' search rows and events now,
        outside the write lock, so that the drain inside it only writes them (the embedded
        index's ``prepare``; an index without one builds them in ``apply``)."""
        if self._sync is None:
            return
        self._sync.prepare([CommittedChange(c.new, c.request_id) for c in changes])
        prepare = getattr(self._sync.index, "prepare", None)
        if prepare is None:
            return
        for change in changes:
            new = change.new
            if new.resource is not None and not new.deleted:
                prepare(new.tenant, new.type, new.id, new.version, new.last_updated, new.resource)

    def drain_joined(self, changes: Sequence[Change] = ()) -> None:
        """The store's in-transaction hook: deliver this write's changes before it commits.

        The writer holds SQLite's write lock, so no other drain can interleave and ``_lock`` is
        not taken (taking it here could deadlock with a worker waiting for the write lock). The
        first call after start-up only notes that a drain is due: building index-sync creates
        tables, which would commit the writer's transaction early."""
        if self._sync is None:
            self._behind = True
            return
        conn = self.outbox.db.connection()
        conn.execute("SAVEPOINT outbox_drain")
        try:
            known = {
                (c.new.tenant, c.new.type, c.new.id, c.new.version): CommittedChange(c.new, c.request_id)
                for c in changes
            }
            while True:
                entries = self.outbox.pending(_BATCH, known=known)
                if not entries:
                    break
                report = self._sync.process([e.change for e in entries])
                self.outbox.remove([e.seq for e in entries[: report.done]])
                if report.error is not None:
                    raise report.error
                if len(entries) < _BATCH:
                    break
        except Exception:
            conn.execute("ROLLBACK TO outbox_drain")
            self._behind = True
            logger.exception("outbox drain in the write's transaction failed; the worker will retry")
        conn.execute("RELEASE outbox_drain")

    def after_commit(self) -> None:
        """The store's after-commit hook, for what ``drain_joined`` could not deliver. The write
        has committed whatever happens here, so a failure is logged and left to the background
        worker, never turned into a failed write."""
        if not self._behind:
            return
        self._behind = False
        try:
            self.drain()
        except Exception:
            self._behind = True
            logger.exception("outbox drain after commit failed; the worker will retry")


class StreamPoller:
    """Polls a DynamoDB stream into the index-sync Lambda handler (the local event source mapping)."""

    def __init__(self, reader: Any, handler: Callable[[dict[str, Any], Any], Mapping[str, Any]]) -> None:
        self.reader = reader
        self.handler = handler
        self.pending: list[dict[str, Any]] = []

    def drain(self) -> int:
        """One poll; returns how many records were acknowledged."""
        from fhirflow.local.gateway import LambdaContext

        if len(self.pending) < _BATCH:  # while a batch keeps failing, do not pile up more
            self.pending.extend(self.reader.poll())
        if not self.pending:
            return 0
        batch = self.pending
        context = LambdaContext(function_name="fhirflow-index-sync", aws_request_id=str(uuid.uuid4()))
        try:
            response = self.handler({"Records": batch}, context)
        except Exception:
            logger.exception("index-sync failed the whole batch; retrying it")
            return 0
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for position, record in enumerate(batch):
            if record["dynamodb"].get("SequenceNumber") in failed:
                self.pending = batch[position:]  # re-deliver from the first failure, in order
                return position
        self.pending = []
        return len(batch)


_drainers: dict[str, OutboxDrainer] = {}
_drainers_lock = threading.Lock()


def outbox_drainer(settings: Settings) -> OutboxDrainer:
    """The process's drainer for the settings' database, delivering into index-sync's use case."""
    from fhirflow import runtime
    from fhirflow.adapters.sqlite.outbox import SqliteOutbox

    key = str(settings.sqlite_path.resolve())
    with _drainers_lock:
        if key not in _drainers:
            outbox = SqliteOutbox(runtime.sqlite_database(settings), blobs=runtime.build_blobs(settings))

            def build_sync() -> IndexSync:
                from fhirflow_index_sync.app import build

                return build(settings).sync

            _drainers[key] = OutboxDrainer(outbox, build_sync)
        return _drainers[key]


def install_read_your_writes() -> None:
    """Make every embedded store this process builds drain its outbox on commit (``index_on_write``):
    the embedded runner registers this with the kernel, which does not know the worker loop. The
    embedded gateway does it on import; so do in-process test harnesses."""
    from fhirflow import runtime

    runtime.register_write_hooks(outbox_drainer)


def start_worker(settings: Settings, *, interval: float = 1.0) -> Worker:
    """The background worker ``fhirflow serve`` runs for its store."""
    if settings.store == "dynamodb":
        from fhirflow.adapters.aws.dynamodb_streams import DynamoDbStreamReader
        from fhirflow_bundle.transaction.wiring import SWEEP_INTERVAL_SECONDS, LocalSweeper
        from fhirflow_index_sync.handler import lambda_handler

        Worker(LocalSweeper(settings), interval=SWEEP_INTERVAL_SECONDS).start()

        reader = DynamoDbStreamReader(
            settings.dynamodb_table, endpoint_url=settings.dynamodb_endpoint, region=settings.aws_region
        )
        return Worker(StreamPoller(reader, lambda_handler), interval=interval).start()
    return Worker(outbox_drainer(settings), interval=interval).start()
