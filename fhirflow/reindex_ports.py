"""Ports of runtime search parameters and of the reindex job (DESIGN.md §4).

SearchParameter resources created at run time are indexed by every write from the moment they
exist, but older data has no values for them until a reindex job has recomputed its search rows;
only then may searches use them. So the server keeps, next to the search index:

- a :class:`SearchParamCatalog`: each tenant's registry (the official parameters plus its own),
  and which of its own parameters are searchable;
- a :class:`ReindexJobStore` of :class:`ReindexJob` records, which a background worker advances
  batch by batch through a :class:`Reindexer` (the index's side of the work).

A module of its own beside :mod:`fhirflow.ports` because it needs the search registry, which the
write path of every other service can do without. Adapters: SQLite (embedded) and DynamoDB +
OpenSearch (``fhirflow/adapters/aws/dynamodb_searchparams.py``, ``dynamodb_reindex_jobs.py``,
``fhirflow/adapters/opensearch/reindex.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from fhirflow.searchparams.registry import Registry

JobStatus = Literal["queued", "running", "completed", "failed"]
MAX_JOB_ERRORS = 100
"""Error messages a job keeps (the count goes on)."""


@dataclass(frozen=True, slots=True)
class CustomParam:
    """One base of a tenant's SearchParameter resource as the server uses it."""

    id: str
    """The SearchParameter resource's id."""
    url: str
    code: str
    base: str
    type: str
    searchable: bool
    """A reindex covered it since its definition last changed: searches may use it."""


class SearchParamCatalog(Protocol):
    """The tenant's search parameters; read on every search, so it must be cheap when nothing changed."""

    def searchable_registry(self, tenant: str) -> Registry:
        """The registry searches of ``tenant`` parse against: the official parameters plus the
        tenant's searchable ones."""
        ...

    def custom_params(self, tenant: str) -> tuple[CustomParam, ...]:
        """The tenant's active SearchParameters the server can index, one entry per base."""
        ...


@dataclass(frozen=True, slots=True)
class ReindexJob:
    """A ``$reindex`` request and how far it got. ``position`` is the last (type, id) done, in
    the walk's keyset order; ``since`` the catalog state the job started from (the parameters
    defined before it are the ones it makes searchable)."""

    tenant: str
    id: str
    types: tuple[str, ...]
    """The resource types to walk; empty: every type."""
    url: str | None
    """Only this SearchParameter (canonical URL) becomes searchable; None: every one covered."""
    created_ms: int
    status: JobStatus = "queued"
    revision: int = 0
    position: tuple[str, str] | None = None
    since: int | None = None
    total: int | None = None
    processed: int = 0
    skipped: int = 0
    error_count: int = 0
    errors: tuple[str, ...] = ()
    searchable: tuple[str, ...] = ()
    """``Base.code`` of the parameters the job made searchable (when completed)."""
    finished_ms: int | None = None
    attempts: int = 0
    """Steps that failed in a row (the job fails after a few)."""
    owner: tuple[str | None, str | None, str | None] | None = None
    """Who started it: issuer, subject, client (:mod:`fhirflow.authz.ownership`); None: authorization off."""
    updated_ms: int | None = None
    """When a worker last saved it (a queued chunk whose successor was never queued shows as stalled)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "id": self.id,
            "types": list(self.types),
            "url": self.url,
            "created": self.created_ms,
            "status": self.status,
            "revision": self.revision,
            "position": list(self.position) if self.position else None,
            "since": self.since,
            "total": self.total,
            "processed": self.processed,
            "skipped": self.skipped,
            "errorCount": self.error_count,
            "errors": list(self.errors),
            "searchable": list(self.searchable),
            "finished": self.finished_ms,
            "attempts": self.attempts,
            "owner": list(self.owner) if self.owner is not None else None,
            "updated": self.updated_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReindexJob:
        position = data.get("position")
        owner = data.get("owner")
        return cls(
            tenant=data["tenant"],
            id=data["id"],
            types=tuple(data.get("types") or ()),
            url=data.get("url"),
            created_ms=int(data["created"]),
            status=data.get("status", "queued"),
            revision=int(data.get("revision", 0)),
            position=(str(position[0]), str(position[1])) if position else None,
            since=data.get("since"),
            total=data.get("total"),
            processed=int(data.get("processed", 0)),
            skipped=int(data.get("skipped", 0)),
            error_count=int(data.get("errorCount", 0)),
            errors=tuple(data.get("errors") or ()),
            searchable=tuple(data.get("searchable") or ()),
            finished_ms=data.get("finished"),
            attempts=int(data.get("attempts", 0)),
            owner=(owner[0], owner[1], owner[2]) if isinstance(owner, list) and len(owner) == 3 else None,
            updated_ms=data.get("updated"),
        )

    def advanced(self, batch: ReindexBatch) -> ReindexJob:
        """This job after ``batch``."""
        errors = (*self.errors, *batch.errors)[:MAX_JOB_ERRORS]
        return replace(
            self,
            position=batch.position or self.position,
            processed=self.processed + batch.processed,
            skipped=self.skipped + batch.skipped,
            error_count=self.error_count + len(batch.errors),
            errors=errors,
            attempts=0,
        )


class ReindexJobStore(Protocol):
    """Reindex jobs by (tenant, id). A worker *claims* a job for a while (a lease) and every save
    is conditional on the revision it read, so two workers never advance one job at once."""

    def create(self, job: ReindexJob) -> None: ...

    def get(self, tenant: str, job_id: str) -> ReindexJob | None: ...

    def claim(self, worker: str, now_ms: int, lease_ms: int) -> ReindexJob | None:
        """A queued or running job whose lease is free (or already this worker's), now leased
        to ``worker`` until ``now_ms + lease_ms``; None when there is nothing to do."""
        ...

    def claim_job(self, tenant: str, job_id: str, revision: int, worker: str, now_ms: int, lease_ms: int) -> bool:
        """Lease this job to ``worker`` until ``now_ms + lease_ms`` if it is open, still at
        ``revision`` and its lease is free (or already the worker's): how a queued chunk takes the
        job its message names. False: the job moved on, finished, or another worker holds it."""
        ...

    def save(self, job: ReindexJob, worker: str, lease_until_ms: int) -> ReindexJob | None:
        """Store ``job`` as the next revision if the stored one is still ``job.revision`` and
        leased to ``worker``; the stored job, or None when the lease was lost."""
        ...


@dataclass(frozen=True, slots=True)
class ReindexBatch:
    position: tuple[str, str] | None
    """The last (type, id) the batch walked past (None: there was nothing)."""
    processed: int
    """Resources whose search rows were recomputed."""
    skipped: int = 0
    """Resources that changed under the batch (their new version was indexed by its write)."""
    errors: tuple[str, ...] = ()
    done: bool = False
    """The walk is over."""


class Reindexer(Protocol):
    """The search index's side of a reindex job."""

    def catalog_state(self, tenant: str) -> int:
        """A number that grows whenever the tenant's parameters change (read before the walk)."""
        ...

    def total(self, tenant: str, types: Sequence[str]) -> int:
        """How many current resources the walk will meet (for progress only)."""
        ...

    def batch(self, tenant: str, types: Sequence[str], after: tuple[str, str] | None, limit: int) -> ReindexBatch:
        """Recompute the search rows of up to ``limit`` current resources after ``after`` with the
        tenant's current parameters, in short write transactions."""
        ...

    def finish(self, tenant: str, types: Sequence[str], url: str | None, since: int) -> tuple[str, ...]:
        """Mark searchable the parameters the walk covered: defined at ``since`` or before (and
        unchanged since), on bases among ``types`` (every base when empty), ``url`` only if given."""
        ...
