"""What a search request is about: type, system or compartment search, and its parameters.

http://hl7.org/fhir/R4/http.html#search: ``GET [base]/[type]?…``, ``GET [base]?…`` (system),
``GET [base]/[Compartment]/[id]/[type]?…`` and ``…/*`` (compartment), and each as ``POST …/_search``
with the parameters in an ``application/x-www-form-urlencoded`` body (and/or the URL).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from fhirflow.errors import NotFound, UnsupportedMediaType
from fhirflow.model import FhirRequest
from fhirflow.searchparams.registry import Registry

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class SearchTarget:
    resource_type: str | None
    """The searched type; None for a system search or ``/Compartment/id/*``."""
    compartment: tuple[str, str] | None
    path: str
    """The search's URL path below the base, for the Bundle's links (``/Observation``, ``""``...)."""

    @property
    def interaction(self) -> str:
        """For the access policy: compartment searches are type or system searches (R4 has no
        ``search-compartment`` interaction code)."""
        return "search-type" if self.resource_type else "search-system"


def search_target(request: FhirRequest, registry: Registry) -> SearchTarget:
    params = request.path_params
    rtype = params.get("type")
    if rtype is not None and not registry.is_resource_type(rtype):
        raise NotFound(f"'{rtype[:64]}' is not a FHIR R4 resource type this server knows")
    if "compartment_type" not in params:
        return SearchTarget(rtype, None, f"/{rtype}" if rtype else "")
    assert rtype is not None, "compartment routes always name the compartment's type"
    owner = params.get("id", "")
    member = params["compartment_type"]
    if rtype not in registry.compartment_types():
        raise NotFound(f"{rtype} is not a compartment (compartmentdefinition.html): {rtype}/{owner[:64]}/{member[:64]}")
    if member != "*" and not registry.is_resource_type(member):
        raise NotFound(f"'{member[:64]}' is not a FHIR R4 resource type this server knows")
    return SearchTarget(None if member == "*" else member, (rtype, owner), f"/{rtype}/{owner}/{member}")


def search_params(request: FhirRequest) -> list[tuple[str, str]]:
    """The search parameters: the URL's, and for ``POST _search`` the form body's after them."""
    params = list(request.query)
    if request.method == "POST" and request.body.strip():
        if request.content_type != FORM:
            raise UnsupportedMediaType(
                f"POST _search takes parameters as {FORM}, not '{request.content_type or 'no content type'}'"
            )
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            text = request.body.decode("latin-1")
        params.extend(parse_qsl(text, keep_blank_values=True))
    return params
