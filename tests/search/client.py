"""Calling the search service in-process with API Gateway events (tests.support.lambda_http)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fhirflow.http import Application
from tests.support.lambda_http import Reply, call

FORM = "application/x-www-form-urlencoded"
BASE_URL = "http://fhir.test"
"""The FHIR base the service sees for these requests (lambda_http.call: host fhir.test over http)."""


def get(app: Application, url: str, *, headers: dict[str, str] | None = None) -> Reply:
    """``url`` is a path and query as a client writes it (``/Patient?name=x``), or a full link."""
    parts = urlsplit(url)
    return call(app, "GET", parts.path or "/", headers=headers, query=parts.query)


def post(app: Application, path: str, form: str, *, headers: dict[str, str] | None = None, query: str = "") -> Reply:
    return call(app, "POST", path, form.encode(), headers={"content-type": FORM, **(headers or {})}, query=query)


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    """``Type/id`` of the entries with ``search.mode`` ``mode``, in order."""
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == mode
    ]
