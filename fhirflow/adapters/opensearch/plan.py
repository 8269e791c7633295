"""The search plan: what :func:`~fhirflow.adapters.opensearch.compiler.compile_query` returns.

OpenSearch has no joins, so a FHIR search that looks at other resources runs in phases, and
the plan spells them out as plain data (golden-tested, see ``tests/unit/test_opensearch_compiler.py``):

1. **Lookups** (chains and ``_has``), in order. Each runs ``body`` on the tenant's resources of
   one type and collects either the matching resources' keys (``Type/id``, for a chain) or the
   references of one parameter they hold (for ``_has``). A later body, or the main body, uses
   what was collected where it holds the placeholder ``{"$keys": "<lookup name>"}`` (a ``terms``
   list). A lookup is bounded: more than ``limit`` resources is a 400 ``too-costly`` naming the
   parameter, never a silently partial answer. Nested chains (``subject.organization.name``)
   are several lookups, innermost first.
2. **The main request** (``body``): one page (``size`` is one more than the page so the
   executor knows whether a next page exists), sorted with a unique tie-breaker so that
   ``search_after`` paging is stable.
3. **Includes**, after the page: ``_include`` fetches the resources that the page's resources
   reference through a parameter (``body`` selects keys ``{"$keys": "include"}``);
   ``_revinclude`` searches resources of ``sourceType`` whose parameter references a page
   resource (the same placeholder holds the page's keys). ``iterate`` rules are applied again
   to what was included, for at most ``iterate_rounds`` rounds; at most ``include_limit``
   resources are included per page (the result says when it stopped short).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

PLACEHOLDER = "$keys"
INCLUDE_KEYS = "include"

Collect = Literal["key", "reference"]
TotalMode = Literal["none", "estimate", "accurate", "default"]


@dataclass(frozen=True, slots=True)
class CompileOptions:
    lookup_limit: int = 1000  # resources a chain or _has step may match before it is too costly
    include_limit: int = 1000  # resources included per page
    iterate_rounds: int = 3  # rounds of :iterate after the first
    estimate_hits: int = 10_000  # track_total_hits for _total=estimate (and when _total is absent)
    near_distance_km: int = 50  # `near` without a distance (search.html#special: the server's choice)
    base_url: str | None = None  # this server's base: absolute references under it are local
    now: int | None = None  # epoch ms for date `ap`; None: the time of compilation
    relevance_sort: bool = True  # unsorted _text/_content searches: by score first (off in engine.py)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A phase-1 request: chain (``collect="key"``) or ``_has`` (``collect="reference"``)."""

    name: str
    parameter: str  # the search parameter as written, for the too-costly error
    resource_type: str
    body: dict[str, Any]
    collect: Collect
    limit: int
    reference: str | None = None  # _has: the parameter whose references are collected
    target_types: tuple[str, ...] = ()  # _has: only references to these types

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "parameter": self.parameter,
            "resourceType": self.resource_type,
            "collect": self.collect,
            "limit": self.limit,
        }
        if self.reference is not None:
            out["reference"] = self.reference
            out["targetTypes"] = list(self.target_types)
        out["body"] = self.body
        return out


@dataclass(frozen=True, slots=True)
class IncludeStep:
    """``_include`` (forward) or ``_revinclude`` (reverse) ``source_type:param[:target_type]``;
    ``param`` None is the ``*`` wildcard (``source_type`` None too for a bare ``*``)."""

    reverse: bool
    iterate: bool
    source_type: str | None
    param: str | None
    target_type: str | None
    body: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "reverse": self.reverse,
            "iterate": self.iterate,
            "sourceType": self.source_type,
            "param": self.param,
            "targetType": self.target_type,
            "body": self.body,
        }


@dataclass(frozen=True, slots=True)
class SearchPlan:
    resource_types: tuple[str, ...]  # () : every type (system search without _type)
    body: dict[str, Any]
    page_size: int
    total: TotalMode
    count_only: bool = False
    lookups: tuple[Lookup, ...] = ()
    includes: tuple[IncludeStep, ...] = ()
    include_limit: int = 0
    iterate_rounds: int = 0

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON (the golden files' form)."""
        out: dict[str, Any] = {
            "resourceTypes": list(self.resource_types),
            "pageSize": self.page_size,
            "total": self.total,
            "countOnly": self.count_only,
        }
        if self.lookups:
            out["lookups"] = [lookup.to_json() for lookup in self.lookups]
        out["body"] = self.body
        if self.includes:
            out["includes"] = [step.to_json() for step in self.includes]
            out["includeLimit"] = self.include_limit
            out["iterateRounds"] = self.iterate_rounds
        return out


def substitute(body: Any, keys: dict[str, list[str]]) -> Any:
    """``body`` with every ``{"$keys": name}`` replaced by the list collected under ``name``."""
    if isinstance(body, dict):
        if len(body) == 1 and PLACEHOLDER in body:
            return list(keys[body[PLACEHOLDER]])
        return {k: substitute(v, keys) for k, v in body.items()}
    if isinstance(body, list):
        return [substitute(item, keys) for item in body]
    return body
