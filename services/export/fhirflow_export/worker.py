"""The export worker: runs a job to its end, in steps (DESIGN.md §3: job record + queue → workers → NDJSON).

A job's plan is a list of *segments*, each one search through the search engine (the port the
search service uses), keyset-paged without a window limit:

- system level: one segment per type, or per ``_typeFilter`` query of a type that has filters;
- Patient level: the same, keeping only resources in some Patient compartment;
- Group level: per member patient (from ``Group.member.entity``, without ``inactive`` members and
  those whose ``member.period`` does not cover the transaction time), a search of that patient's
  compartment over the types without filters, and one per filter query of the others;
- Patient and Group level, at the end: the resources of ``referenced_types`` (Organization,
  Practitioner, Location, Medication) that the exported resources reference.

Every search carries the tenant, ``_since`` (``_lastUpdated=ge``), the filter's criteria and the
token's access constraint (:mod:`fhirflow_export.access`), so a resource the token may not read
is never fetched. A resource in two members' compartments, or matching two filters of its type,
is written once: at the first member, or the first filter, it belongs to.

Resources go to NDJSON files of at most ``export_file_resources`` lines per type
(``export/{job}/{Type}-{n}.ndjson`` in the blob store). After each flush the job's checkpoint
records the segment and keyset position reached; a worker that must stop (Lambda's time running
out, the embedded worker's turn ending) flushes, queues the next step and returns, and the next
step resumes from the checkpoint. Files are keyed by part number, so a step that runs twice (a
redelivered message) rewrites the same files. Every job write is conditional on its revision:
a worker that loses to a cancel deletes what it wrote and stops.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fhirflow import jsonio
from fhirflow.errors import FhirError
from fhirflow.query.ast import Query
from fhirflow.query.limits import limit_hops
from fhirflow.query.parser import parse
from fhirflow.search_ports import Hit, PageRequest, SearchEngine, SearchScope
from fhirflow.timefmt import instant
from fhirflow_export.access import access_rules, hop_rule
from fhirflow_export.params import query_pairs
from fhirflow_export.status import NDJSON, file_key

if TYPE_CHECKING:
    from fhirflow.job_ports import ExportJobStore, JobQueue
    from fhirflow.ports import BlobStore, Clock, ResourceStore
    from fhirflow_contracts import ExportFile, ExportIssue, ExportJob, StartExport

logger = logging.getLogger("fhirflow.export")

PAGE_SIZE = 500
PROGRESS_SECONDS = 2.0
"""How often, at most, a segment's end flushes the files and saves the checkpoint (X-Progress)."""
CANCEL_CHECK_PAGES = 20


class Superseded(Exception):
    """The job changed under this worker (cancelled, or another delivery of it moved on)."""


@dataclass(frozen=True, slots=True)
class Segment:
    types: tuple[str, ...]
    filter_type: str | None = None
    filter_index: int = 0
    member: int | None = None
    """The index of the Group member whose compartment this segment searches."""


@dataclass
class Plan:
    segments: list[Segment]
    filters: dict[str, list[list[tuple[str, str]]]]
    members: list[str] = field(default_factory=list)

    @property
    def member_index(self) -> dict[str, int]:
        return {member: index for index, member in enumerate(self.members)}


def plan_for(job: ExportJob, members: list[str] | None = None) -> Plan:
    filters: dict[str, list[list[tuple[str, str]]]] = {}
    for type_filter in job.type_filters:
        if type_filter.resource_type in job.types:
            filters.setdefault(type_filter.resource_type, []).append(query_pairs(type_filter.params))
    segments: list[Segment] = []
    if job.level != "group":
        for rtype in job.types:
            if rtype in filters:
                segments += [Segment((rtype,), rtype, k) for k in range(len(filters[rtype]))]
            else:
                segments.append(Segment((rtype,)))
        return Plan(segments, filters)
    unfiltered = tuple(t for t in job.types if t not in filters)
    for index in range(len(members or [])):
        if unfiltered:
            segments.append(Segment(unfiltered, member=index))
        for rtype in job.types:
            segments += [Segment((rtype,), rtype, k, index) for k in range(len(filters.get(rtype, [])))]
    return Plan(segments, filters, list(members or []))


def group_members(group: dict[str, Any], base_url: str, at_ms: int | None = None) -> list[str]:
    """The ids of the Patients a Group lists as members at ``at_ms`` (the export's transaction
    time): ``member.entity`` not ``inactive``, whose ``member.period`` (if any) has begun and not
    ended then (group.html#Group.member.period: "the period over which the patient was a member");
    by relative reference or absolute under this server's base; sorted, without duplicates."""
    prefix = base_url.rstrip("/") + "/"
    found: set[str] = set()
    for member in group.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        if at_ms is not None and not _member_at(member.get("period"), at_ms):
            continue
        reference = (member.get("entity") or {}).get("reference")
        if not isinstance(reference, str):
            continue
        reference = reference.removeprefix(prefix)
        parts = reference.split("/")
        if len(parts) == 2 and parts[0] == "Patient" and parts[1]:
            found.add(parts[1])
    return sorted(found)


def _member_at(period: Any, at_ms: int) -> bool:
    """Whether a membership period covers ``at_ms``; a bound that cannot be read does not exclude
    (the Group was validated when stored)."""
    from fhirflow.errors import BadRequest
    from fhirflow.timefmt import datetime_range

    if not isinstance(period, dict):
        return True
    try:
        if isinstance(period.get("end"), str) and datetime_range(period["end"], name="period.end")[1] <= at_ms:
            return False  # ended: the end's whole precision interval lies before the transaction time
        if isinstance(period.get("start"), str) and datetime_range(period["start"], name="period.start")[0] > at_ms:
            return False  # not begun yet
    except BadRequest:
        return True
    return True


def references_to(resource: Any, types: frozenset[str], base_url: str) -> set[tuple[str, str]]:
    """The ``(type, id)`` of every literal reference in ``resource`` to one of ``types`` (relative,
    or absolute under this server's base)."""
    prefix = base_url.rstrip("/") + "/"
    found: set[tuple[str, str]] = set()
    stack = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            reference = node.get("reference")
            if isinstance(reference, str):
                parts = reference.removeprefix(prefix).split("/")
                if len(parts) == 2 and parts[0] in types and parts[1]:
                    found.add((parts[0], parts[1]))
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))
    return found


@dataclass
class _Run:
    """One step's state: the job as last saved and what is written but not yet saved."""

    job: ExportJob
    step: int
    plan: Plan
    buffers: dict[str, list[bytes]] = field(default_factory=dict)
    parts: dict[str, int] = field(default_factory=dict)
    written: list[ExportFile] = field(default_factory=list)
    issues: list[ExportIssue] = field(default_factory=list)
    exported: int = 0
    parts_written: bool = False
    """A part was written since the last checkpoint (so the next one is due after this page)."""
    saved_at: float = field(default_factory=time.monotonic)


class ExportWorker:
    def __init__(
        self,
        *,
        jobs: ExportJobStore,
        queue: JobQueue,
        files: BlobStore,
        engine: SearchEngine,
        store: ResourceStore,
        clock: Clock,
        file_resources: int = 10_000,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.jobs = jobs
        self.queue = queue
        self.files = files
        self.engine = engine
        self.store = store
        self.clock = clock
        self.file_resources = max(1, file_resources)
        self.page_size = max(1, min(page_size, self.file_resources))

    # -- one step -------------------------------------------------------------------------------

    def run(self, command: StartExport, *, should_yield: Callable[[], bool], final_attempt: bool = False) -> None:
        """Run one step of the job ``command`` names. Raises on an unexpected failure (the message
        is retried); on the final attempt the job is marked failed instead."""
        job = self.jobs.get(command.tenant, command.job_id)
        if job is None or job.finished or command.step < job.checkpoint.step:
            return  # unknown, over, or a stale delivery of a step that a later one replaced
        try:
            self._run(job, command.step, should_yield)
        except Superseded:
            return
        except Exception as exc:
            logger.exception("export step failed", extra={"job": job.id, "tenant": job.tenant, "step": command.step})
            if not final_attempt:
                raise
            self._fail(job, f"The export failed ({type(exc).__name__}); it has been logged")

    def _run(self, job: ExportJob, step: int, should_yield: Callable[[], bool]) -> None:
        from fhirflow_contracts import ExportIssue

        if job.status == "accepted":
            job = self._save(job, job.model_copy(update={"status": "in-progress"}), [])
        try:
            members, group_version = self._members(job)
        except FhirError as gone:
            self._fail(job, gone.diagnostics)
            return
        plan = plan_for(job, members)
        point = job.checkpoint
        run = _Run(job, step, plan, parts=dict(point.parts), written=list(job.output), exported=point.exported)
        if point.segments != len(plan.segments) or point.group_version != group_version:
            checkpoint = point.model_copy(update={"segments": len(plan.segments), "group_version": group_version})
            run.job = self._save(job, job.model_copy(update={"checkpoint": checkpoint}), run.written)
        for index in range(point.segment, len(plan.segments)):
            segment = plan.segments[index]
            after = tuple(point.position) if index == point.segment and point.position is not None else None
            try:
                for position in self._segment(run, segment, after):
                    if run.parts_written:
                        self._checkpoint(run, index, position)
                    if should_yield():
                        self._continue(run, index, position)
                        return
            except FhirError as error:  # e.g. a filter the backend refused at run time: reported, not fatal
                run.issues.append(ExportIssue(severity="error", code=error.code, diagnostics=error.diagnostics))
            if time.monotonic() - run.saved_at >= PROGRESS_SECONDS:
                self._checkpoint(run, index + 1, None)
        self._finish(run)

    # -- searching ------------------------------------------------------------------------------

    def _segment(self, run: _Run, segment: Segment, after: tuple[Any, ...] | None) -> Iterator[list[Any]]:
        """Page through one segment, buffering what it exports; yields the position after each page."""
        job, plan = run.job, run.plan
        compartment = ("Patient", plan.members[segment.member]) if segment.member is not None else None
        scope = SearchScope(
            tenant=job.tenant,
            base_url=job.base_url,
            types=segment.types,
            compartment=compartment,
            access=access_rules(job, segment.types),
        )
        query = self._query(job, segment, plan)
        pages = 0
        while True:
            page = self.engine.page(scope, query, PageRequest(self.page_size, after=after))
            hits = page.hits
            if segment.filter_type is not None and segment.filter_index > 0 and hits:
                earlier = self._matching_earlier_filters(job, segment, plan, scope, hits)
                hits = [h for h in hits if h.id not in earlier]
            for hit in hits:
                if self._keep(job, segment, plan, hit):
                    lines = run.buffers.setdefault(hit.type, [])
                    lines.append(_line(hit.body))
                    run.exported += 1
                    if len(lines) >= self.file_resources:
                        self._write_part(run, hit.type)
            if not page.hits:
                return
            after = page.hits[-1].position
            yield list(after)
            pages += 1
            if pages % CANCEL_CHECK_PAGES == 0:
                self._check_cancelled(run)
            if not page.more:
                return

    def _query(self, job: ExportJob, segment: Segment, plan: Plan) -> Query:
        pairs: list[tuple[str, str]] = []
        if job.since is not None:
            from fhirflow_contracts import ms_of

            pairs.append(("_lastUpdated", f"ge{instant(ms_of(job.since))}"))
        if segment.filter_type is not None:
            pairs += plan.filters[segment.filter_type][segment.filter_index]
        if len(segment.types) == 1:
            query = parse(segment.types[0], pairs, strict=False)
        else:
            query = parse(None, [("_type", ",".join(segment.types)), *pairs], strict=False)
        criteria = tuple(c for c in query.criteria if self.engine.unsupported(c) is None)
        # Chains and _has in _typeFilter look only at what the token could read (issue 14).
        criteria = limit_hops(dataclasses.replace(query, criteria=criteria), lambda t: hop_rule(job, t)).criteria
        return dataclasses.replace(
            query,
            criteria=criteria,
            includes=(),
            revincludes=(),
            sort=(),
            count=None,
            total=None,
            summary=None,
            elements=(),
            contained=None,
            contained_type=None,
            ignored=[],
        )

    def _matching_earlier_filters(
        self, job: ExportJob, segment: Segment, plan: Plan, scope: SearchScope, hits: list[Hit]
    ) -> set[str]:
        """The ids among ``hits`` that an earlier filter of their type matches (written there)."""
        ids = ",".join(h.id for h in hits)
        found: set[str] = set()
        for k in range(segment.filter_index):
            earlier = dataclasses.replace(segment, filter_index=k)
            query = self._query(job, earlier, plan)
            query = dataclasses.replace(
                query, criteria=(*query.criteria, *parse(segment.types[0], [("_id", ids)], strict=True).criteria)
            )
            page = self.engine.page(scope, query, PageRequest(len(hits)))
            found.update(h.id for h in page.hits)
        return found

    def _keep(self, job: ExportJob, segment: Segment, plan: Plan, hit: Hit) -> bool:
        if job.level == "system" or (job.level == "patient" and hit.type == "Patient"):
            return True
        if job.level == "group" and (segment.member == 0 or len(plan.members) < 2):
            return True
        from fhirflow.searchparams.compartments import compartments_of

        resource = jsonio.loads(hit.body)
        patients = [i for t, i in compartments_of(resource) if t == "Patient"]
        if job.level == "patient":
            return bool(patients)  # in some patient's compartment
        # In several members' compartments: written with the first of them only.
        index = plan.member_index
        first = min((index[p] for p in patients if p in index), default=segment.member)
        return first == segment.member

    def _members(self, job: ExportJob) -> tuple[list[str] | None, int | None]:
        """A Group export's members, from the Group version the job started with."""
        from fhirflow.errors import NotFound

        if job.level != "group" or job.group_id is None:
            return None, None
        pinned = job.checkpoint.group_version
        if pinned is None:
            head = self.store.current(job.tenant, "Group", job.group_id)
        else:
            head = self.store.version(job.tenant, "Group", job.group_id, pinned)
        if head is None or head.deleted or head.body is None:
            raise NotFound(f"Group/{job.group_id} no longer exists")
        group = jsonio.loads(head.body)
        from fhirflow_contracts import ms_of

        at = ms_of(job.transaction_time)
        return group_members(group if isinstance(group, dict) else {}, job.base_url, at), head.version

    # -- files and the job record ---------------------------------------------------------------

    def _flush(self, run: _Run) -> None:

        for rtype in sorted(run.buffers):
            self._write_part(run, rtype)
        run.buffers.clear()
        run.parts_written = False

    def _write_part(self, run: _Run, rtype: str) -> None:
        """The type's buffered lines as its next file (part numbers make a rerun rewrite the same files)."""
        from fhirflow_contracts import ExportFile

        lines = run.buffers.get(rtype)
        if not lines:
            return
        part = run.parts.get(rtype, 0) + 1
        name = f"{rtype}-{part}.ndjson"
        self.files.put(file_key(run.job.id, name), b"".join(lines), content_type=NDJSON)
        run.parts[rtype] = part
        run.written.append(ExportFile(type=rtype, file=name, count=len(lines)))
        run.buffers[rtype] = []
        run.parts_written = True

    def _checkpoint(self, run: _Run, segment: int, position: list[Any] | None, step: int | None = None) -> None:
        self._flush(run)
        point = run.job.checkpoint.model_copy(
            update={
                "segment": segment,
                "position": position,
                "parts": dict(run.parts),
                "exported": run.exported,
                "step": run.step if step is None else step,
            }
        )
        changes = {"checkpoint": point, "output": list(run.written), "issues": [*run.job.issues, *run.issues]}
        run.job = self._save(run.job, run.job.model_copy(update=changes), run.written)
        run.issues = []
        run.saved_at = time.monotonic()

    def _continue(self, run: _Run, segment: int, position: list[Any]) -> None:
        """Out of time: queue the next step, then record where it starts. (In that order: if the
        save is lost, the next step redoes work from the older checkpoint, rewriting the same files.)"""
        from fhirflow_contracts import StartExport

        self._flush(run)
        step = run.step + 1
        command = StartExport.of(tenant=run.job.tenant, job_id=run.job.id, now_ms=self.clock.now_ms(), step=step)
        self.queue.send(command.to_json())
        self._checkpoint(run, segment, position, step=step)

    def _referenced(self, run: _Run) -> None:
        """Patient/Group level: the resources of ``job.referenced_types`` that the exported ones
        reference, read back from this job's files, fetched by id under the token's access rules
        (``_since`` does not apply: export.html lets referenced resources come whatever their age)."""
        job = run.job
        types = frozenset(job.referenced_types)
        if not types:
            return
        self._flush(run)
        wanted: set[tuple[str, str]] = set()
        for entry in run.written:
            if entry.type in types:
                continue
            for line in self.files.get(file_key(job.id, entry.file)).splitlines():
                if line.strip():
                    wanted |= references_to(jsonio.loads(line), types, job.base_url)
        for rtype in sorted(types):
            ids = sorted(i for t, i in wanted if t == rtype)
            scope = SearchScope(
                tenant=job.tenant, base_url=job.base_url, types=(rtype,), access=access_rules(job, (rtype,))
            )
            for start in range(0, len(ids), 100):
                query = parse(rtype, [("_id", ",".join(ids[start : start + 100]))], strict=False)
                for hit in self.engine.page(scope, query, PageRequest(100)).hits:
                    lines = run.buffers.setdefault(hit.type, [])
                    lines.append(_line(hit.body))
                    run.exported += 1
                    if len(lines) >= self.file_resources:
                        self._write_part(run, hit.type)

    def _finish(self, run: _Run) -> None:
        from fhirflow_contracts import ExportFile

        self._referenced(run)
        self._flush(run)
        issues = [*run.job.issues, *run.issues]
        errors: list[ExportFile] = []
        if issues:
            name = "errors-1.ndjson"
            lines = [_line(jsonio.dumps(_outcome(issue))) for issue in issues]
            self.files.put(file_key(run.job.id, name), b"".join(lines), content_type=NDJSON)
            errors.append(ExportFile(type="OperationOutcome", file=name, count=len(lines)))
        point = run.job.checkpoint.model_copy(
            update={
                "segment": len(run.plan.segments),
                "position": None,
                "parts": dict(run.parts),
                "exported": run.exported,
            }
        )
        done = run.job.model_copy(
            update={
                "status": "completed",
                "checkpoint": point,
                "output": list(run.written),
                "error": errors,
                "issues": issues,
            }
        )
        self._save(run.job, done, [*run.written, *errors])

    def _fail(self, job: ExportJob, reason: str) -> None:
        latest = self.jobs.get(job.tenant, job.id) or job
        if latest.finished:
            return
        failed = self.jobs.replace(latest.model_copy(update={"status": "failed", "failure": reason[:500]}))
        if failed is not None:
            self._discard(failed, [*failed.output, *failed.error])

    def _save(self, current: ExportJob, new: ExportJob, written: list[ExportFile]) -> ExportJob:
        stored = self.jobs.replace(new.model_copy(update={"revision": current.revision, "updated_at": self._now()}))
        if stored is not None:
            return stored
        latest = self.jobs.get(current.tenant, current.id)
        if latest is not None and latest.status == "cancelled":
            self._discard(current, written)
        raise Superseded(current.id)

    def _check_cancelled(self, run: _Run) -> None:
        latest = self.jobs.get(run.job.tenant, run.job.id)
        if latest is None or latest.status == "cancelled" or latest.revision != run.job.revision:
            if latest is None or latest.status == "cancelled":
                self._flush(run)
                self._discard(run.job, run.written)
            raise Superseded(run.job.id)

    def _discard(self, job: ExportJob, written: list[ExportFile]) -> None:
        for entry in written:
            self.files.delete(file_key(job.id, entry.file))

    def _now(self) -> datetime:
        from fhirflow_contracts import instant_of

        return instant_of(self.clock.now_ms())


def _line(body: bytes) -> bytes:
    """One NDJSON line: the stored JSON, which is compact; re-serialised if it ever is not."""
    if b"\n" in body or b"\r" in body:
        body = jsonio.dumps(jsonio.loads(body))
    return body + b"\n"


def _outcome(issue: ExportIssue) -> dict[str, Any]:
    entry: dict[str, Any] = {"severity": issue.severity, "code": issue.code, "diagnostics": issue.diagnostics}
    if issue.expression:
        entry["expression"] = list(issue.expression)
    return {"resourceType": "OperationOutcome", "issue": [entry]}
