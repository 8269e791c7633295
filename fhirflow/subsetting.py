"""``_summary`` and ``_elements`` (http://hl7.org/fhir/R4/search.html#summary, #elements).

A subsetted resource is marked with the ``SUBSETTED`` tag so that nobody mistakes it for the
whole resource and writes it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhirflow.errors import BadRequest

if TYPE_CHECKING:
    from fhirflow.model import FhirRequest, FhirResponse

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
SUMMARY_MODES = frozenset({"true", "text", "data", "count", "false"})
_ALWAYS = frozenset({"resourceType", "id", "meta"})


def shape_from_params(request: FhirRequest, response: FhirResponse) -> dict[str, Any] | None:
    """The reshaped body when the request asks for a subset, else None (send the stored form)."""
    summary = request.param("_summary")
    elements = request.param("_elements")
    if summary is None and elements is None:
        return None
    if summary is not None and summary not in SUMMARY_MODES:
        raise BadRequest(
            f"_summary must be one of {', '.join(sorted(SUMMARY_MODES))}, not '{summary}'", expression="_summary"
        )
    resource = response.body_resource()
    if resource is None:
        return None
    return subset(resource, summary=summary, elements=parse_elements(elements))


def parse_elements(elements: str | None) -> frozenset[str] | None:
    if elements is None:
        return None
    names = frozenset(e.strip().split(".")[-1] for e in elements.split(",") if e.strip())
    return names or None


def subset(resource: dict[str, Any], *, summary: str | None, elements: frozenset[str] | None) -> dict[str, Any]:
    """Apply ``_summary`` (true/text/data/false) or ``_elements`` to one resource."""
    from fhirflow import validation

    rtype = str(resource.get("resourceType", ""))
    if summary in (None, "false", "count") and not elements:
        return resource
    if summary == "data":
        kept = {k: v for k, v in resource.items() if k != "text"}
    elif summary == "true":
        allowed = validation.summary_elements(rtype) | _ALWAYS
        kept = {k: v for k, v in resource.items() if _base_name(k) in allowed or k in allowed}
    elif summary == "text":
        allowed = validation.mandatory_elements(rtype) | _ALWAYS | {"text"}
        kept = {k: v for k, v in resource.items() if _base_name(k) in allowed or k in allowed}
    else:
        assert elements is not None
        # Servers SHOULD return mandatory elements whether asked for or not (search.html#elements).
        allowed = elements | _ALWAYS | validation.mandatory_elements(rtype)
        kept = {
            k: v
            for k, v in resource.items()
            if k in allowed or _base_name(k) in allowed or _choice_base(k) in allowed  # _birthDate goes with birthDate
        }
    return _tag_subsetted(kept)


def _base_name(json_name: str) -> str:
    return json_name.removeprefix("_")


def _choice_base(json_name: str) -> str:
    """``valueQuantity`` → ``value``: the choice element an ``_elements`` entry may name."""
    name = _base_name(json_name)
    for index, char in enumerate(name):
        if char.isupper():
            return name[:index]
    return name


def _tag_subsetted(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if not (isinstance(t, dict) and t.get("code") == "SUBSETTED")]
    meta["tag"] = [*tags, SUBSETTED]
    return {**resource, "meta": meta}
