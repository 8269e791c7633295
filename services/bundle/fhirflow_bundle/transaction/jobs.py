"""``Prefer: respond-async`` for batches and transactions (http://hl7.org/fhir/R4/async.html).

The bundle service answers ``202 Accepted`` with ``Content-Location: {base}/_async/{job}`` after
storing the request and starting the bundle workflow under the job's name (Step Functions'
Standard state machine in AWS, a background thread locally). The workflow's ``Prepare`` step runs
the bundle from the stored request as the principal the request was authenticated as (its
validated claims are stored; its credentials never are: no token on S3 or on disk); the final answer is stored
when it is known (at once for what commits in one write or fails; at the commit point or after the
rollback for a multi-batch transaction). ``GET`` on the status URL answers 202 while the job runs
and then the stored answer: the ``transaction-response`` Bundle (200) or the OperationOutcome with
the status the synchronous request would have had. Only the tenant, and when authorization is on
the same principal (issuer, subject and client: :mod:`fhirflow.authz.ownership`), that started a
job may read it; anyone else gets 404. The owner's current token must still reach what the
submitting token did (its scopes, launch context and groups), else 403.

Blobs (S3 in AWS): ``async/{job}/meta.json`` (owner), ``request.json`` (deleted once prepared),
``prepared.json`` (the answer a committing transaction will give) and ``response.json``.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson

from fhirflow import jsonio
from fhirflow.authz import ownership
from fhirflow.authz.principal import Principal
from fhirflow.errors import FhirError, NotFound, outcome_for
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.ports import BlobNotFound, BlobStore, WorkflowExecutor
from fhirflow.routes import TENANT_PREFIX

STATUS_PATH = "_async"
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie", "x-api-key")
"""Never stored with a job (the request's headers are lower-cased by fhirflow.http)."""
_KEPT_HEADERS = ("Location", "ETag", "Last-Modified", "Content-Location")


def wants_async(request: FhirRequest) -> bool:
    """``Prefer: respond-async`` (RFC 7240), alone or among other preferences."""
    return any(token.strip().lower() == "respond-async" for token in request.headers.get("prefer", "").split(","))


def _without_async(prefer: str) -> str:
    return ", ".join(t.strip() for t in prefer.split(",") if t.strip() and t.strip().lower() != "respond-async")


def _owner(request: FhirRequest) -> list[str | None] | None:
    owner = ownership.owner_of(request.principal)
    return list(owner) if owner is not None else None


class AsyncJobs:
    def __init__(self, blobs: BlobStore, executor: WorkflowExecutor) -> None:
        self.blobs = blobs
        self.executor = executor

    # -- kick-off ----------------------------------------------------------------------------------

    def submit(self, request: FhirRequest) -> FhirResponse:
        ownership.require_owner(request.principal)
        job = uuid.uuid4().hex
        headers = dict(request.headers)
        remaining = _without_async(headers.pop("prefer", ""))
        if remaining:
            headers["prefer"] = remaining
        root = request.base_url
        path_params = dict(request.path_params)
        if request.route.startswith(TENANT_PREFIX):
            root = root[: -len(f"/tenant/{request.tenant}")]
            path_params["tenant"] = request.tenant
        for name in CREDENTIAL_HEADERS:
            headers.pop(name, None)
        principal = request.principal
        document = {
            "method": request.method,
            "path": request.path,
            "route": request.route,
            "pathParameters": path_params,
            "query": request.query,
            "headers": headers,
            # Never the credentials: the principal they proved, which Prepare runs the bundle as.
            "principal": principal.to_stored() if isinstance(principal, Principal) else None,
            "body": base64.b64encode(request.body).decode("ascii"),
            "root": root,
            "requestId": request.request_id,
            "sourceIp": request.source_ip,
        }
        meta = {"tenant": request.tenant, "owner": _owner(request), "reach": ownership.reach_of(request.principal)}
        self._put(job, "meta", meta)
        self._put(job, "request", document)
        self.executor.start(job, {"job": job})
        location = f"{request.base_url}/{STATUS_PATH}/{job}"
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "information", "code": "informational", "diagnostics": f"Accepted; poll {location}"}
            ],
        }
        return FhirResponse(status=202, resource=outcome, headers={"Content-Location": location})

    # -- the workflow's side ----------------------------------------------------------------------

    def request_event(self, job: str) -> tuple[dict[str, Any], str, Principal | None]:
        """The stored request as an API Gateway proxy event, the server's base URL, and the
        principal the request was authenticated as."""
        document = self._get(job, "request")
        stored = document.get("principal")
        principal = Principal.from_stored(stored) if isinstance(stored, dict) else None
        multi: dict[str, list[str]] = {}
        for key, value in document["query"]:
            multi.setdefault(key, []).append(value)
        event = {
            "resource": document["route"],
            "path": document["path"],
            "httpMethod": document["method"],
            "headers": document["headers"],
            "multiValueQueryStringParameters": multi or None,
            "pathParameters": document["pathParameters"] or None,
            "requestContext": {
                "requestId": document["requestId"],
                "identity": {"sourceIp": document["sourceIp"]},
                "fhirflowAsyncJob": job,
            },
            "body": document["body"],
            "isBase64Encoded": True,
        }
        return event, str(document["root"]), principal

    def save_prepared(self, job: str, answer: dict[str, Any], labels: list[str]) -> None:
        """The answer the job gives if its transaction commits, and names for its changes."""
        self._put(job, "prepared", {"answer": answer, "labels": labels})
        self._drop(job, "request")

    def labels(self, job: str) -> list[str]:
        return list(self._get(job, "prepared").get("labels", []))

    def promote(self, job: str) -> None:
        """The transaction committed: its prepared answer is the answer."""
        self.save_answer(job, self._get(job, "prepared")["answer"])

    def save_answer(self, job: str, answer: dict[str, Any]) -> None:
        self._put(job, "response", answer)
        self._drop(job, "request")

    def save_failure(self, job: str, error: FhirError) -> None:
        body = jsonio.dumps(outcome_for(error)).decode()
        headers = {"Content-Type": "application/fhir+json; charset=utf-8", **error.headers}
        self.save_answer(job, {"statusCode": error.status, "headers": headers, "body": body})

    # -- status ------------------------------------------------------------------------------------

    def status(self, request: FhirRequest) -> FhirResponse:
        job = request.path_params.get("job", "")
        try:
            meta = self._get(job, "meta") if job.isalnum() else None
        except BlobNotFound:
            meta = None
        if meta is None or meta.get("tenant") != request.tenant or meta.get("owner") != _owner(request):
            raise NotFound(f"No asynchronous request {job[:64]} here")
        ownership.check_reach(request.principal, meta.get("reach"))
        try:
            return _response(self._get(job, "response"))
        except BlobNotFound:
            pass
        execution = self.executor.describe(job)
        if execution is not None and execution.status == "RUNNING":
            return FhirResponse(status=202, headers={"X-Progress": "in progress", "Retry-After": "1"})
        raise FhirError("The request failed before it could answer; whatever it did not commit was not written")

    # -- blobs -------------------------------------------------------------------------------------

    def _key(self, job: str, name: str) -> str:
        return f"async/{job}/{name}.json"

    def _put(self, job: str, name: str, value: Any) -> None:
        self.blobs.put(self._key(job, name), orjson.dumps(value), content_type="application/json")

    def _get(self, job: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = orjson.loads(self.blobs.get(self._key(job, name)))
        return found

    def _drop(self, job: str, name: str) -> None:
        self.blobs.delete(self._key(job, name))


def _response(answer: dict[str, Any]) -> FhirResponse:
    raw = answer.get("body") or ""
    body = base64.b64decode(raw) if answer.get("isBase64Encoded") else str(raw).encode("utf-8")
    headers = {k: str(v) for k, v in (answer.get("headers") or {}).items() if k in _KEPT_HEADERS}
    return FhirResponse(status=int(answer.get("statusCode", 500)), raw_json=body or None, headers=headers)
