"""The OpenSearch search backend (DESIGN.md §4): index mapping (``mappings``), documents
(``documents``), the query compiler and its plan (``compiler``, ``clauses``, ``plan``), the
adapter that writes documents in bulk and runs plans with opensearch-py (``search``, ``bulk``),
the search service's engine on it (``engine``) and the client built from settings (``client``).

Importing the package is cheap: opensearch-py loads only when a client is first used.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False

if TYPE_CHECKING:
    from fhirflow.adapters.opensearch.client import client_factory, opensearch_client
    from fhirflow.adapters.opensearch.compiler import compile_query
    from fhirflow.adapters.opensearch.engine import OpenSearchSearchEngine
    from fhirflow.adapters.opensearch.plan import CompileOptions, SearchPlan
    from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex, SearchResult

_EXPORTS = {
    "client_factory": "client",
    "opensearch_client": "client",
    "OpenSearchSearchEngine": "engine",
    "compile_query": "compiler",
    "CompileOptions": "plan",
    "SearchPlan": "plan",
    "OpenSearchSearchIndex": "search",
    "SearchResult": "search",
}
__all__ = [
    "CompileOptions",
    "OpenSearchSearchEngine",
    "OpenSearchSearchIndex",
    "SearchPlan",
    "SearchResult",
    "client_factory",
    "compile_query",
    "opensearch_client",
]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
