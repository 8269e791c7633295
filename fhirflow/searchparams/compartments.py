"""Compartment membership from the official R4 CompartmentDefinitions (compartmentdefinition.html).

A resource is in the compartment of every Patient, Encounter, RelatedPerson, Practitioner or
Device its compartment parameters reference (e.g. an Observation through ``subject`` and
``performer``), and a resource of a compartment type is in its own compartment.
"""

from __future__ import annotations

from typing import Any

from fhirflow.searchparams.extract import extractor_for
from fhirflow.searchparams.registry import Registry, default_registry
from fhirflow.searchparams.values import IndexValue, ReferenceValue


def compartment_codes(resource_type: str, registry: Registry | None = None) -> dict[str, tuple[str, ...]]:
    """Compartment type → the parameter codes that link ``resource_type`` to it."""
    registry = registry or default_registry()
    out: dict[str, tuple[str, ...]] = {}
    for compartment in registry.compartment_types():
        codes = registry.compartment_params(compartment, resource_type)
        if codes:
            out[compartment] = codes
    return out


def compartments_of(
    resource: dict[str, Any],
    *,
    values: dict[str, list[IndexValue]] | None = None,
    registry: Registry | None = None,
    base_url: str | None = None,
) -> list[tuple[str, str]]:
    """``[(compartment type, id), ...]``, e.g. ``[("Patient", "123"), ("Encounter", "e1")]``.

    ``values`` are the resource's extracted index values when the caller has them already.
    Relative references count; absolute ones only when they start with ``base_url`` (this
    server); ``urn:`` and contained references never do.
    """
    registry = registry or default_registry()
    resource_type = resource["resourceType"]
    links = compartment_codes(resource_type, registry)
    if values is None:
        wanted = tuple({code for codes in links.values() for code in codes})
        values = extractor_for(registry).values(resource, wanted) if wanted else {}
    prefix = base_url.rstrip("/") + "/" if base_url else None
    out: dict[tuple[str, str], None] = {}
    own_id = resource.get("id")
    if resource_type in registry.compartments and isinstance(own_id, str):
        out[(resource_type, own_id)] = None
    for compartment, codes in links.items():
        for code in codes:
            for value in values.get(code, ()):
                if not isinstance(value, ReferenceValue) or value.type != compartment or not value.id:
                    continue
                if value.url is None or (prefix is not None and value.url.startswith(prefix)):
                    out[(compartment, value.id)] = None
    return list(out)
