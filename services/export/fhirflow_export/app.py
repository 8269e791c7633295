"""The export service's composition root: settings → job store, queue, files, search engine → use cases.

The API side (kick-off, status, cancel, files) is an :class:`~fhirflow.http.Application` over the
route table's ``export`` routes; the worker side is :class:`~fhirflow_export.worker.ExportWorker`,
fed by SQS in AWS (``handler.worker_handler``) and by the local worker loop in the embedded mode
(:mod:`fhirflow_export.local`). Both sides share one :class:`ExportParts` per process and settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from fhirflow.http import Application, UseCase
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.routes import ROUTE_TABLE
from fhirflow.runtime import Dependencies, build_dependencies, search_engine
from fhirflow.settings import Settings
from fhirflow_export import limits, status
from fhirflow_export.kickoff import LEVELS, ExportParts, Level, kick_off
from fhirflow_export.worker import ExportWorker

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from fhirflow.adapters.sqlite.jobs import SqliteJobQueue
    from fhirflow.job_ports import ExportJobStore, JobQueue
    from fhirflow.ports import BlobStore

ExportUseCase = Callable[[Dependencies, ExportParts, FhirRequest], FhirResponse]


def _kick_off_use_case(level: Level) -> ExportUseCase:
    def use_case(deps: Dependencies, parts: ExportParts, request: FhirRequest) -> FhirResponse:
        return kick_off(deps, parts, request, level)

    return use_case


USE_CASES: dict[str, ExportUseCase] = {
    **{interaction: _kick_off_use_case(level) for interaction, level in LEVELS.items()},
    "export-status": status.status,
    "export-cancel": status.cancel,
    "export-file": status.download,
}

_parts: dict[str, ExportParts] = {}
_lock = threading.Lock()


def build_jobs(settings: Settings) -> ExportJobStore:
    if settings.store == "dynamodb":
        from fhirflow.adapters.aws.dynamodb_export_jobs import DynamoDbExportJobStore

        return DynamoDbExportJobStore(
            settings.dynamodb_table, endpoint_url=settings.dynamodb_endpoint, region=settings.aws_region
        )
    from fhirflow.adapters.sqlite.jobs import SqliteExportJobStore
    from fhirflow.runtime import sqlite_database

    return SqliteExportJobStore(sqlite_database(settings))


def build_queue(settings: Settings) -> JobQueue:
    if settings.export_queue_url:
        from fhirflow.adapters.aws.sqs_queue import SqsJobQueue

        return SqsJobQueue(settings.export_queue_url, region=settings.aws_region)
    return local_queue(settings)


def local_queue(settings: Settings) -> SqliteJobQueue:
    from fhirflow.adapters.sqlite.jobs import SqliteJobQueue
    from fhirflow.runtime import sqlite_database

    return SqliteJobQueue(sqlite_database(settings), "export")


def build_files(settings: Settings) -> BlobStore:
    if settings.export_bucket:
        from fhirflow.adapters.aws.s3_blobs import S3BlobStore

        return S3BlobStore(settings.export_bucket, region=settings.aws_region)
    from fhirflow.runtime import build_blobs

    return build_blobs(settings)


def parts_for(settings: Settings) -> ExportParts:
    """One set of parts per store and data directory per process (the API and the worker share it)."""

    key = f"{settings.store}:{settings.dynamodb_table}:{settings.sqlite_path.resolve()}:{settings.export_queue_url}"
    with _lock:
        if key not in _parts:
            _parts[key] = ExportParts(
                jobs=build_jobs(settings),
                queue=build_queue(settings),
                files=build_files(settings),
                engine=search_engine(settings),
            )
        return _parts[key]


def build_app(deps: Dependencies | None = None, parts: ExportParts | None = None) -> Application:
    deps = deps or build_dependencies()
    parts = parts or parts_for(deps.settings)
    handlers: dict[tuple[str, str], UseCase] = {
        (route.method, route.pattern): partial(USE_CASES[route.interaction], deps, parts)
        for route in ROUTE_TABLE.for_service("export")
    }
    return Application.for_service(handlers, deps)


def build_worker(deps: Dependencies, parts: ExportParts | None = None) -> ExportWorker:
    parts = parts or parts_for(deps.settings)
    return ExportWorker(
        jobs=parts.jobs,
        queue=parts.queue,
        files=parts.files,
        engine=parts.engine,
        store=deps.store,
        clock=deps.clock,
        file_resources=deps.settings.export_file_resources,
    )


_worker: ExportWorker | None = None


def worker() -> ExportWorker:
    """The Lambda's worker, built on the first message (no I/O at import)."""
    global _worker
    if _worker is None:
        _worker = build_worker(build_dependencies())
    return _worker


class WorkerRecords:
    """The SQS record handler of one invocation (Powertools' batch processor calls ``handle``)."""

    def __init__(self, export_worker: ExportWorker, context: Any) -> None:
        self.worker = export_worker
        self.context = context

    def should_yield(self) -> bool:
        remaining = getattr(self.context, "get_remaining_time_in_millis", None)
        return remaining is not None and remaining() < limits.YIELD_MARGIN_SECONDS * 1000

    def handle(self, record: SQSRecord) -> None:
        from fhirflow_contracts import StartExport

        command = StartExport.model_validate_json(record.body)
        receives = int(record.attributes.approximate_receive_count or 1)
        self.worker.run(command, should_yield=self.should_yield, final_attempt=receives >= limits.MAX_RECEIVES)


def worker_records(context: Any) -> WorkerRecords:
    return WorkerRecords(worker(), context)
