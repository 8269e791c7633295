"""``$reindex`` jobs driven by a queue: they finish with no one polling (DESIGN.md §4, §6).

The kick-off queues an :class:`~fhirflow_contracts.AdvanceReindex` for the job at revision 0.
A worker that receives one runs a *chunk*: it leases the job only if the stored job is still at
the message's revision (``ReindexJobStore.claim_job``), advances it by a bounded number of batches
(each saved, with the walk's cursor, as the next revision), gives the lease up and queues the
next chunk at the revision it saved. So:

- a redelivered or duplicated message finds the job at a later revision and does nothing: no
  batch is counted twice or skipped, and one job never has two chains of chunks;
- a message whose job is leased by a live worker (another delivery of it, running) is retried
  later (:class:`JobBusy`); the lease is shorter than the queue's visibility timeout, so a
  worker that died holding it has lost it by the time its message comes back;
- a chunk that died after saving and before queueing its successor is found by the redelivery
  of its own message: stale, yet the job has not been saved for ``stall_ms`` and nobody holds
  it, so the successor is queued then (``AdvanceReindex`` ids are per revision, so the message
  is the one the chunk would have sent);
- a failed step is retried by the next chunk after a backoff (``delay_seconds``); after
  ``MAX_ATTEMPTS`` failures in a row the job is ``failed``.

Status requests only read the job. Embedded: :class:`ReindexDrainer` drains the database's
``reindex`` queue on the local worker loop. AWS: ``reindex_handler.lambda_handler`` behind an
SQS queue with a dead-letter queue (infra/fhirflow_infra/reindex.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from fhirflow_search.reindex import ReindexParts, ReindexRunner

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from fhirflow.adapters.sqlite.jobs import SqliteJobQueue
    from fhirflow.job_ports import JobQueue
    from fhirflow.local.loop import Worker
    from fhirflow.reindex_ports import ReindexJob
    from fhirflow.settings import Settings
    from fhirflow_contracts import AdvanceReindex

logger = logging.getLogger("fhirflow.reindex")

WORKER_TIMEOUT_SECONDS = 300
"""The AWS worker's timeout; a chunk stops starting batches ``YIELD_MARGIN_SECONDS`` before it."""
YIELD_MARGIN_SECONDS = 60
LEASE_MS = (WORKER_TIMEOUT_SECONDS + 60) * 1000
"""Longer than any chunk, shorter than the queue's visibility timeout."""
VISIBILITY_TIMEOUT_SECONDS = 6 * WORKER_TIMEOUT_SECONDS
"""SQS's advice for a Lambda-triggered queue (six times the function's timeout)."""
MAX_RECEIVES = 5
"""Deliveries of one message before it goes to the dead-letter queue."""
CHUNK_BATCHES = 50
"""Batches per chunk at most (``ReindexRunner.batch_size`` resources each)."""

Outcome = Literal["finished", "stale", "requeued", "continued", "lost"]


class JobBusy(Exception):
    """The message's job is leased by another worker at this revision: try the message again later."""


class ReindexChunks:
    """Runs the chunk an ``AdvanceReindex`` names and queues the next one."""

    def __init__(
        self,
        parts: ReindexParts,
        queue: JobQueue,
        *,
        runner: ReindexRunner | None = None,
        stall_ms: int = LEASE_MS,
    ) -> None:
        self.parts = parts
        self.queue = queue
        self.runner = runner or ReindexRunner(parts, lease_ms=LEASE_MS, max_batches=CHUNK_BATCHES)
        self.stall_ms = stall_ms

    def advance(self, command: AdvanceReindex, *, should_yield: Callable[[], bool] = lambda: False) -> Outcome:
        jobs, runner = self.parts.jobs, self.runner
        job = jobs.get(command.tenant, command.job_id)
        if job is None or job.status not in ("queued", "running"):
            return "finished"
        if job.revision != command.revision:
            now = runner.clock()
            stalled = job.updated_ms is None or now - job.updated_ms >= self.stall_ms
            if (
                job.revision > command.revision
                and stalled
                and jobs.claim_job(job.tenant, job.id, job.revision, runner.worker, now, 0)
            ):
                # Nobody holds it and nothing moved it for a while: the chunk that saved this
                # revision never queued its successor. Queue it (the lease taken was 0 ms long).
                self._enqueue(job)
                return "requeued"
            return "stale"
        if not jobs.claim_job(job.tenant, job.id, job.revision, runner.worker, runner.clock(), runner.lease_ms):
            current = jobs.get(command.tenant, command.job_id)
            if current is not None and current.revision == command.revision and current.status in ("queued", "running"):
                raise JobBusy(f"reindex job {job.id} is leased by another worker")
            return "stale"
        saved = runner.run_chunk(job, should_yield=should_yield)
        if saved is None:
            return "lost"
        if saved.status in ("queued", "running"):
            self._enqueue(saved)
            return "continued"
        return "finished"

    def _enqueue(self, job: ReindexJob) -> None:
        from fhirflow_contracts import AdvanceReindex

        delay = min(2**job.attempts, 60) if job.attempts else 0  # back off after a failed step
        message = AdvanceReindex.of(tenant=job.tenant, job_id=job.id, revision=job.revision, now_ms=self.runner.clock())
        self.queue.send(message.to_json(), delay_seconds=delay)


# -- embedded: the local worker loop drains the database's queue -------------------------------------


class ReindexDrainer:
    """SQS's and the worker Lambda's part in the embedded mode: every visible message of the
    ``reindex`` queue, continuations included, one chunk each."""

    def __init__(self, queue: SqliteJobQueue, chunks: ReindexChunks) -> None:
        self.queue = queue
        self.chunks = chunks

    def drain(self) -> int:
        from fhirflow_contracts import AdvanceReindex

        return self.queue.drain(AdvanceReindex, lambda command, _: self.chunks.advance(command), what="reindex chunk")


def local_queue(settings: Settings) -> SqliteJobQueue:
    from fhirflow.adapters.sqlite.jobs import SqliteJobQueue
    from fhirflow.runtime import sqlite_database

    return SqliteJobQueue(sqlite_database(settings), "reindex", visibility_ms=VISIBILITY_TIMEOUT_SECONDS * 1000)


def build_queue(settings: Settings) -> JobQueue:
    """SQS when the settings name a reindex queue (AWS), the embedded database's queue otherwise."""
    if settings.reindex_queue_url:
        from fhirflow.adapters.aws.sqs_queue import SqsJobQueue

        return SqsJobQueue(settings.reindex_queue_url, region=settings.aws_region)
    return local_queue(settings)


def start_reindex_worker(settings: Settings, *, interval: float = 0.5) -> Worker | None:
    """The background reindex worker ``fhirflow serve`` runs; none when the queue is SQS."""
    if settings.reindex_queue_url:
        return None
    from fhirflow.local.loop import Worker
    from fhirflow_search.app import reindex_parts

    parts = reindex_parts(settings)
    queue = local_queue(settings)
    return Worker(ReindexDrainer(queue, ReindexChunks(parts, queue)), interval=interval).start()


# -- AWS: the SQS-triggered worker Lambda -------------------------------------------------------------


class ReindexRecords:
    """The SQS record handler of one invocation (Powertools' batch processor calls ``handle``)."""

    def __init__(self, chunks: ReindexChunks, context: Any) -> None:
        self.chunks = chunks
        self.context = context

    def should_yield(self) -> bool:
        remaining = getattr(self.context, "get_remaining_time_in_millis", None)
        return remaining is not None and remaining() < YIELD_MARGIN_SECONDS * 1000

    def handle(self, record: SQSRecord) -> None:
        from fhirflow_contracts import AdvanceReindex

        command = AdvanceReindex.model_validate_json(record.body)
        started = time.monotonic()
        outcome = self.chunks.advance(command, should_yield=self.should_yield)
        logger.info(
            "reindex chunk",
            extra={"job": command.job_id, "outcome": outcome, "ms": int((time.monotonic() - started) * 1000)},
        )


_chunks: dict[str, ReindexChunks] = {}
_chosen: ReindexChunks | None = None


def use(chosen: ReindexChunks | None) -> None:
    """Install the chunk runner the Lambda handler uses (tests); None builds it from settings."""
    global _chosen
    _chosen = chosen


def worker_records(context: Any, settings: Settings | None = None) -> ReindexRecords:
    """The Lambda's chunk runner, built on the first message (no I/O at import)."""
    from fhirflow.settings import Settings as SettingsClass
    from fhirflow_search.app import reindex_parts

    if _chosen is not None:
        return ReindexRecords(_chosen, context)
    settings = settings or SettingsClass.from_env()
    key = f"{settings.reindex_queue_url}:{settings.dynamodb_table}:{settings.opensearch_index}"
    if key not in _chunks:
        _chunks[key] = ReindexChunks(reindex_parts(settings), build_queue(settings))
    return ReindexRecords(_chunks[key], context)
