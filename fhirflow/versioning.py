"""Version ids, ETags and the server-owned part of ``meta`` (http://hl7.org/fhir/R4/http.html#versioning)."""

from __future__ import annotations

from typing import Any

from fhirflow import jsonio, timefmt
from fhirflow.errors import BadRequest
from fhirflow.ports import ResourceVersion


def etag(version: int) -> str:
    return f'W/"{version}"'


MAX_VERSION = 2**63 - 1
"""The largest version number a store can hold (SQLite INTEGER, DynamoDB number as we use it)."""


def parse_etag(value: str, *, header: str = "If-Match") -> int:
    """``W/"3"`` or ``"3"`` → 3; anything else is a 400 naming the header."""
    text = value.strip()
    if text.startswith(("W/", "w/")):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise BadRequest(f'{header} must be a version ETag like W/"3", not {value[:60]!r}')
    return int(text)


def stamp(resource: dict[str, Any], *, id_: str, version: int, last_updated: int) -> dict[str, Any]:
    """The resource as stored: our id, versionId and lastUpdated; the client's tags, labels and profiles kept."""
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["versionId"] = str(version)
    meta["lastUpdated"] = timefmt.instant(last_updated)
    body = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    return {"resourceType": resource["resourceType"], "id": id_, "meta": meta, **body}


def same_content(resource: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Whether ``resource`` says what ``stored`` says, the server's ``meta.versionId`` and
    ``meta.lastUpdated`` aside (an update that changes nothing needs no new version)."""
    return _content(resource) == _content(stored)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")} if isinstance(meta, dict) else {}
    body = {k: v for k, v in resource.items() if k != "meta"}
    return {**body, "meta": meta} if meta else body


def version_headers(stored: ResourceVersion) -> dict[str, str]:
    return {"ETag": etag(stored.version), "Last-Modified": timefmt.http_date(stored.last_updated)}


def serialise(resource: dict[str, Any]) -> bytes:
    return jsonio.dumps(resource)
