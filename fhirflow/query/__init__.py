"""FHIR search queries parsed into a typed AST (:mod:`fhirflow.query.ast`) for the backends.

Importing the package is cheap: the parser loads on first attribute access.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (keeps the import cheap)

if TYPE_CHECKING:
    from fhirflow.query.ast import Query
    from fhirflow.query.parser import parse

_EXPORTS = {"parse": "parser", "Query": "ast"}
__all__ = ["Query", "parse"]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
