"""The searchset Bundle (http://hl7.org/fhir/R4/bundle.html#searchset, search.html#return).

Matches and included resources are sent as stored (the index's bytes, not re-serialised) unless
``_summary``/``_elements`` ask for a subset of the matches; warnings about what the search left
out travel in an OperationOutcome entry with ``search.mode = outcome``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhirflow import jsonio, subsetting, timefmt
from fhirflow.errors import Issue
from fhirflow.query.ast import Query
from fhirflow.search_ports import Hit


@dataclass(slots=True)
class Links:
    self: str
    first: str
    next: str | None = None
    previous: str | None = None

    def to_json(self) -> list[dict[str, str]]:
        out = [{"relation": "self", "url": self.self}, {"relation": "first", "url": self.first}]
        if self.previous:
            out.append({"relation": "previous", "url": self.previous})
        if self.next:
            out.append({"relation": "next", "url": self.next})
        return out


@dataclass(slots=True)
class SearchResult:
    links: Links
    matches: Sequence[Hit] = ()
    included: Sequence[Hit] = ()
    total: int | None = None
    issues: list[Issue] = field(default_factory=list)


def entry(base_url: str, hit: Hit, mode: str, shaped: dict[str, Any] | None = None) -> dict[str, Any]:
    resource: Any = shaped if shaped is not None else orjson.Fragment(hit.body)
    return {"fullUrl": f"{base_url}/{hit.type}/{hit.id}", "resource": resource, "search": {"mode": mode}}


def shape(hit: Hit, query: Query) -> dict[str, Any] | None:
    """The subset ``_summary``/``_elements`` ask for, or None to send the stored form."""
    summary = query.summary
    elements = subsetting.parse_elements(",".join(query.elements)) if query.elements else None
    if summary in (None, "false") and elements is None:
        return None
    shaped: dict[str, Any] = subsetting.subset(jsonio.loads(hit.body), summary=summary, elements=elements)
    return shaped


def outcome_entry(issues: Sequence[Issue]) -> dict[str, Any]:
    outcome = {"resourceType": "OperationOutcome", "issue": [issue.to_json() for issue in issues]}
    return {"resource": outcome, "search": {"mode": "outcome"}}


def searchset(base_url: str, query: Query, result: SearchResult, now_ms: int) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    if result.issues:
        entries.append(outcome_entry(result.issues))
    entries.extend(entry(base_url, hit, "match", shape(hit, query)) for hit in result.matches)
    entries.extend(entry(base_url, hit, "include") for hit in result.included)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": timefmt.instant(now_ms)},
        "type": "searchset",
    }
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = result.links.to_json()
    if entries:
        bundle["entry"] = entries
    return bundle
