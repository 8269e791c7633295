"""Reading a batch/transaction Bundle into entries, and each entry into a FhirRequest.

Structural problems are found before anything runs, each as a 400 naming the entry
(``Bundle.entry[3].request``), so that a bad bundle never writes half of itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhirflow import jsonio
from fhirflow.errors import BadRequest, FhirError, Issue
from fhirflow.model import FhirRequest

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# transaction.html: DELETE, then POST, then PUT/PATCH, then GET/HEAD.
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_CONDITIONAL_HEADERS = {
    "ifMatch": "if-match",
    "ifNoneMatch": "if-none-match",
    "ifModifiedSince": "if-modified-since",
    "ifNoneExist": "if-none-exist",
}


@dataclass(slots=True)
class Entry:
    index: int
    method: str
    url: str
    full_url: str | None
    resource: dict[str, Any] | None
    request: dict[str, Any]
    path: str = ""
    query: list[tuple[str, str]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"

    @property
    def resource_type(self) -> str:
        return self.path.strip("/").split("/")[0]


def parse_bundle(body: Any, *, max_entries: int) -> tuple[str, list[Entry]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise BadRequest("POST to the base URL takes a Bundle of type batch or transaction", expression="Bundle")
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(f"Bundle.type must be 'batch' or 'transaction', not {kind!r}", expression="Bundle.type")
    raw_entries = body.get("entry", [])
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be an array", expression="Bundle.entry")
    if len(raw_entries) > max_entries:
        from fhirflow.errors import PayloadTooLarge

        raise PayloadTooLarge(f"The Bundle has {len(raw_entries)} entries; this server takes at most {max_entries}")
    entries = [_entry(index, raw) for index, raw in enumerate(raw_entries)]
    _check_full_urls(entries)
    return kind, entries


def _entry(index: int, raw: Any) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object", expression=where)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise BadRequest(
            f"{where} has no request (method and url are required in a batch or transaction)",
            expression=f"{where}.request",
        )
    method = request.get("method")
    url = request.get("url")
    if method not in METHODS:
        raise BadRequest(
            f"{where}.request.method must be one of {', '.join(METHODS)}, not {method!r}",
            expression=f"{where}.request.method",
        )
    if not isinstance(url, str) or not url.strip() or url.strip() in ("/", "."):
        raise BadRequest(
            f"{where}.request.url must name a resource type, resource or search "
            "(a nested batch or transaction is not allowed)",
            expression=f"{where}.request.url",
        )
    resource = raw.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise BadRequest(f"{where}.resource must be a resource object", expression=f"{where}.resource")
    if method in ("POST", "PUT") and resource is None:
        raise BadRequest(f"{where}: {method} needs a resource", expression=f"{where}.resource")
    if (
        isinstance(resource, dict)
        and resource.get("resourceType") == "Bundle"
        and resource.get("type") in ("batch", "transaction")
    ):
        raise BadRequest(
            f"{where}: a {resource.get('type')} cannot be nested in another Bundle", expression=f"{where}.resource"
        )
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise BadRequest(f"{where}.fullUrl must be a string", expression=f"{where}.fullUrl")
    parts = urlsplit(url.strip())
    path = "/" + parts.path.strip("/")
    if parts.scheme or parts.netloc:
        raise BadRequest(f"{where}.request.url must be relative to the server base", expression=f"{where}.request.url")
    if path.startswith("/tenant/"):
        # An entry runs in the tenant of the request that carries the bundle, never another one.
        raise BadRequest(
            f"{where}.request.url must be relative to this tenant's base, without /tenant/...",
            expression=f"{where}.request.url",
        )
    return Entry(
        index, method, url, full_url, resource, request, path=path, query=parse_qsl(parts.query, keep_blank_values=True)
    )


def _check_full_urls(entries: list[Entry]) -> None:
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.full_url is None:
            continue
        if entry.full_url in seen:
            other = f"Bundle.entry[{seen[entry.full_url]}]"
            raise BadRequest(
                f"{entry.where}.fullUrl '{entry.full_url[:120]}' is also the fullUrl of {other}",
                expression=f"{entry.where}.fullUrl",
            )
        seen[entry.full_url] = entry.index


def entry_request(entry: Entry, outer: FhirRequest, body: dict[str, Any] | None) -> FhirRequest:
    """The FhirRequest an entry stands for: it runs through the same use cases as a direct request."""
    headers = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
    if "prefer" in outer.headers:
        headers["prefer"] = outer.headers["prefer"]
    for key, header in _CONDITIONAL_HEADERS.items():
        value = entry.request.get(key)
        if isinstance(value, str):
            headers[header] = value
    if entry.method == "PATCH" and body is not None and body.get("resourceType") == "Binary":
        body, headers["content-type"] = _binary_patch(entry, body)
    return FhirRequest(
        method=entry.method,
        path=entry.path,
        route="",
        query=entry.query,
        headers=headers,
        body=jsonio.dumps(body) if body is not None else b"",
        parsed_body=body,
        base_url=outer.base_url,
        tenant=outer.tenant,
        request_id=outer.request_id,
        source_ip=outer.source_ip,
        principal=outer.principal,  # each entry is authorized as its own request (DESIGN.md §5)
    )


def _binary_patch(entry: Entry, binary: dict[str, Any]) -> tuple[Any, str]:
    """A JSON Patch travels in a bundle as a Binary (http.html#patch)."""
    import base64
    import binascii

    try:
        document = jsonio.loads(base64.b64decode(binary.get("data") or "", validate=True))
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(
            f"{entry.where}: the Binary's data is not a base64 JSON Patch", expression=f"{entry.where}.resource.data"
        ) from exc
    return document, str(binary.get("contentType") or "application/json-patch+json")


def entry_failure(error: FhirError, entry: Entry) -> FhirError:
    """``error`` as the failure of ``entry``: the same class and status, its issues rooted at the entry."""
    failure = type(error)(
        with_entry_prefix(error.diagnostics, entry), issues=prefixed_issues(error.issues, entry), headers=error.headers
    )
    failure.status = error.status
    return failure


def prefixed_issues(issues: list[Issue], entry: Entry) -> list[Issue]:
    """Issues of an entry re-rooted there: ``Patient.gender`` → ``Bundle.entry[2].resource.gender``."""
    out: list[Issue] = []
    for issue in issues:
        expressions = tuple(_reroot(e, entry) for e in issue.expression) or (entry.where,)
        out.append(Issue(issue.code, with_entry_prefix(issue.diagnostics, entry), expressions, issue.severity))
    return out


def with_entry_prefix(diagnostics: str, entry: Entry) -> str:
    """``Bundle.entry[2]: ...`` once, whether or not the message already names the entry."""
    return diagnostics if diagnostics.startswith(entry.where) else f"{entry.where}: {diagnostics}"


def _reroot(expression: str, entry: Entry) -> str:
    if expression.startswith("Bundle.entry["):
        return expression  # already rooted at the bundle
    rtype = (entry.resource or {}).get("resourceType")
    if isinstance(rtype, str) and (expression == rtype or expression.startswith(rtype + ".")):
        return f"{entry.where}.resource{expression[len(rtype) :]}"
    return f"{entry.where}.{expression}" if expression else entry.where
