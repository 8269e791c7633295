"""The job's status, its cancellation and its files (https://hl7.org/fhir/uv/bulkdata/STU2/export.html).

- ``GET [base]/_export/{job}``: ``202`` with ``X-Progress`` while it runs; ``200`` with the manifest
  (``application/json``: ``transactionTime``, ``request``, ``requiresAccessToken``, ``output``,
  ``error``) when done; the OperationOutcome with ``500`` when it failed.
- ``DELETE [base]/_export/{job}``: ``202``; the job stops, its files are deleted, and from then on
  the status URL answers ``404``.
- ``GET [base]/_export/{job}/{file}``: one NDJSON file (``application/fhir+ndjson``).

Only the tenant and principal (issuer, subject and client: :mod:`fhirflow.authz.ownership`) that
started a job may see it; for anyone else it does not exist (404), as for a job id that was never
issued. Each status and file request re-checks the current token's reach: it must still be
allowed to export every type of the job, with no narrower constraint than the job was given
(a token of the same principal with fewer scopes or another patient gets 403, not the files).

File URLs: where the files are on S3 (``FHIRFLOW_EXPORT_BUCKET``), the manifest carries presigned
S3 URLs valid for ``FHIRFLOW_EXPORT_URL_SECONDS`` and ``requiresAccessToken: false``: export files
can be far larger than what API Gateway (10 MB) and Lambda (6 MB) can relay, and a presigned URL
is handed only to the owner, minted when it polls. Elsewhere (the embedded mode) the manifest
points at the download route above, which checks the token like the status request does
(``requiresAccessToken: true`` when authorization is on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from fhirflow import timefmt
from fhirflow.errors import FhirError, Forbidden, NotFound
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.ports import BlobNotFound
from fhirflow.runtime import Dependencies
from fhirflow_export.access import readable_types
from fhirflow_export.kickoff import STATUS_PATH, ExportParts, owner_of

if TYPE_CHECKING:
    from fhirflow_contracts import ExportFile, ExportJob

NDJSON = "application/fhir+ndjson"
_CANCEL_ATTEMPTS = 10


class ExportFailed(FhirError):
    """The job ended in failure: the status request's error response (export.html#response---error-status-1)."""

    status, code = 500, "exception"


def file_key(job_id: str, file: str) -> str:
    return f"export/{job_id}/{file}"


def owned_job(deps: Dependencies, parts: ExportParts, request: FhirRequest) -> ExportJob:
    """The job named in the path, if this tenant and principal started it and it was not cancelled."""
    deps.policy.authorize(request, "export", None)  # the tenant, and a token that may export at all
    job_id = request.path_params.get("job", "")
    job = parts.jobs.get(request.tenant, job_id) if job_id.isalnum() and len(job_id) <= 64 else None
    if job is None or job.status == "cancelled" or job.owner != owner_of(request):
        raise NotFound(f"No export job {job_id[:64]} here")
    _check_reach(deps, request, job)
    return job


def _check_reach(deps: Dependencies, request: FhirRequest, job: ExportJob) -> None:
    """The current token may export every type of the job (else the policy's 403), each at least
    as widely as the job does: unconstrained now, or with the very constraint the job keeps."""
    _, access = readable_types(deps.policy, request, [*job.types, *job.referenced_types], explicit=True)
    granted = {a.resource_type: a for a in job.access or ()}
    for current in access or ():
        if granted.get(current.resource_type) != current:
            raise Forbidden(f"This access token may not read all of export job {job.id}'s {current.resource_type}")


def status(deps: Dependencies, parts: ExportParts, request: FhirRequest) -> FhirResponse:
    job = owned_job(deps, parts, request)
    if job.status in ("accepted", "in-progress"):
        return FhirResponse(status=202, headers={"X-Progress": progress(job), "Retry-After": "1"})
    if job.status == "failed":
        raise ExportFailed(job.failure or "The export failed")
    manifest, expires = _manifest(deps, parts, request, job)
    headers = {"Expires": timefmt.http_date(expires)} if expires is not None else {}
    return FhirResponse(status=200, binary=orjson.dumps(manifest), content_type="application/json", headers=headers)


def progress(job: ExportJob) -> str:
    """``X-Progress``: how far the worker is, in words (no resource data)."""
    if job.status == "accepted":
        return "queued"
    point = job.checkpoint
    of = f" of {point.segments}" if point.segments is not None else ""
    return f"in progress: step {point.segment}{of}, {point.exported} resources exported"


def _manifest(
    deps: Dependencies, parts: ExportParts, request: FhirRequest, job: ExportJob
) -> tuple[dict[str, Any], int | None]:
    presign = getattr(parts.files, "presigned_url", None)
    seconds = deps.settings.export_url_seconds

    def url(entry: ExportFile) -> str:
        if presign is not None:
            return str(presign(file_key(job.id, entry.file), expires_in=seconds))
        return f"{request.base_url}/{STATUS_PATH}/{job.id}/{entry.file}"

    from fhirflow_contracts import ms_of

    manifest: dict[str, Any] = {
        "transactionTime": timefmt.instant(ms_of(job.transaction_time)),
        "request": job.request,
        "requiresAccessToken": job.requires_access_token and presign is None,
        "output": [{"type": f.type, "url": url(f), "count": f.count} for f in job.output],
        "error": [{"type": f.type, "url": url(f), "count": f.count} for f in job.error],
    }
    expires = deps.clock.now_ms() + seconds * 1000 if presign is not None else None
    return manifest, expires


def cancel(deps: Dependencies, parts: ExportParts, request: FhirRequest) -> FhirResponse:
    """Bulk data delete request: stop the job and delete its files (the worker deletes what it
    writes after this, when it sees the job cancelled)."""
    job = owned_job(deps, parts, request)
    for _ in range(_CANCEL_ATTEMPTS):
        saved = parts.jobs.replace(job.model_copy(update={"status": "cancelled"}))
        if saved is not None:
            delete_files(parts, saved)
            break
        found = parts.jobs.get(job.tenant, job.id)
        if found is None or found.status == "cancelled":
            break
        job = found
    else:
        raise FhirError("The export job kept changing; retry the delete request")
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": "The export was cancelled"}],
    }
    return FhirResponse(status=202, resource=outcome)


def delete_files(parts: ExportParts, job: ExportJob) -> None:
    for entry in [*job.output, *job.error]:
        parts.files.delete(file_key(job.id, entry.file))


def download(deps: Dependencies, parts: ExportParts, request: FhirRequest) -> FhirResponse:
    job = owned_job(deps, parts, request)
    name = request.path_params.get("file", "")
    entry = next((f for f in [*job.output, *job.error] if f.file == name), None)
    if job.status != "completed" or entry is None:
        raise NotFound(f"No file {name[:64]} in export job {job.id}")
    try:
        data = parts.files.get(file_key(job.id, entry.file))
    except BlobNotFound as exc:
        raise NotFound(f"The file {name[:64]} of export job {job.id} has expired") from exc
    return FhirResponse(status=200, binary=data, content_type=NDJSON)
