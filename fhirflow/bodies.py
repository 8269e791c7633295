"""Reading a resource from a request body: size, media type, JSON, and the ``resourceType`` check."""

from __future__ import annotations

from typing import Any

from fhirflow import jsonio
from fhirflow.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from fhirflow.http import JSON_TYPES, XML_TYPES
from fhirflow.model import FhirRequest

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
PARAMETERS_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
CONTROL_PARAMETERS = frozenset({"_format", "_pretty"})
"""Query parameters that shape the answer, not an operation's input."""


def check_size(request: FhirRequest, limit: int) -> None:
    if len(request.body) > limit:
        raise PayloadTooLarge(f"The body is {len(request.body)} bytes; the limit is {limit}")


def is_json_body(request: FhirRequest) -> bool:
    """JSON media types; a body sent without Content-Type is read as FHIR JSON too."""
    return request.content_type in JSON_TYPES or request.content_type == ""


def parse_resource(request: FhirRequest, *, limit: int, expected_type: str) -> dict[str, Any]:
    """The body as a resource of ``expected_type`` (not yet validated), or a 4xx."""
    check_size(request, limit)
    if request.content_type in XML_TYPES:
        raise UnsupportedMediaType("FHIR XML is not supported; send application/fhir+json")
    if not is_json_body(request):
        raise UnsupportedMediaType(
            f"Content-Type '{request.content_type}' is not supported; send application/fhir+json"
        )
    if not request.body.strip():
        raise BadRequest("The request has no body; a resource is required")
    resource = request.parsed_body if request.parsed_body is not None else jsonio.loads(request.body)
    if not isinstance(resource, dict):
        raise BadRequest("The body must be a JSON object (a FHIR resource)")
    actual = resource.get("resourceType")
    if actual != expected_type:
        raise BadRequest(
            f"resourceType '{actual}' does not match the type in the URL ('{expected_type}')",
            expression="resourceType",
        )
    return resource


def operation_parameters(request: FhirRequest, *, operation: str, with_body: bool = True) -> list[tuple[str, str]]:
    """An operation's input as (name, value) pairs: the URL's parameters (without ``_format`` and
    ``_pretty``), then, when ``with_body``, those of a ``Parameters`` body, each of which must have
    a name and one string-like ``value[x]`` (operations.html#request). 4xx naming what is wrong."""
    pairs = [(name, value) for name, value in request.query if name not in CONTROL_PARAMETERS]
    if not with_body or not request.body.strip():
        return pairs
    if request.content_type not in PARAMETERS_TYPES:
        raise UnsupportedMediaType(
            f"{operation} takes a Parameters resource as application/fhir+json, not "
            f"'{request.content_type or 'no content type'}'"
        )
    body = jsonio.loads(request.body)
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest(f"{operation} takes a Parameters resource", expression="Parameters")
    for index, parameter in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{index}]"
        name = parameter.get("name") if isinstance(parameter, dict) else None
        values = [v for k, v in parameter.items() if k.startswith("value")] if isinstance(parameter, dict) else []
        if not isinstance(name, str) or not name or len(values) != 1 or not isinstance(values[0], str):
            raise BadRequest(f"{where} needs a name and one string-like value[x]", expression=where)
        pairs.append((name, values[0]))
    return pairs
