"""One structured audit record per request (DESIGN.md §5): who, what, when, where, outcome.

- who: ``sub``, ``client_id``, ``fhirUser`` and issuer of the token (nothing when there was none);
- what: the interaction, resource type, id and version from the URL, and the *names* of the
  query parameters (their values can hold names or identifiers of patients);
- when: the time and the duration; where: source IP and request id; the tenant;
- outcome: the HTTP status and success/failure, and for a refused token the reason
  (``expired``, ``bad-signature``, ``algorithm-not-allowed``...), which the client is never told.

Never a resource body, a query value, a token or a patient identifier. Sinks: the
``fhirflow.audit`` logger as one JSON line (CloudWatch in AWS), a JSON-lines file (the embedded
mode), and optionally an AuditEvent resource per request in the store
(http://hl7.org/fhir/R4/auditevent.html).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

import orjson

from fhirflow.routes import ROUTE_TABLE

if TYPE_CHECKING:
    from fhirflow.model import FhirRequest
    from fhirflow.ports import Clock, ResourceStore

logger = logging.getLogger("fhirflow.audit")
_INTERACTIONS: dict[tuple[str, str], str] = {}


class AuditSink(Protocol):
    def record(self, request: FhirRequest | None, status: int, started: float) -> None:
        """Record one request. ``started`` is its ``time.perf_counter()`` start. Must not raise."""
        ...


def interaction_of(method: str, route: str) -> str:
    if not _INTERACTIONS:
        _INTERACTIONS.update({(r.method, r.pattern): r.interaction for r in ROUTE_TABLE.routes})
    return _INTERACTIONS.get((method, route), "unknown")


class AuditOutcome(TypedDict):
    status: int
    result: str
    """``success`` (status below 400) or ``failure``."""
    reason: NotRequired[str]
    """Why an access token was refused (never told to the client); absent otherwise."""


class AuditWhat(TypedDict):
    interaction: str
    method: str
    type: str | None
    id: str | None
    version: str | None
    query: list[str]
    """The query parameters' names, never their values."""


class AuditWho(TypedDict, total=False):
    sub: str
    client_id: str
    fhir_user: str
    issuer: str | None


class AuditRecord(TypedDict, total=False):
    """The audit record's shape: the one definition its readers derive theirs from (the audit
    archive's Athena table, infra/fhirflow_infra/audit.py). The last five keys are absent when
    the request could not be read at all."""

    audit: str
    """Always ``fhir-request``: what the archive's log subscription filter selects on."""
    time: str
    duration_ms: float
    outcome: AuditOutcome
    request_id: str
    source_ip: str
    tenant: str
    what: AuditWhat
    who: AuditWho


AUDIT_KIND = "fhir-request"


def audit_record(request: FhirRequest | None, status: int, started: float, *, now: float | None = None) -> AuditRecord:
    now = time.time() if now is None else now
    record: AuditRecord = {
        "audit": AUDIT_KIND,
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "outcome": {"status": status, "result": "success" if status < 400 else "failure"},
    }
    if request is None:
        return record
    if request.auth_failure:
        record["outcome"]["reason"] = request.auth_failure  # why the token was refused (never told to the client)
    record["request_id"] = request.request_id
    record["source_ip"] = request.source_ip
    record["tenant"] = request.tenant
    record["what"] = {
        "interaction": interaction_of(request.method, request.route),
        "method": request.method,
        "type": request.resource_type or None,
        "id": request.resource_id or None,
        "version": request.path_params.get("vid"),
        "query": sorted({name for name, _ in request.query}),
    }
    principal = request.principal
    who: AuditWho = {}
    if sub := getattr(principal, "sub", None):
        who["sub"] = sub
    if client_id := getattr(principal, "client_id", None):
        who["client_id"] = client_id
    if fhir_user := getattr(principal, "fhir_user_reference", None):
        who["fhir_user"] = fhir_user
    if principal is not None:
        who["issuer"] = getattr(principal, "issuer", None)
    record["who"] = who
    return record


class LoggingAuditSink:
    """One JSON line per request on the ``fhirflow.audit`` logger (INFO).

    The logger's own level is set to INFO, so that the records reach the root handlers (CloudWatch
    in Lambda) whatever level the application logs at; silence them with ``FHIRFLOW_AUDIT=off``.

    In Lambda (``structured``, the default there) the record's fields are the log line's own
    top-level keys beside Powertools' correlation keys (fhirflow.observability): the audit archive
    selects those lines with ``{ $.audit = "fhir-request" }`` and Athena reads the fields as
    columns (infra/fhirflow_infra/audit.py). Elsewhere the message is the record as JSON.
    """

    def __init__(self, *, structured: bool | None = None) -> None:
        from fhirflow.observability import in_lambda

        logger.setLevel(logging.INFO)
        self.structured = in_lambda() if structured is None else structured

    def record(self, request: FhirRequest | None, status: int, started: float) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        try:
            record = audit_record(request, status, started)
            if self.structured:
                logger.info(AUDIT_KIND, extra=dict(record))
            else:
                logger.info(orjson.dumps(record).decode())
        except Exception:  # auditing must never turn a served request into an error
            logger.exception("audit record failed")


class JsonLinesAuditSink:
    """Appends one JSON line per request to a file (the embedded mode's ``audit.jsonl``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None

    def record(self, request: FhirRequest | None, status: int, started: float) -> None:
        try:
            line = orjson.dumps(audit_record(request, status, started)) + b"\n"
            with self._lock:
                if self._fd is None:  # opened once: this runs for every request
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                # One write per line with O_APPEND: the lines of several server processes never mix.
                os.write(self._fd, line)
        except Exception:
            logger.exception("audit record failed")


_ACTIONS = {"POST": "C", "GET": "R", "HEAD": "R", "PUT": "U", "PATCH": "U", "DELETE": "D"}


def audit_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as an R4 AuditEvent (type ``rest``, subtype the restful interaction)."""
    what = record.get("what") or {}
    who = record.get("who") or {}
    status = int(record["outcome"]["status"])
    agent: dict[str, Any] = {"requestor": True}
    if who.get("fhir_user"):
        agent["who"] = {"reference": who["fhir_user"]}
    elif who.get("sub"):
        agent["who"] = {"identifier": {"system": who.get("issuer"), "value": who["sub"]}}
    if who.get("client_id"):
        agent["altId"] = who["client_id"]
    if record.get("source_ip"):
        agent["network"] = {"address": record["source_ip"], "type": "2"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "action": _ACTIONS.get(str(what.get("method")), "E"),
        "recorded": record["time"],
        "outcome": "0" if status < 400 else "4" if status < 500 else "8",
        "agent": [agent],
        "source": {"observer": {"display": "fhirflow"}},
    }
    if what.get("interaction") and what["interaction"] != "unknown":
        event["subtype"] = [{"system": "http://hl7.org/fhir/restful-interaction", "code": what["interaction"]}]
    if what.get("type") and what.get("id"):
        event["entity"] = [{"what": {"reference": f"{what['type']}/{what['id']}"}}]
    if record.get("request_id"):
        event["source"]["site"] = str(record["request_id"])
    return event


class AuditEventSink:
    """Writes an AuditEvent resource per request into the store (and logs like LoggingAuditSink)."""

    def __init__(self, store: ResourceStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.log = LoggingAuditSink()

    def record(self, request: FhirRequest | None, status: int, started: float) -> None:
        self.log.record(request, status, started)
        try:
            from fhirflow import versioning
            from fhirflow.ports import Change, ResourceVersion

            record = audit_record(request, status, started)
            id_ = str(uuid.uuid4())
            now = self.clock.now_ms()
            body = versioning.serialise(versioning.stamp(audit_event(record), id_=id_, version=1, last_updated=now))
            tenant = request.tenant if request is not None else "default"
            stored = ResourceVersion(tenant, "AuditEvent", id_, 1, now, False, "POST", body)
            self.store.commit([Change(stored, None, record.get("request_id", ""))])
        except Exception:
            logger.exception("AuditEvent write failed")
