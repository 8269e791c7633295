"""history at instance, type and system level (http://hl7.org/fhir/R4/http.html#history).

Newest version first; deletions appear as entries with ``request.method = DELETE`` and no
resource. ``_count``, ``_since`` and ``_at`` are honoured; pages are walked with a signed
keyset cursor, so writes that happen while a client pages never shift or repeat entries.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson

from fhirflow import timefmt, versioning
from fhirflow.errors import BadRequest, NotFound
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.ports import HistoryQuery, ResourceVersion
from fhirflow.runtime import Dependencies
from fhirflow_crud.writes import authorized_type

_STATUS = {"create": "201 Created", "update": "200 OK", "delete": "204 No Content"}


def history(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    id_ = request.resource_id or None
    interaction = "history-instance" if id_ else "history-type" if request.resource_type else "history-system"
    if request.resource_type:
        rtype: str | None = authorized_type(deps, request, interaction)
    else:
        rtype = None
        deps.policy.authorize(request, interaction, None)
    count = _count(request, deps)
    since = _since(request)
    at = timefmt.datetime_range(request.param("_at") or "", name="_at") if request.param("_at") else None
    before = None
    cursor = request.param("_cursor")
    if cursor:
        state = deps.cursors.decode(cursor)
        if state.get("scope") != _scope(request, rtype, id_) or not isinstance(state.get("after"), str):
            raise BadRequest("_cursor belongs to a different history", expression="_cursor")
        before = state["after"]
    if rtype and id_ and deps.store.current(request.tenant, rtype, id_) is None:
        raise NotFound(f"{rtype}/{id_} is not known")
    page = deps.store.history(
        HistoryQuery(tenant=request.tenant, type=rtype, id=id_, since=since, at=at, count=count, after=before)
    )
    links = [{"relation": "self", "url": _page_url(request, None)}]
    if page.next is not None:
        token = deps.cursors.encode({"scope": _scope(request, rtype, id_), "after": page.next})
        links.append({"relation": "next", "url": _page_url(request, token)})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "link": links,
        "entry": [_entry(request.base_url, v) for v in page.versions if deps.policy.visible(request, v)],
    }
    return FhirResponse(status=200, resource=bundle)


def _scope(request: FhirRequest, rtype: str | None, id_: str | None) -> str:
    return f"{request.tenant}/{rtype or ''}/{id_ or ''}"


def _count(request: FhirRequest, deps: Dependencies) -> int:
    raw = request.param("_count")
    if raw is None:
        return deps.settings.history_default_count
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(f"_count must be a non-negative integer, not '{raw[:40]}'", expression="_count")
    return min(int(raw), deps.settings.history_max_count)


def _since(request: FhirRequest) -> int | None:
    raw = request.param("_since")
    if raw is None:
        return None
    return timefmt.datetime_range(raw, name="_since")[0]


def _page_url(request: FhirRequest, cursor: str | None) -> str:
    params = [(k, v) for k, v in request.query if k != "_cursor"]
    if cursor:
        params.append(("_cursor", cursor))
    query = urlencode(params)
    return f"{request.base_url}{request.path}" + (f"?{query}" if query else "")


def _entry(base_url: str, version: ResourceVersion) -> dict[str, Any]:
    operation = version.operation
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{version.type}/{version.id}"}
    if version.body is not None:
        entry["resource"] = orjson.Fragment(version.body)
    url = version.type if version.method == "POST" else f"{version.type}/{version.id}"
    entry["request"] = {"method": version.method, "url": url}
    entry["response"] = {
        "status": _STATUS[operation],
        "etag": versioning.etag(version.version),
        "lastModified": timefmt.instant(version.last_updated),
    }
    return entry
