"""The two HTTP calls authorization makes: GET a JWKS, POST an RFC 7662 introspection request.

Only ``https`` URLs, except ``http`` to a loopback host (the embedded mode and tests); a short
timeout and a size cap, so that a slow or hostile IdP cannot hold a request or fill memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from fhirflow.hosts import is_loopback

MAX_BYTES = 1024 * 1024
TIMEOUT_SECONDS = 5.0


class FetchError(Exception):
    """The IdP could not be reached or answered something unusable (never shown to clients)."""


def check_url(url: str) -> None:
    """Raise ValueError for a URL this module would refuse to call (checked when configured)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return
    raise ValueError(f"{url!r}: only https URLs (or http to a loopback address) are allowed")


def _opener() -> Any:
    """urllib without redirects: a redirect could lead from https to a plain-http or internal URL."""
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(_NoRedirect)


def _read_json(request: Any, timeout: float) -> dict[str, Any]:
    import urllib.error

    try:
        with _opener().open(request, timeout=timeout) as reply:
            body = reply.read(MAX_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(f"{type(exc).__name__} calling the identity provider") from exc
    if len(body) > MAX_BYTES:
        raise FetchError("the identity provider's answer is too large")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise FetchError("the identity provider's answer is not JSON") from exc
    if not isinstance(data, dict):
        raise FetchError("the identity provider's answer is not a JSON object")
    return data


def get_json(url: str, *, timeout: float = TIMEOUT_SECONDS) -> dict[str, Any]:
    import urllib.request

    check_url(url)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    return _read_json(request, timeout)


def post_form(
    url: str, form: Mapping[str, str], *, headers: Mapping[str, str] | None = None, timeout: float = TIMEOUT_SECONDS
) -> dict[str, Any]:
    import urllib.request
    from urllib.parse import urlencode

    check_url(url)
    request = urllib.request.Request(  # noqa: S310
        url,
        data=urlencode(dict(form)).encode("ascii"),
        headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        method="POST",
    )
    return _read_json(request, timeout)
