"""The search service's composition root: settings → search engine → the use case → routes.

``USE_CASES`` maps the route table's search interactions to the use case, with the same
``(deps, request)`` signature as the crud use cases, so the bundle service can run search
entries (``GET Observation?code=…`` inside a batch) through it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from fhirflow.errors import NotImplementedFhir
from fhirflow.http import Application, UseCase
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.routes import ROUTE_TABLE
from fhirflow.runtime import Dependencies, build_dependencies, search_engine, search_param_catalog
from fhirflow.settings import Settings
from fhirflow_search import reindex
from fhirflow_search.everything import everything
from fhirflow_search.reindex import ReindexParts
from fhirflow_search.settings import SearchSettings
from fhirflow_search.usecase import SearchService

INTERACTIONS = ("search-type", "search-system", "search-compartment")

_services: dict[str, SearchService] = {}
_reindex_parts: dict[str, ReindexParts] = {}
_lock = threading.Lock()


def service_for(settings: Settings) -> SearchService:
    """One SearchService per index per process (the bundle service shares it)."""
    if settings.search_index == "opensearch":
        key = f"opensearch:{settings.opensearch_url}/{settings.opensearch_index}"
    else:
        key = f"{settings.search_index}:{settings.sqlite_path.resolve()}"
    with _lock:
        if key not in _services:
            catalog = search_param_catalog(settings)
            _services[key] = SearchService(search_engine(settings), SearchSettings.from_env(), catalog=catalog)
        return _services[key]


def search(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    return service_for(deps.settings)(deps, request)


USE_CASES: dict[str, Callable[[Dependencies, FhirRequest], FhirResponse]] = dict.fromkeys(INTERACTIONS, search)


def reindex_parts(settings: Settings) -> ReindexParts:
    """The reindex job's adapters for the settings' index (one set per index per process)."""
    if settings.search_index == "opensearch" and settings.store == "dynamodb":
        return _aws_reindex_parts(settings)
    if settings.search_index != "sqlite":
        raise NotImplementedFhir(
            "$reindex needs the embedded (SQLite) search index, or OpenSearch with the DynamoDB store"
        )
    key = f"reindex:{settings.sqlite_path.resolve()}"
    with _lock:
        if key not in _reindex_parts:
            from fhirflow.adapters.sqlite.index import SqliteSearchIndex
            from fhirflow.adapters.sqlite.reindex import SqliteReindexer, SqliteReindexJobStore
            from fhirflow.runtime import sqlite_database
            from fhirflow_search.reindex_queue import build_queue

            db = sqlite_database(settings)
            index = SqliteSearchIndex(db, bodies_from_store=settings.store == "sqlite")
            jobs = SqliteReindexJobStore(db)
            _reindex_parts[key] = ReindexParts(jobs, SqliteReindexer(index), index.catalog, build_queue(settings))
        return _reindex_parts[key]


def _aws_reindex_parts(settings: Settings) -> ReindexParts:
    key = f"reindex:{settings.dynamodb_endpoint or ''}/{settings.dynamodb_table}:{settings.opensearch_index}"
    with _lock:
        if key not in _reindex_parts:
            from fhirflow.adapters.aws.dynamodb_reindex_jobs import DynamoDbReindexJobStore
            from fhirflow.adapters.opensearch.reindex import OpenSearchReindexer
            from fhirflow.runtime import dynamodb_search_param_catalog, opensearch_index

            catalog = dynamodb_search_param_catalog(settings)
            jobs = DynamoDbReindexJobStore(
                settings.dynamodb_table, endpoint_url=settings.dynamodb_endpoint, region=settings.aws_region
            )
            from fhirflow_search.reindex_queue import build_queue

            reindexer = OpenSearchReindexer(opensearch_index(settings), catalog)
            _reindex_parts[key] = ReindexParts(jobs, reindexer, catalog, build_queue(settings))
        return _reindex_parts[key]


def _reindex_use_case(
    interaction: str, chosen: ReindexParts | None = None
) -> Callable[[Dependencies, FhirRequest], FhirResponse]:
    def run(deps: Dependencies, request: FhirRequest) -> FhirResponse:
        parts = chosen or reindex_parts(deps.settings)
        if interaction == "reindex-status":
            return reindex.status(deps, parts, request)  # read only: the queue's worker advances jobs
        return reindex.kick_off(deps, parts, request, clock=deps.clock.now_ms)

    return run


def build_app(
    deps: Dependencies | None = None, service: SearchService | None = None, reindex_with: ReindexParts | None = None
) -> Application:
    """The search Application; ``service`` and ``reindex_with`` replace what the settings build (tests)."""
    deps = deps or build_dependencies()
    use_case = service or service_for(deps.settings)
    handlers: dict[tuple[str, str], UseCase] = {}
    for route in ROUTE_TABLE.for_service("search"):
        if route.interaction == "everything":
            handlers[(route.method, route.pattern)] = partial(everything, use_case, deps)
        elif route.interaction in ("reindex", "reindex-status"):
            handlers[(route.method, route.pattern)] = partial(_reindex_use_case(route.interaction, reindex_with), deps)
        else:
            handlers[(route.method, route.pattern)] = partial(use_case, deps)
    return Application.for_service(handlers, deps)
