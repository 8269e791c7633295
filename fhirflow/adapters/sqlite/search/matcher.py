"""``SqliteResourceMatcher``: one resource against a query, on a scratch in-memory database.

The resource is indexed alone into a fresh ``:memory:`` database with the embedded index's own
writer and searched with the embedded engine, so a "match" means exactly what a search means
(every parameter type, modifier and prefix the engine evaluates) without a second evaluator to
keep in step. Building the scratch schema takes a few milliseconds; it runs only when a
conditional create meets a uniqueness key someone else holds (fhirflow_crud.conditional).
"""

from __future__ import annotations

from typing import Any

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.index import SqliteSearchIndex
from fhirflow.adapters.sqlite.search.engine import SqliteSearchEngine
from fhirflow.query.ast import Filter, Query
from fhirflow.search_ports import PageRequest, SearchScope


class SqliteResourceMatcher:
    def matches(self, scope: SearchScope, query: Query, resource: dict[str, Any], *, last_updated: int) -> bool | None:
        if not all(isinstance(c, Filter) for c in query.criteria):
            return None  # a chain or _has asks about other resources, which the scratch index lacks
        rtype, id_ = resource.get("resourceType"), resource.get("id")
        if not isinstance(rtype, str) or not isinstance(id_, str) or rtype not in scope.types:
            return False
        db = SqliteDatabase(":memory:")
        try:
            SqliteSearchIndex(db).apply(scope.tenant, rtype, id_, 1, last_updated, resource)
            unconstrained = SearchScope(scope.tenant, scope.base_url, (rtype,))
            page = SqliteSearchEngine(db).page(unconstrained, query, PageRequest(count=1))
            return bool(page.hits)
        finally:
            db.close()
