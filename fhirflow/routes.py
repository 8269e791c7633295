"""The route table: method + path pattern → service and interaction, defined once.

The CDK app builds the API Gateway resources from this table and the local gateway routes
with it, so a route added here exists in both. Patterns use API Gateway's syntax
(``/{type}/{id}``); like API Gateway, a literal segment wins over a path parameter, so
``/Patient/_history`` is type history, not a read of a resource with id ``_history``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from fhirflow.errors import MethodNotAllowed, NotFound, OperationNotSupported


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    service: str
    interaction: str
    """The FHIR interaction code (R4 valueset-type-restful-interaction) or an operation name."""

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(s for s in self.pattern.split("/") if s)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/metadata", "crud", "capabilities"),
    Route("POST", "/", "bundle", "transaction"),
    # The status of a batch/transaction sent with ``Prefer: respond-async`` (async.html).
    Route("GET", "/_async/{job}", "bundle", "async-status"),
    Route("GET", "/_history", "crud", "history-system"),
    Route("POST", "/{type}", "crud", "create"),  # with If-None-Exist: conditional create (http.html#ccreate)
    # Conditional update, delete and patch: the resource is found by the query (http.html#cond-update).
    Route("PUT", "/{type}", "crud", "conditional-update"),
    Route("DELETE", "/{type}", "crud", "conditional-delete"),
    Route("PATCH", "/{type}", "crud", "conditional-patch"),
    Route("GET", "/{type}/_history", "crud", "history-type"),
    Route("GET", "/{type}/{id}", "crud", "read"),
    Route("PUT", "/{type}/{id}", "crud", "update"),
    Route("PATCH", "/{type}/{id}", "crud", "patch"),
    Route("DELETE", "/{type}/{id}", "crud", "delete"),
    Route("GET", "/{type}/{id}/_history", "crud", "history-instance"),
    Route("GET", "/{type}/{id}/_history/{vid}", "crud", "vread"),
    Route("GET", "/.well-known/smart-configuration", "crud", "smart-configuration"),
    # Search (http.html#search): type, system and compartment search, each also as POST _search.
    Route("GET", "/", "search", "search-system"),
    Route("POST", "/_search", "search", "search-system"),
    Route("GET", "/{type}", "search", "search-type"),
    Route("POST", "/{type}/_search", "search", "search-type"),
    Route("GET", "/{type}/{id}/{compartment_type}", "search", "search-compartment"),
    Route("POST", "/{type}/{id}/{compartment_type}/_search", "search", "search-compartment"),
    # Bulk data export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html): kick-off at the system,
    # Patient (``/Patient/$export``) and Group (``/Group/{id}/$export``) level, each also as POST with
    # a Parameters body; then the job's status, its cancellation and its files.
    Route("GET", "/$export", "export", "export"),
    Route("POST", "/$export", "export", "export"),
    Route("GET", "/{type}/$export", "export", "export-patient"),
    Route("POST", "/{type}/$export", "export", "export-patient"),
    Route("GET", "/{type}/{id}/$export", "export", "export-group"),
    Route("POST", "/{type}/{id}/$export", "export", "export-group"),
    Route("GET", "/_export/{job}", "export", "export-status"),
    Route("DELETE", "/_export/{job}", "export", "export-cancel"),
    Route("GET", "/_export/{job}/{file}", "export", "export-file"),
    # Reindexing (DESIGN.md §4): runtime SearchParameters become searchable on older data once a
    # background job has recomputed its search rows; the status URL answers 202 until it is done.
    Route("POST", "/$reindex", "search", "reindex"),
    Route("POST", "/{type}/$reindex", "search", "reindex"),
    Route("GET", "/_reindex/{job}", "search", "reindex-status"),
    # Subscriptions R5 Backport IG 1.1.0: $status (instance and type level) and $events.
    Route("GET", "/Subscription/$status", "subscriptions", "subscription-status"),
    Route("GET", "/Subscription/{id}/$status", "subscriptions", "subscription-status"),
    Route("GET", "/Subscription/{id}/$events", "subscriptions", "subscription-events"),
    # Operations on resources (operations.html): Resource-validate, Resource-meta(-add/-delete) and
    # Patient-everything. A ``$name`` not listed here is answered 400 not-supported (fhirflow.http).
    Route("POST", "/{type}/$validate", "crud", "validate"),
    Route("POST", "/{type}/{id}/$validate", "crud", "validate"),
    Route("GET", "/{type}/{id}/$meta", "crud", "meta"),
    Route("POST", "/{type}/{id}/$meta", "crud", "meta"),
    Route("GET", "/{type}/{id}/_history/{vid}/$meta", "crud", "meta"),
    Route("POST", "/{type}/{id}/_history/{vid}/$meta", "crud", "meta"),
    Route("POST", "/{type}/{id}/$meta-add", "crud", "meta-add"),
    Route("POST", "/{type}/{id}/$meta-delete", "crud", "meta-delete"),
    Route("GET", "/{type}/$everything", "search", "everything"),
    Route("POST", "/{type}/$everything", "search", "everything"),
    Route("GET", "/{type}/{id}/$everything", "search", "everything"),
    Route("POST", "/{type}/{id}/$everything", "search", "everything"),
)

TENANT_PREFIX = "/tenant/{tenant}"
"""Multi-tenancy by path (DESIGN.md §5): every route also exists under this prefix, and the
``tenant`` path parameter becomes ``FhirRequest.tenant`` (:func:`fhirflow.http.request_from_event`)."""


def _under_tenant(route: Route) -> Route:
    return Route(route.method, TENANT_PREFIX + route.pattern.rstrip("/"), route.service, route.interaction)


ROUTES += tuple(_under_tenant(route) for route in ROUTES)


def _is_param(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


class RouteTable:
    """Matches a concrete path against the patterns, with API Gateway's precedence."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self.routes = routes

    @cached_property
    def _by_length(self) -> dict[int, list[Route]]:
        table: dict[int, list[Route]] = {}
        for route in self.routes:
            table.setdefault(len(route.segments), []).append(route)
        for candidates in table.values():
            # More literal segments, further left, first: the API Gateway rule.
            candidates.sort(key=lambda r: tuple(0 if _is_param(s) else -1 for s in r.segments))
        return table

    @cached_property
    def _compiled(self) -> dict[int, list[tuple[Route, tuple[str, ...], tuple[str | None, ...]]]]:
        """Per path length: each route with its segments and, per segment, the parameter name
        (None for a literal), worked out once: a bundle matches a route for every entry."""
        return {
            length: [(r, r.segments, tuple(s[1:-1] if _is_param(s) else None for s in r.segments)) for r in routes]
            for length, routes in self._by_length.items()
        }

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        segments = [s for s in path.split("/") if s]
        path_matched = False
        best_pattern: tuple[str, ...] | None = None
        for route, pattern, names in self._compiled.get(len(segments), ()):
            params = _bind(pattern, names, segments)
            if params is None:
                continue
            if best_pattern is not None and pattern != best_pattern:
                break  # a more specific pattern matched the path already; only its methods count
            best_pattern = pattern
            path_matched = True
            if route.method == method:
                return route, params
        operation = next((s for s in segments if s.startswith("$")), None)
        if operation is not None:
            raise OperationNotSupported(
                f"This server does not support the operation {operation[:64]} on {method} {path}"
            )
        if path_matched:
            raise MethodNotAllowed(f"{method} is not supported on {path}")
        raise NotFound(f"No route for {method} {path}")

    def for_service(self, service: str) -> tuple[Route, ...]:
        return tuple(r for r in self.routes if r.service == service)


def _bind(pattern: tuple[str, ...], names: tuple[str | None, ...], segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for expected, name, actual in zip(pattern, names, segments, strict=True):
        if name is not None:
            params[name] = actual
        elif expected != actual:
            return None
    return params


ROUTE_TABLE = RouteTable()
