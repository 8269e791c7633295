"""The page for people: a browser that opens the FHIR base URL gets a small HTML page.

The page is a constant (``page.html`` with ``page.css`` and ``page.js`` inlined, package data, no
build step, nothing from a CDN) and holds no data: its script calls the FHIR API with ``fetch``
(JSON), so what it shows is exactly what the API lets the caller read — authorization stays the
API's. That is also why it is served before authentication: a browser's navigation carries no
bearer token, and there is nothing in the page to protect.

Only a browser's navigation gets it: a ``GET`` whose Accept ranks ``text/html`` above every JSON
type (http.html#mime-type leaves HTML to the server), with no ``_format``, of the base URL (with
no query), a type search, a read, a vread or a history; the page then runs that search or shows
that resource. A Binary and operations keep their own answers. FHIR clients send
``application/fhir+json``, ``application/json`` or ``*/*`` first and keep getting what they
always got.

The Content-Security-Policy allows only this page's own script and style (by hash) and
``fetch`` to its own origin: even if resource text reached the DOM as markup, inline handlers
such as ``onerror`` would not run. The script renders resource values with ``textContent`` only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources
from typing import Any

from fhirflow.model import FhirRequest
from fhirflow.qvalues import weighted
from fhirflow.routes import TENANT_PREFIX

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_JSON_TYPES = frozenset(
    {"application/fhir+json", "application/json", "application/json+fhir", "text/json", "*/*", "application/*"}
)
_PAGE_ROUTES = {
    "/": 0,  # the base URL, with no query (with one it is a system search)
    "/{type}": 1,  # a type search: the page runs it
    "/{type}/_history": 2,
    "/{type}/{id}": 2,  # a read: the page shows the resource and its history
    "/{type}/{id}/_history": 3,
    "/{type}/{id}/_history/{vid}": 4,
}
"""The routes (fhirflow.routes, also under a tenant's prefix) a browser's navigation gets the page
for, each with the number of path segments after the base URL, from which the page finds the base."""


def _depth(request: FhirRequest) -> int | None:
    """The depth of this request's route when the page could answer it (whatever its Accept)."""
    if request.method != "GET" or request.param("_format") is not None:
        return None
    route = request.route
    if route.startswith(TENANT_PREFIX):
        route = route[len(TENANT_PREFIX) :] or "/"
    depth = _PAGE_ROUTES.get(route)
    if depth is None or (depth == 0 and request.query):
        return None
    if request.resource_type == "Binary" or any(v.startswith("$") for v in request.path_params.values()):
        return None  # a Binary answers in its own type (binary.html#rest); $name is an operation
    return depth


def wanted(request: FhirRequest) -> int | None:
    """When this request is a browser's navigation that the page answers (see the module
    docstring): the number of path segments after the base URL; otherwise None."""
    depth = _depth(request)
    if depth is None or not _html_first(request.headers.get("accept", "")):
        return None
    return depth


def vary_on_accept(request: FhirRequest, result: dict[str, Any]) -> dict[str, Any]:
    """The FHIR answer of a URL that also has the page: ``Vary: Accept``, so that a shared cache
    never hands the FHIR answer to a browser or the page to a FHIR client (RFC 9110 §12.5.5)."""
    if _depth(request) is None:
        return result
    headers = dict(result.get("headers") or {})
    name = next((k for k in headers if k.lower() == "vary"), "Vary")
    fields = [f.strip() for f in headers.get(name, "").split(",") if f.strip()]
    if not any(f.lower() in ("accept", "*") for f in fields):
        headers[name] = ", ".join([*fields, "Accept"])
    return {**result, "headers": headers}


def _html_first(accept: str) -> bool:
    """True when some HTML type has a higher quality than every JSON type (ties go to JSON,
    and so does a list with neither)."""
    best_html = best_json = 0.0
    for mime, quality in weighted(accept):
        if mime in _HTML_TYPES:
            best_html = max(best_html, quality)
        elif mime in _JSON_TYPES:
            best_json = max(best_json, quality)
    return best_html > best_json


def _sha256_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@cache
def page() -> tuple[str, str]:
    """The page and its Content-Security-Policy, built once per process."""
    folder = resources.files(__package__)
    script = folder.joinpath("page.js").read_text("utf-8")
    style = folder.joinpath("page.css").read_text("utf-8")
    html = folder.joinpath("page.html").read_text("utf-8")
    # Inserted verbatim: the hashes below are over exactly these bytes (CSP Level 3, hash-source).
    html = html.replace("/*STYLE*/", style, 1).replace("/*SCRIPT*/", script, 1)
    assert re.search(r"</script", script, re.IGNORECASE) is None, "page.js must not close its own element"
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_sha256_source(script)}",
            f"style-src {_sha256_source(style)}",
            "connect-src 'self'",
            "img-src 'self' data:",  # data: for the empty favicon, which keeps browsers from asking for /favicon.ico
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return html, policy


def page_event(depth: int) -> dict[str, Any]:
    """The page as an API Gateway proxy response, told how many of its URL's path segments follow
    the base URL (a number: nothing from the request reaches the page's text)."""
    html, policy = page()
    html = html.replace('content="0" data-depth', f'content="{int(depth)}" data-depth', 1)
    return {
        "statusCode": 200,
        "headers": {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
            "Vary": "Accept",
        },
        "body": html,
        "isBase64Encoded": False,
    }
