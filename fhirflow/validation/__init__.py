"""Structural validation of FHIR R4 (4.0.1) resources against the official StructureDefinitions.

The model is generated from the HL7 R4 core package by ``tools/gen_r4_schema.py`` into
``data/r4.json.gz``; it is loaded on first use, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # fhirflow.errors pulls in dataclasses and typing: ~10 ms that an import need not pay
    from fhirflow.errors import Issue

__all__ = [
    "RESOURCE_TYPES",
    "element_repeats",
    "is_resource_type",
    "mandatory_elements",
    "resource_types",
    "summary_elements",
    "validate_resource",
]

# Provided lazily by __getattr__ below (PEP 562), so that importing the package does not load the model.
RESOURCE_TYPES: frozenset[str]


def validate_resource(resource: object, *, expected_type: str | None = None) -> list[Issue]:
    """All problems found in ``resource`` (an empty list means valid).

    Never raises for bad input of any shape. ``expected_type``, when given, is the type from the URL;
    a different ``resourceType`` is an ``invalid`` issue.
    """
    from fhirflow.validation.validator import validate

    return validate(resource, expected_type)


def resource_types() -> frozenset[str]:
    """The concrete (non-abstract) R4 resource types."""
    from fhirflow.validation.schema import schema

    return schema().resource_types


def is_resource_type(name: str) -> bool:
    """Whether ``name`` is a concrete R4 resource type ("Patient": True; "Resource", "DomainResource": False)."""
    return name in resource_types()


def element_repeats(element_path: str) -> bool:
    """Whether the R4 element at a definition path (``Patient.name``, ``HumanName.given``,
    ``Patient.contact.telecom``) repeats, i.e. is a JSON array. False for unknown paths."""
    from fhirflow.validation.schema import schema

    return schema().repeats(element_path)


def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level JSON names of the elements marked isSummary (for ``_summary=true``), choices expanded
    (``deceasedBoolean``, ``deceasedDateTime``). A primitive's ``_name`` goes with its ``name``.
    Empty for anything that is not a concrete R4 resource type."""
    from fhirflow.validation.schema import schema

    return schema().top_level_names(resource_type, mandatory=False)


def mandatory_elements(resource_type: str) -> frozenset[str]:
    """Top-level JSON names of the elements with min >= 1 (for ``_summary=text``), choices expanded.
    Empty for anything that is not a concrete R4 resource type."""
    from fhirflow.validation.schema import schema

    return schema().top_level_names(resource_type, mandatory=True)


def __getattr__(name: str) -> object:
    if name == "RESOURCE_TYPES":
        return resource_types()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
