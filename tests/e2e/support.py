"""Helpers shared by the e2e tests: building resources, reading answers, checking OperationOutcomes.

Everything here works on real HTTP answers (httpx); nothing reaches into the server.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
SMALL_BODY_LIMIT = 1000
"""The body limit of the second server (``small_server``), for 413."""
SUBSETTED_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"

# http://hl7.org/fhir/R4/valueset-issue-type.html (CodeSystem issue-type, every level).
ISSUE_TYPES = frozenset(
    {
        "business-rule",
        "code-invalid",
        "conflict",
        "deleted",
        "duplicate",
        "exception",
        "expired",
        "extension",
        "forbidden",
        "incomplete",
        "informational",
        "invalid",
        "invariant",
        "lock-error",
        "login",
        "multiple-matches",
        "no-store",
        "not-found",
        "not-supported",
        "processing",
        "required",
        "security",
        "structure",
        "suppressed",
        "throttled",
        "timeout",
        "too-costly",
        "too-long",
        "transient",
        "unknown",
        "value",
    }
)

_WEAK_ETAG = re.compile(r'^W/"(\d+)"$')
# FHIR instant (datatypes.html#instant).
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def unique(prefix: str = "t") -> str:
    """A fresh, valid FHIR id (and marker) for one test."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def after_earlier_writes() -> None:
    """Wait out the current millisecond, so that a ``_since`` taken from the next write excludes every
    write before it (lastUpdated has millisecond precision)."""
    time.sleep(0.003)


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **fields}


def create(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    """POST a resource that must be accepted; the stored form."""
    reply = client.post(f"/{resource['resourceType']}", json=resource)
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


def put(client: httpx.Client, resource: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, **kwargs)


def read(client: httpx.Client, rtype: str, id_: str, **kwargs: Any) -> httpx.Response:
    return client.get(f"/{rtype}/{id_}", **kwargs)


def etag_version(reply: httpx.Response) -> int:
    """The version in a weak ETag (http.html#versioning: ``ETag: W/"3"``)."""
    match = _WEAK_ETAG.match(reply.headers.get("etag", ""))
    assert match, f"not a weak version ETag: {reply.headers.get('etag')!r}"
    return int(match.group(1))


def is_instant(value: object) -> bool:
    return isinstance(value, str) and bool(_INSTANT.match(value))


def parse_instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def http_date(value: str) -> datetime:
    parsed = parsedate_to_datetime(value)
    assert parsed.tzinfo is not None, value
    return parsed.astimezone(UTC)


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def assert_outcome(
    reply: httpx.Response,
    status: int | tuple[int, ...],
    *,
    code: str | tuple[str, ...] | None = None,
    expression: str | None = None,
) -> dict[str, Any]:
    """An error answer: the status, and an OperationOutcome with a valid issue code and diagnostics.

    ``expression``, when given, must appear among the issues' expressions (the FHIRPath of the
    offending element); ``code`` pins the issue code where the spec or the brief fixes it.
    """
    allowed = (status,) if isinstance(status, int) else status
    assert reply.status_code in allowed, f"expected {allowed}, got {reply.status_code}: {reply.text[:500]}"
    assert reply.status_code < 500
    assert reply.headers.get("content-type", "").startswith(FHIR_JSON), reply.headers.get("content-type")
    body: dict[str, Any] = reply.json()
    assert body.get("resourceType") == "OperationOutcome", body
    issues = body.get("issue")
    assert isinstance(issues, list), body
    assert issues, body
    errors = [i for i in issues if i.get("severity") in ("error", "fatal")]
    assert errors, f"no issue of severity error/fatal: {body}"
    for issue in issues:
        assert issue.get("code") in ISSUE_TYPES, f"issue code {issue.get('code')!r} is not an R4 IssueType"
        assert isinstance(issue.get("diagnostics"), str), issue
        assert issue["diagnostics"].strip(), issue
    if code is not None:
        wanted = (code,) if isinstance(code, str) else code
        assert any(i["code"] in wanted for i in errors), f"expected issue code in {wanted}: {body}"
    if expression is not None:
        found = [e for i in issues for e in i.get("expression", [])]
        assert expression in found, f"expected expression {expression!r} among {found}"
    return body


def history(client: httpx.Client, url: str, **params: Any) -> list[dict[str, Any]]:
    """Every entry of a history, following ``next`` links to the end; asserts each page is a history Bundle."""
    entries: list[dict[str, Any]] = []
    reply = client.get(url, params=params)
    pages = 0
    while True:
        assert reply.status_code == 200, reply.text
        bundle = reply.json()
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] == "history"
        if "_count" in params:
            assert len(bundle.get("entry", [])) <= int(params["_count"])
        entries.extend(bundle.get("entry", []))
        links = {link["relation"]: link["url"] for link in bundle.get("link", [])}
        assert "self" in links
        pages += 1
        assert pages < 500, "history paging does not end"
        if "next" not in links:
            return entries
        reply = client.get(links["next"])


def next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link", []):
        if link["relation"] == "next":
            return str(link["url"])
    return None


def subsetted(resource: dict[str, Any]) -> bool:
    tags = (resource.get("meta") or {}).get("tag") or []
    return any(t.get("system") == SUBSETTED_SYSTEM and t.get("code") == "SUBSETTED" for t in tags)
