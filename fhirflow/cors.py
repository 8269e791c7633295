"""CORS for browser apps (SMART App Launch apps run in the browser and call the FHIR API
cross-origin): which origins may read the answers and which headers they may see.

Off unless origins are configured (``FHIRFLOW_CORS_ORIGINS``: a comma-separated list, or ``*``).
Access tokens travel in the ``Authorization`` header, not in cookies, so credentials mode is
never needed and ``*`` is safe to use in development. The preflight (``OPTIONS``) is answered by
API Gateway in AWS (the CDK app configures it from the same setting) and by the local gateway in
the embedded mode; the actual answers get their headers from :class:`fhirflow.http.Application`.
"""

from __future__ import annotations

from collections.abc import Sequence

EXPOSED_HEADERS = (
    "Location",
    "Content-Location",
    "ETag",
    "Last-Modified",
    "X-Progress",
    "X-Request-Id",
    "Retry-After",
    "WWW-Authenticate",
)
"""Response headers a FHIR client reads beyond the CORS-safelisted ones."""
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "Prefer",
    "If-Match",
    "If-None-Match",
    "If-None-Exist",
    "If-Modified-Since",
    "X-Request-Id",
    "X-Security-Context",
)
"""Request headers the FHIR API takes (http.html#Http-Headers)."""
ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PREFLIGHT_MAX_AGE_SECONDS = 600


def parse_origins(text: str) -> tuple[str, ...]:
    """``FHIRFLOW_CORS_ORIGINS``: ``https://app.example.org, http://localhost:3000`` or ``*``."""
    return tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())


def allowed_origin(origins: Sequence[str], origin: str | None) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for a request from ``origin``, None: not allowed."""
    if not origins or not origin:
        return None
    if "*" in origins:
        return "*"
    return origin if origin.rstrip("/") in origins else None


def response_headers(origins: Sequence[str], origin: str | None) -> dict[str, str]:
    """Headers for an actual (non-preflight) answer to a request from ``origin``."""
    allow = allowed_origin(origins, origin)
    if allow is None:
        return {}
    headers = {"Access-Control-Allow-Origin": allow, "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS)}
    if allow != "*":
        headers["Vary"] = "Origin"
    return headers


def preflight_headers(origins: Sequence[str], origin: str | None) -> dict[str, str] | None:
    """Headers of the answer to a preflight from ``origin``, None when the origin is not allowed."""
    allow = allowed_origin(origins, origin)
    if allow is None:
        return None
    headers = {
        "Access-Control-Allow-Origin": allow,
        "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
        "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
    }
    if allow != "*":
        headers["Vary"] = "Origin"
    return headers
