"""``$reindex``: runtime SearchParameters become searchable on data written before them (DESIGN.md §4).

A SearchParameter resource takes part in indexing from the write that creates it, but resources
written before it have no values for it. Searching on it is allowed only once a reindex job has
walked those resources (until then the parameter is unknown to search: ignored and reported, or a
400 under ``Prefer: handling=strict``).

- ``POST [base]/$reindex`` and ``POST [base]/[type]/$reindex``: parameters in the URL and/or a
  ``Parameters`` body: ``_type`` (system level; comma-separated and/or repeated) limits the walk to
  those types, ``url`` to the bases of one SearchParameter (its canonical URL) and marks only that
  one. ``202 Accepted`` with ``Content-Location: [base]/_reindex/{job}`` (async.html's pattern).
- ``GET [base]/_reindex/{job}``: ``202`` with ``X-Progress`` and a ``Parameters`` body (status,
  processed, total) while the job is queued or running; ``200`` with the final ``Parameters``
  (status ``completed`` or ``failed``, counts, errors, the parameters made searchable).

Reindexing is an administrative action (interaction ``reindex``): with SMART it needs a
``system/`` scope that may update the types concerned (``system/*.u``, ``system/*.write``,
``system/*.cruds``...), with RBAC a group that allows ``reindex``. Jobs belong to their tenant and
to the principal that started them (issuer, subject and client: :mod:`fhirflow.authz.ownership`);
for anyone else a job's status is the 404 of an unknown job.

The job runs in the background (:class:`ReindexRunner`, driven by a queue: the kick-off queues its
first chunk and every chunk queues the next, :mod:`fhirflow_search.reindex_queue`): it pins the
catalog state, walks every current resource of the types in keyset order, a batch per short write
transaction, recomputing its search rows with the tenant's current parameters, saves its position
after each batch, and at the end marks searchable the parameters defined before it started. A
batch done twice (a crash before its position was saved) recomputes the same rows, so a restarted
job just goes on; a write during the job indexes its resource with the current parameters itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhirflow.authz import ownership
from fhirflow.bodies import operation_parameters
from fhirflow.errors import BadRequest, NotFound
from fhirflow.job_ports import JobQueue
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.reindex_ports import Reindexer, ReindexJob, ReindexJobStore, SearchParamCatalog
from fhirflow.runtime import Dependencies
from fhirflow.searchparams.registry import COMMON_BASES, default_registry

logger = logging.getLogger("fhirflow.reindex")

STATUS_PATH = "_reindex"
MAX_ATTEMPTS = 5
"""Steps of a job that may fail in a row before the job is marked failed."""


@dataclass(frozen=True, slots=True)
class ReindexParts:
    """What the reindex use cases need beside the service's Dependencies."""

    jobs: ReindexJobStore
    reindexer: Reindexer
    catalog: SearchParamCatalog
    queue: JobQueue | None = None
    """Where a kick-off queues the job's first chunk (:mod:`fhirflow_search.reindex_queue`): SQS in
    AWS, the embedded database's queue otherwise; None: a worker finds jobs by :meth:`ReindexRunner.drain`."""


# -- kick-off ---------------------------------------------------------------------------------------


def _job_scope(parts: ReindexParts, request: FhirRequest) -> tuple[tuple[str, ...], str | None]:
    """(types to walk, SearchParameter url) of a kick-off; 400 for what is wrong."""
    registry = default_registry()
    level_type = request.path_params.get("type")
    if level_type is not None and not registry.is_resource_type(level_type):
        raise NotFound(f"'{level_type[:64]}' is not a FHIR R4 resource type this server knows")
    types: list[str] = []
    url: str | None = None
    for name, value in operation_parameters(request, operation="$reindex"):
        if name == "_type":
            if level_type is not None:
                raise BadRequest("_type applies to the system-level $reindex only", expression="_type")
            for rtype in (t.strip() for t in value.split(",")):
                if not registry.is_resource_type(rtype):
                    raise BadRequest(f"_type: '{rtype[:64]}' is not a resource type", expression="_type")
                types.append(rtype)
        elif name == "url":
            if url is not None and url != value:
                raise BadRequest("url: one SearchParameter per $reindex", expression="url")
            url = value
        else:
            raise BadRequest(f"Unknown $reindex parameter '{name[:64]}' (known: _type, url)", expression=name)
    if level_type is not None:
        types = [level_type]
    if url is not None:
        bases = {p.base for p in parts.catalog.custom_params(request.tenant) if p.url == url}
        if not bases:
            raise BadRequest(
                f"url: no active SearchParameter of this server has the url '{url[:200]}'", expression="url"
            )
        if not types and not bases & set(COMMON_BASES):
            types = sorted(bases)
    return tuple(dict.fromkeys(types)), url


def kick_off(
    deps: Dependencies, parts: ReindexParts, request: FhirRequest, *, clock: Callable[[], int]
) -> FhirResponse:
    deps.policy.authorize(request, "reindex", request.path_params.get("type"))
    owner = ownership.require_owner(request.principal)
    types, url = _job_scope(parts, request)
    job = ReindexJob(tenant=request.tenant, id=uuid.uuid4().hex, types=types, url=url, created_ms=clock(), owner=owner)
    parts.jobs.create(job)
    if parts.queue is not None:
        from fhirflow_contracts import AdvanceReindex

        parts.queue.send(AdvanceReindex.of(tenant=job.tenant, job_id=job.id, revision=0, now_ms=clock()).to_json())
    logger.info("reindex job queued", extra={"tenant": job.tenant, "job": job.id, "types": len(types)})
    location = f"{request.base_url}/{STATUS_PATH}/{job.id}"
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": f"Accepted; poll {location}"}],
    }
    return FhirResponse(status=202, resource=outcome, headers={"Content-Location": location})


# -- status -----------------------------------------------------------------------------------------


def status(deps: Dependencies, parts: ReindexParts, request: FhirRequest) -> FhirResponse:
    job_id = request.path_params.get("job", "")
    job = parts.jobs.get(request.tenant, job_id) if job_id.isalnum() and len(job_id) <= 64 else None
    deps.policy.authorize(request, "reindex", job.types[0] if job is not None and len(job.types) == 1 else None)
    if job is None or job.owner != ownership.owner_of(request.principal):
        raise NotFound(f"No reindex job {job_id[:64]} here")
    if job.status in ("queued", "running"):
        return FhirResponse(
            status=202, resource=job_parameters(job), headers={"X-Progress": progress(job), "Retry-After": "1"}
        )
    return FhirResponse(status=200, resource=job_parameters(job))


def progress(job: ReindexJob) -> str:
    if job.status == "queued":
        return "queued"
    of = f" of {job.total}" if job.total is not None else ""
    return f"{job.processed}{of} resources reindexed"


def job_parameters(job: ReindexJob) -> dict[str, Any]:
    """The job as a ``Parameters`` resource (no resource data: counts, types, messages)."""
    out: list[dict[str, Any]] = [
        {"name": "status", "valueCode": job.status},
        {"name": "processed", "valueInteger": job.processed},
    ]
    if job.total is not None:
        out.append({"name": "total", "valueInteger": job.total})
    out += [
        {"name": "skipped", "valueInteger": job.skipped},
        {"name": "errorCount", "valueInteger": job.error_count},
    ]
    out += [{"name": "type", "valueCode": t} for t in job.types]
    if job.url is not None:
        out.append({"name": "url", "valueUri": job.url})
    out += [{"name": "searchable", "valueString": p} for p in job.searchable]
    out += [{"name": "error", "valueString": e} for e in job.errors]
    return {"resourceType": "Parameters", "parameter": out}


# -- the background job -----------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ReindexRunner:
    """Advances reindex jobs; the embedded worker loop calls :meth:`drain` (a Lambda on a schedule
    or a queue would do the same in AWS). One job at a time, under a lease, ``max_batches``
    batches per call so that the loop stays responsive."""

    def __init__(
        self,
        parts: ReindexParts,
        *,
        batch_size: int = 200,
        lease_ms: int = 60_000,
        max_batches: int = 50,
        clock: Callable[[], int] = _now_ms,
        worker: str | None = None,
    ) -> None:
        self.parts = parts
        self.batch_size = batch_size
        self.lease_ms = lease_ms
        self.max_batches = max_batches
        self.clock = clock
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def drain(self, *, release: bool = False) -> int:
        """Work on the next open job; returns how many batches were done. With ``release`` the
        lease is given up when this call stops before the job's end, so that the next call may go
        on at once even from another process (a status poll in AWS)."""
        job = self.parts.jobs.claim(self.worker, self.clock(), self.lease_ms)
        batches = 0
        while job is not None and job.status in ("queued", "running") and batches < self.max_batches:
            job = self._step(job)
            batches += 1
            if job is not None and job.attempts:
                break  # a failed step: the next call retries it
        if release and job is not None and job.status in ("queued", "running"):
            self.parts.jobs.save(job, self.worker, 0)
        return batches

    def run_chunk(self, job: ReindexJob, *, should_yield: Callable[[], bool] = lambda: False) -> ReindexJob | None:
        """Up to ``max_batches`` steps of ``job``, which this worker has claimed (fewer when
        ``should_yield`` says time is up, or a step failed), then the lease given up: the job as
        saved, or None when the lease was lost (whoever took it goes on)."""
        current: ReindexJob | None = job
        batches = 0
        while current is not None and current.status in ("queued", "running") and batches < self.max_batches:
            if batches and (current.attempts or should_yield()):
                break
            current = self._step(current)
            batches += 1
        if current is not None and current.status in ("queued", "running"):
            current = self.parts.jobs.save(current, self.worker, 0)
        return current

    def _step(self, job: ReindexJob) -> ReindexJob | None:
        """One step of ``job`` (the first pins the catalog state and counts; then a batch each);
        the saved job (``attempts`` > 0 when the step failed), or None when the lease was lost
        (another worker has it)."""
        reindexer = self.parts.reindexer
        try:
            if job.since is None:
                since = reindexer.catalog_state(job.tenant)  # before the walk reads anything
                total = reindexer.total(job.tenant, job.types)
                job = dataclasses.replace(job, status="running", since=since, total=total)
            else:
                since = job.since
                batch = reindexer.batch(job.tenant, job.types, job.position, self.batch_size)
                job = job.advanced(batch)
                if batch.done:
                    marked = reindexer.finish(job.tenant, job.types, job.url, since)
                    job = dataclasses.replace(job, status="completed", searchable=marked, finished_ms=self.clock())
                    logger.info("reindex job completed", extra={"tenant": job.tenant, "job": job.id})
        except Exception as exc:
            attempts = job.attempts + 1
            logger.exception("reindex step failed", extra={"tenant": job.tenant, "job": job.id, "attempt": attempts})
            message = f"step failed: {type(exc).__name__}"
            job = dataclasses.replace(
                job,
                attempts=attempts,
                errors=(*job.errors, message)[:100],
                error_count=job.error_count + 1,
                status="failed" if attempts >= MAX_ATTEMPTS else job.status,
                finished_ms=self.clock() if attempts >= MAX_ATTEMPTS else None,
            )
        job = dataclasses.replace(job, updated_ms=self.clock())
        return self.parts.jobs.save(job, self.worker, self.clock() + self.lease_ms)
