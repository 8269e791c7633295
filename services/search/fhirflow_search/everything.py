"""``Patient/[id]/$everything`` and ``Patient/$everything`` (R4 OperationDefinition Patient-everything,
patient-operation-everything.html), built on compartment and system search.

The instance level answers the patient and the resources in its Patient compartment; the type
level answers every resource in the compartment types, i.e. every patient's record. Both take
``_since`` (resources updated at or after that instant), ``_type`` (the types wanted) and ``_count``
(the page size), and answer a searchset Bundle paged like any search: its ``next`` links are the
compartment or system search the operation runs, so each page is as fresh and as limited as a
search. What the token may read limits every page, as it limits a search: the search service
pushes the access policy's constraint into the query. ``start``/``end`` (care dates) need each
type's clinical date and are refused as not supported.
"""

from __future__ import annotations

import dataclasses
import re

from fhirflow import bodies
from fhirflow.errors import BadRequest, Gone, NotFound, OperationNotSupported
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.runtime import Dependencies
from fhirflow_search.usecase import SearchService

OPERATION = "$everything"
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_PASSED = frozenset({"_count", "_cursor", "_total", "_summary", "_elements"})
"""Search control parameters that mean the same on ``$everything``'s pages."""


def everything(service: SearchService, deps: Dependencies, request: FhirRequest) -> FhirResponse:
    if request.path_params.get("type") != "Patient":
        raise OperationNotSupported(
            f"{OPERATION} is defined on Patient only (Patient-everything), not on {request.path_params.get('type')}"
        )
    patient_id = request.path_params.get("id")
    params = bodies.operation_parameters(request, operation=OPERATION, with_body=request.method == "POST")
    registry = service.registry_for(request.tenant)
    members = tuple(t for t in registry.compartments.get("Patient", {}) if t != "Patient")
    query: list[tuple[str, str]] = []
    wanted: tuple[str, ...] = ()
    for name, value in params:
        if name == "_since":
            if not _INSTANT.match(value):
                raise BadRequest(
                    f"_since must be an instant (YYYY-MM-DDThh:mm:ss+zz:zz), not '{value[:40]}'", expression="_since"
                )
            query.append(("_lastUpdated", f"ge{value}"))
        elif name == "_type":
            wanted += _types(value, members)
        elif name in ("start", "end"):
            raise OperationNotSupported(
                f"{OPERATION} does not support '{name}' (care dates) on this server", expression=name
            )
        elif name in _PASSED:
            query.append((name, value))
        else:
            raise BadRequest(f"{OPERATION} takes _since, _type and _count, not '{name[:40]}'", expression=name[:40])
    if patient_id is None:
        return _type_level(service, deps, request, query, wanted or ("Patient", *members))
    return _instance_level(service, deps, request, patient_id, query, wanted)


def _types(value: str, members: tuple[str, ...]) -> tuple[str, ...]:
    found = tuple(t.strip() for t in value.split(",") if t.strip())
    for rtype in found:
        if rtype != "Patient" and rtype not in members:
            raise BadRequest(
                f"_type names '{rtype[:64]}', which is not a resource type of the Patient compartment",
                expression="_type",
            )
    return found


def _instance_level(
    service: SearchService,
    deps: Dependencies,
    request: FhirRequest,
    patient_id: str,
    query: list[tuple[str, str]],
    wanted: tuple[str, ...],
) -> FhirResponse:
    """The compartment search ``Patient/[id]/*`` (the patient is in its own compartment), after
    the patient itself is known to exist and be readable: a hidden one answers as an unknown one."""
    deps.policy.authorize(request, "read", "Patient")
    head = deps.store.current(request.tenant, "Patient", patient_id)
    if head is None:
        raise NotFound(f"Patient/{patient_id[:64]} is not known")
    deps.policy.check_read(request, head)
    if head.deleted or head.body is None:
        raise Gone(f"Patient/{patient_id[:64]} was deleted")
    compartment = dataclasses.replace(
        request,
        method="GET",
        body=b"",
        route="/{type}/{id}/{compartment_type}",
        path_params={**request.path_params, "compartment_type": "*"},
        query=query + ([("_type", ",".join(wanted))] if wanted else []),
    )
    return service(deps, compartment)


def _type_level(
    service: SearchService,
    deps: Dependencies,
    request: FhirRequest,
    query: list[tuple[str, str]],
    types: tuple[str, ...],
) -> FhirResponse:
    system = dataclasses.replace(
        request, method="GET", body=b"", route="/", path_params={}, query=[*query, ("_type", ",".join(types))]
    )
    return service(deps, system)
