"""The search service's composition root: settings → search engine → the use case → routes.

``USE_CASES`` maps the route table's search interactions to the use case, with the same
``(deps, request)`` signature as the crud use cases, so the bundle service can run search
entries (``GET Observation?code=…`` inside a batch) through it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from fhirflow.http import Application, UseCase
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.routes import ROUTE_TABLE
from fhirflow.runtime import Dependencies, build_dependencies
from fhirflow.search_ports import SearchEngine
from fhirflow.settings import Settings
from fhirflow_search.settings import SearchSettings
from fhirflow_search.usecase import SearchService

INTERACTIONS = ("search-type", "search-system", "search-compartment")

_services: dict[str, SearchService] = {}
_lock = threading.Lock()


def build_engine(settings: Settings) -> SearchEngine:
    if settings.search_index == "sqlite":
        from fhirflow.adapters.sqlite.search.engine import SqliteSearchEngine
        from fhirflow.runtime import sqlite_database

        return SqliteSearchEngine(sqlite_database(settings))
    raise ValueError(
        f"Unknown search index '{settings.search_index}' (FHIRFLOW_SEARCH_INDEX); the search service has 'sqlite'"
    )


def service_for(settings: Settings) -> SearchService:
    """One SearchService per index per process (the bundle service shares it)."""
    key = f"{settings.search_index}:{settings.sqlite_path.resolve()}"
    with _lock:
        if key not in _services:
            _services[key] = SearchService(build_engine(settings), SearchSettings.from_env())
        return _services[key]


def search(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    return service_for(deps.settings)(deps, request)


USE_CASES: dict[str, Callable[[Dependencies, FhirRequest], FhirResponse]] = dict.fromkeys(INTERACTIONS, search)


def build_app(deps: Dependencies | None = None, service: SearchService | None = None) -> Application:
    deps = deps or build_dependencies()
    use_case = service or service_for(deps.settings)
    handlers: dict[tuple[str, str], UseCase] = {
        (route.method, route.pattern): partial(use_case, deps) for route in ROUTE_TABLE.for_service("search")
    }
    return Application(handlers, base_url=deps.settings.base_url, authenticator=deps.authenticator, audit=deps.audit)
