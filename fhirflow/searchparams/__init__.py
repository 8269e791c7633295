"""Search parameters: the R4 registry, typed index values, extraction and compartments.

Importing the package is cheap: submodules load on first attribute access and the registry
data on first use (:func:`default_registry`).
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (keeps the import cheap)

if TYPE_CHECKING:
    from fhirflow.searchparams.compartments import compartments_of
    from fhirflow.searchparams.extract import IndexDocument, extract_index_values, index_document
    from fhirflow.searchparams.registry import Component, Part, Registry, SearchParam, default_registry

_EXPORTS = {
    "Component": "registry",
    "Part": "registry",
    "Registry": "registry",
    "SearchParam": "registry",
    "default_registry": "registry",
    "IndexDocument": "extract",
    "extract_index_values": "extract",
    "index_document": "extract",
    "compartments_of": "compartments",
}
__all__ = [
    "Component",
    "IndexDocument",
    "Part",
    "Registry",
    "SearchParam",
    "compartments_of",
    "default_registry",
    "extract_index_values",
    "index_document",
]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
