"""Ports of background jobs: the export job store and the queue that carries work to a worker.

A module of its own beside :mod:`fhirflow.ports` because its signatures name the pydantic
contracts (``ExportJob``), which the request path of every other service can do without.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fhirflow_contracts import ExportJob


class ExportJobStore(Protocol):
    """Bulk export jobs by (tenant, id): a SQLite table embedded, an item of the resource table
    in DynamoDB (docs/dynamodb.md). Every write after the first is conditional on the revision the
    writer read, so a cancel and a worker's progress never overwrite each other
    (bulk data export.html: the status and delete requests act on the job the kick-off made)."""

    def create(self, job: ExportJob) -> None:
        """Store a new job (its id is fresh: a uuid)."""
        ...

    def get(self, tenant: str, job_id: str) -> ExportJob | None:
        """The job's latest revision (read-your-writes), or None."""
        ...

    def replace(self, job: ExportJob) -> ExportJob | None:
        """Store ``job`` as revision ``job.revision + 1`` if the stored revision is still
        ``job.revision``; the stored job, or None when another writer got there first."""
        ...


class JobQueue(Protocol):
    """Messages for a background worker (at least once): SQS in AWS, a table in the embedded
    mode's SQLite database that the local worker loop drains."""

    def send(self, body: str, *, delay_seconds: int = 0) -> None:
        """Enqueue one message, delivered no sooner than ``delay_seconds`` from now (SQS allows up
        to 900); durable when it returns."""
        ...
