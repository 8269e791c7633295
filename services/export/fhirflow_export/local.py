"""The embedded mode's export worker: the local worker loop drains the SQLite export queue into
:class:`~fhirflow_export.worker.ExportWorker`, playing SQS and the worker Lambda (DESIGN.md §6).

Like the Lambda, each message runs one step of at most ``LOCAL_STEP_SECONDS``; a longer export
queues its next step and goes on at the next drain. A step that raises is retried after a
backoff, and its last attempt (``MAX_RECEIVES``) marks the job failed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from fhirflow_export import limits

if TYPE_CHECKING:
    from fhirflow.adapters.sqlite.jobs import QueuedMessage, SqliteJobQueue
    from fhirflow.local.loop import Worker
    from fhirflow.runtime import Dependencies
    from fhirflow.settings import Settings
    from fhirflow_contracts import StartExport
    from fhirflow_export.worker import ExportWorker

logger = logging.getLogger("fhirflow.export")


class ExportDrainer:
    def __init__(
        self, queue: SqliteJobQueue, worker: ExportWorker, *, step_seconds: float = limits.LOCAL_STEP_SECONDS
    ) -> None:
        self.queue = queue
        self.worker = worker
        self.step_seconds = step_seconds

    def drain(self) -> int:
        """Run every queued step (continuations included); returns how many were done."""
        from fhirflow_contracts import StartExport

        return self.queue.drain(StartExport, self._step, what="export step")

    def _step(self, command: StartExport, message: QueuedMessage) -> None:
        deadline = time.monotonic() + self.step_seconds
        self.worker.run(
            command,
            should_yield=lambda: time.monotonic() > deadline,
            final_attempt=message.receives >= limits.MAX_RECEIVES,
        )


def export_drainer(deps: Dependencies) -> ExportDrainer:
    from fhirflow_export.app import build_worker, local_queue, parts_for

    return ExportDrainer(local_queue(deps.settings), build_worker(deps, parts_for(deps.settings)))


def start_export_worker(settings: Settings, *, interval: float = 0.5) -> Worker | None:
    """The background export worker ``fhirflow serve`` runs; none when the queue is SQS."""
    if settings.export_queue_url:
        return None
    from fhirflow.local.loop import Worker
    from fhirflow.runtime import build_dependencies

    return Worker(export_drainer(build_dependencies(settings)), interval=interval).start()
