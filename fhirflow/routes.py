"""The route table: method + path pattern → service and interaction, defined once.

The CDK app builds the API Gateway resources from this table and the local gateway routes
with it, so a route added here exists in both. Patterns use API Gateway's syntax
(``/{type}/{id}``); like API Gateway, a literal segment wins over a path parameter, so
``/Patient/_history`` is type history, not a read of a resource with id ``_history``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from fhirflow.errors import MethodNotAllowed, NotFound


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
    Route("POST", "/{type}", "crud", "create"),
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

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        segments = [s for s in path.split("/") if s]
        path_matched = False
        best_pattern: tuple[str, ...] | None = None
        for route in self._by_length.get(len(segments), ()):
            params = _bind(route.segments, segments)
            if params is None:
                continue
            if best_pattern is not None and route.segments != best_pattern:
                break  # a more specific pattern matched the path already; only its methods count
            best_pattern = route.segments
            path_matched = True
            if route.method == method:
                return route, params
        if path_matched:
            raise MethodNotAllowed(f"{method} is not supported on {path}")
        raise NotFound(f"No route for {method} {path}")

    def for_service(self, service: str) -> tuple[Route, ...]:
        return tuple(r for r in self.routes if r.service == service)


def _bind(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for expected, actual in zip(pattern, segments, strict=True):
        if _is_param(expected):
            params[expected[1:-1]] = actual
        elif expected != actual:
            return None
    return params


ROUTE_TABLE = RouteTable()
