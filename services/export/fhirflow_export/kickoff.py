"""The bulk data kick-off request (https://hl7.org/fhir/uv/bulkdata/STU2/export.html#bulk-data-kick-off-request).

``GET|POST [base]/$export``, ``[base]/Patient/$export`` and ``[base]/Group/[id]/$export`` with
``Prefer: respond-async``: the parameters are checked, the token's reach is worked out per type
(:mod:`fhirflow_export.access`), the job is stored and a ``StartExport`` command queued, and the
answer is ``202 Accepted`` with the status URL in ``Content-Location``. No resource is read here
(a Group's members are resolved by the worker); the export itself runs in the background.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlencode

from fhirflow.authz import ownership
from fhirflow.errors import BadRequest, Forbidden, Issue, NotFound
from fhirflow.http import prefer_handling
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.runtime import Dependencies
from fhirflow.searchparams.registry import default_registry
from fhirflow_export.access import readable_types
from fhirflow_export.params import kickoff_pairs, parse_parameters, patient_compartment_types, query_pairs

if TYPE_CHECKING:
    from fhirflow.job_ports import ExportJobStore, JobQueue
    from fhirflow.ports import BlobStore
    from fhirflow.search_ports import SearchEngine
    from fhirflow_contracts import ExportIssue, ExportOwner, TypeAccess

Level = Literal["system", "patient", "group"]
LEVELS: dict[str, Level] = {"export": "system", "export-patient": "patient", "export-group": "group"}
STATUS_PATH = "_export"
REFERENCED_TYPES = ("Location", "Medication", "Organization", "Practitioner")
"""Outside the Patient compartment, exported at Patient and Group level when the exported resources
reference them and ``_type`` is not given (export.html ``_type``: "other resources outside of the
Patient Compartment that are referenced by the resources being returned ... MAY also be returned")."""


@dataclass
class ExportParts:
    """What the export use cases need beside the service's Dependencies."""

    jobs: ExportJobStore
    queue: JobQueue
    files: BlobStore
    engine: SearchEngine


def wants_async(request: FhirRequest) -> bool:
    """``Prefer: respond-async`` (RFC 7240), alone or among other preferences."""
    return any(token.strip().lower() == "respond-async" for token in request.headers.get("prefer", "").split(","))


def owner_of(request: FhirRequest, *, starting: bool = False) -> ExportOwner | None:
    """The principal as the job keeps it: issuer, subject and client (None when authorization is
    off); ``starting``: 403 for a token that names no one (:mod:`fhirflow.authz.ownership`)."""
    owner = (ownership.require_owner if starting else ownership.owner_of)(request.principal)
    if owner is None:
        return None
    from fhirflow_contracts import ExportOwner

    return ExportOwner(issuer=owner[0], subject=owner[1], client_id=owner[2])


def kick_off(deps: Dependencies, parts: ExportParts, request: FhirRequest, level: Level) -> FhirResponse:
    registry = default_registry()
    _check_target(request, level)
    if not wants_async(request):
        raise BadRequest(
            "A bulk data kick-off needs the header 'Prefer: respond-async' (the export runs in the background)",
            expression="Prefer",
        )
    deps.policy.authorize(request, "export", None)
    owner = owner_of(request, starting=True)
    params = parse_parameters(
        kickoff_pairs(request),
        strict=prefer_handling(request) == "strict",
        registry=registry,
        engine=parts.engine,
        patient_level=level != "system",
        lenient=_asks_lenient(request),
    )
    if level == "group":
        _check_group(deps, request)
    if params.types is not None:
        candidates: list[str] = list(params.types)
    elif level == "system":
        candidates = sorted(registry.resource_types)
    else:
        candidates = list(patient_compartment_types(registry))
    # No candidates: lenient handling ignored every type named (reported in the manifest).
    types, access = readable_types(deps.policy, request, candidates, explicit=params.types is not None)
    referenced: list[str] = []
    if level != "system" and types:
        wanted = list(params.referenced) if params.types is not None else list(REFERENCED_TYPES)
        if wanted:
            try:
                referenced, more = readable_types(deps.policy, request, wanted, explicit=params.types is not None)
            except Forbidden:
                if params.types is not None:
                    raise
                referenced, more = [], None  # by default only what the token may read comes along
            access = [*(access or ()), *(more or ())] or access
    access = _with_hop_access(deps, request, params.type_filters, types, access)
    # The job's contracts (pydantic models, ~100 ms to import in a cold Lambda) only once the
    # kick-off is valid and allowed: a refused one answers without them (issue 13).
    from fhirflow_contracts import ExportJob, StartExport, TypeFilter, instant_of

    now = deps.clock.now_ms()
    job_id = uuid.uuid4().hex
    job = ExportJob(
        metadata=ExportJob.job_metadata(job_id, now),
        id=job_id,
        tenant=request.tenant,
        owner=owner,
        status="accepted",
        level=level,
        group_id=request.resource_id if level == "group" else None,
        request=_request_url(request, level),
        base_url=request.base_url,
        transaction_time=instant_of(now),
        types=types,
        referenced_types=referenced,
        since=instant_of(params.since_ms) if params.since_ms is not None else None,
        type_filters=[
            TypeFilter(resource_type=rtype, params=list(pairs))
            for rtype, pairs in params.type_filters
            if rtype in types
        ],
        output_format=params.output_format,
        access=access,
        requires_access_token=deps.authenticator is not None,
        issues=[_issue(i) for i in params.issues],
        updated_at=instant_of(now),
    )
    parts.jobs.create(job)
    try:
        parts.queue.send(StartExport.of(tenant=job.tenant, job_id=job.id, now_ms=now).to_json())
    except Exception:
        # Nothing will run it: say so on the status URL rather than answer 202 forever.
        parts.jobs.replace(job.model_copy(update={"status": "failed", "failure": "The export could not be queued"}))
        raise
    location = f"{request.base_url}/{STATUS_PATH}/{job.id}"
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": f"Accepted; poll {location}"}],
    }
    return FhirResponse(status=202, resource=outcome, headers={"Content-Location": location})


def _with_hop_access(
    deps: Dependencies,
    request: FhirRequest,
    type_filters: Sequence[tuple[str, Sequence[tuple[str, str]]]],
    types: list[str],
    access: list[TypeAccess] | None,
) -> list[TypeAccess] | None:
    """``access`` and the constraints of the types the ``_typeFilter`` chains and ``_has`` look at,
    kept in the job so the worker limits each hop to what the token may read (issue 14). A hop
    type the token may not read at all is a 403, as exporting it would be."""
    from fhirflow.query.limits import hop_types
    from fhirflow.query.parser import parse

    hops: set[str] = set()
    for rtype, pairs in type_filters:
        if rtype in types:
            hops |= hop_types(parse(rtype, query_pairs(pairs), strict=False))
    hops -= {a.resource_type for a in access or ()}
    if not hops:
        return access
    _, hop_access = readable_types(deps.policy, request, sorted(hops), explicit=True)
    return [*(access or ()), *(hop_access or ())] or access


def _asks_lenient(request: FhirRequest) -> bool:
    """``Prefer: handling=lenient`` said explicitly (this server's default is lenient already, but
    the IG makes ignoring some errors conditional on the client asking for it)."""
    for token in request.headers.get("prefer", "").split(","):
        key, _, value = token.strip().partition("=")
        if key.strip().lower() == "handling" and value.strip().lower() == "lenient":
            return True
    return False


def _check_target(request: FhirRequest, level: Level) -> None:
    wanted = {"patient": "Patient", "group": "Group"}.get(level)
    if wanted is not None and request.resource_type != wanted:
        where = (
            f"{request.resource_type[:64]}/{request.resource_id[:64]}" if level == "group" else request.resource_type
        )
        raise NotFound(f"$export is defined on {wanted}, not on {where[:130]}")


def _check_group(deps: Dependencies, request: FhirRequest) -> None:
    """The Group must exist and be readable by the token, as a read of it would be.

    A token that may read no Group at all gets a 403 that says so, before the Group is looked up
    (it tells nothing about this Group). A token that may read some Groups but not this one gets
    what a read of it gets (404 "not known" by default, ``denied_read_status``), so that whether
    the Group exists stays unknown to it."""
    try:
        deps.policy.authorize(request, "read", "Group")
    except Forbidden as refused:
        raise Forbidden(
            f"The access token may not read Group resources, so it cannot export Group/{request.resource_id[:64]}",
            headers=refused.headers,
        ) from refused
    head = deps.store.current(request.tenant, "Group", request.resource_id)
    if head is None or head.deleted:
        raise NotFound(f"Group/{request.resource_id[:64]} is not known")
    deps.policy.check_read(request, head)


def _request_url(request: FhirRequest, level: Level) -> str:
    """The kick-off URL for the manifest's ``request`` (a POST's parameters are not in it)."""
    path = {"system": "/$export", "patient": "/Patient/$export"}.get(level) or f"/Group/{request.resource_id}/$export"
    query = urlencode(request.query) if request.method == "GET" and request.query else ""
    return f"{request.base_url}{path}" + (f"?{query}" if query else "")


def _issue(issue: Issue) -> ExportIssue:
    from fhirflow_contracts import ExportIssue

    severity = "error" if issue.severity == "fatal" else issue.severity
    return ExportIssue(
        severity=severity, code=issue.code, diagnostics=issue.diagnostics, expression=list(issue.expression)
    )
