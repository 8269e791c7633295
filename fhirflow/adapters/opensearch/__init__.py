"""The OpenSearch search backend (DESIGN.md §4): index mapping (``mappings``), documents
(``documents``), the query compiler and its plan (``compiler``, ``clauses``, ``plan``) and
the adapter that runs plans with opensearch-py (``search``).

Importing the package is cheap: opensearch-py loads only when a client is first used.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False

if TYPE_CHECKING:
    from fhirflow.adapters.opensearch.compiler import compile_query
    from fhirflow.adapters.opensearch.plan import CompileOptions, SearchPlan
    from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex, SearchResult

_EXPORTS = {
    "compile_query": "compiler",
    "CompileOptions": "plan",
    "SearchPlan": "plan",
    "OpenSearchSearchIndex": "search",
    "SearchResult": "search",
}
__all__ = ["CompileOptions", "OpenSearchSearchIndex", "SearchPlan", "SearchResult", "compile_query"]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
