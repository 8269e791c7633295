"""The page for people: a browser that opens the FHIR base URL gets a small HTML page.

The page is a constant (``page.html`` with ``page.css`` and ``page.js`` inlined, package data, no
build step, nothing from a CDN) and holds no data: its script calls the FHIR API with ``fetch``
(JSON), so what it shows is exactly what the API lets the caller read — authorization stays the
API's. That is also why it is served before authentication: a browser's navigation carries no
bearer token, and there is nothing in the page to protect.

Only a browser's navigation gets it: ``GET`` of the base URL with no query at all (so no
``_format``) whose Accept ranks ``text/html`` above every JSON type (http.html#mime-type leaves
HTML to the server). FHIR clients send ``application/fhir+json``, ``application/json`` or
``*/*`` first and keep getting the system search Bundle they always got.

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

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_JSON_TYPES = frozenset(
    {"application/fhir+json", "application/json", "application/json+fhir", "text/json", "*/*", "application/*"}
)
_BASE_ROUTES = frozenset({"/", "/tenant/{tenant}"})
"""The base URL's routes (fhirflow.routes: system search, also under a tenant's prefix)."""


def wanted(request: FhirRequest) -> bool:
    """Whether this request is a browser opening the base URL (see the module docstring)."""
    if request.method != "GET" or request.route not in _BASE_ROUTES or request.query:
        return False
    return _html_first(request.headers.get("accept", ""))


def vary_on_accept(request: FhirRequest, result: dict[str, Any]) -> dict[str, Any]:
    """The FHIR answer of a URL that also has the page: ``Vary: Accept``, so that a shared cache
    never hands the Bundle to a browser or the page to a FHIR client (RFC 9110 §12.5.5)."""
    if request.method != "GET" or request.route not in _BASE_ROUTES or request.query:
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
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        mime = pieces[0].lower()
        quality = 1.0
        for piece in pieces[1:]:
            if piece.startswith("q="):
                try:
                    quality = float(piece[2:])
                except ValueError:
                    quality = 0.0
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


def page_event() -> dict[str, Any]:
    """The page as an API Gateway proxy response."""
    html, policy = page()
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
