"""The crud service's composition root: settings → adapters → use cases → routes."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from fhirflow.capabilities import capability_statement
from fhirflow.http import Application, UseCase
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.routes import ROUTE_TABLE
from fhirflow.runtime import Dependencies, build_dependencies
from fhirflow_crud import conditional, history, operations, reads, writes

USE_CASES: dict[str, Callable[[Dependencies, FhirRequest], FhirResponse]] = {
    "create": writes.create,
    "update": writes.update,
    "patch": writes.patch,
    "delete": writes.delete,
    "conditional-update": conditional.update,
    "conditional-delete": conditional.delete,
    "conditional-patch": conditional.patch,
    "read": reads.read,
    "vread": reads.vread,
    "history-instance": history.history,
    "history-type": history.history,
    "history-system": history.history,
}
OPERATIONS: dict[str, Callable[[Dependencies, FhirRequest], FhirResponse]] = {
    # Not in USE_CASES: bundles run those, and operations are not (yet) bundle entries.
    "validate": operations.validate,
    "meta": operations.meta,
    "meta-add": operations.meta_add,
    "meta-delete": operations.meta_delete,
}


def metadata(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    from fhirflow.runtime import search_param_catalog
    from fhirflow.validation import RESOURCE_TYPES

    catalog = search_param_catalog(deps.settings)
    custom = catalog.custom_params(request.tenant) if catalog is not None else ()
    statement = capability_statement(
        deps.settings, base_url=request.base_url, resource_types=RESOURCE_TYPES, custom_params=custom
    )
    return FhirResponse(status=200, resource=statement, subsettable=True)


def smart_configuration(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    from fhirflow.authz.discovery import smart_configuration_response

    return smart_configuration_response(deps.settings, request)


def build_app(deps: Dependencies | None = None) -> Application:
    from fhirflow_crud.binary_urls import offering_upload

    deps = deps or build_dependencies()
    handlers: dict[tuple[str, str], UseCase] = {}
    special = {"capabilities": metadata, "smart-configuration": smart_configuration, **OPERATIONS}
    for route in ROUTE_TABLE.for_service("crud"):
        use_case = special.get(route.interaction) or offering_upload(USE_CASES[route.interaction], route.interaction)
        handlers[(route.method, route.pattern)] = partial(use_case, deps)
    return Application.for_service(handlers, deps)
