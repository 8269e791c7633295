"""The subscriptions service's composition root (API side): ``$status`` and ``$events``.

The Subscription resource itself is served by the crud service like any resource (its write hook
is :mod:`fhirflow_subscriptions.hook`); the matcher and deliverer run in the background
(:mod:`fhirflow_subscriptions.local` in the embedded mode).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from fhirflow.http import Application, UseCase
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.routes import ROUTE_TABLE
from fhirflow.runtime import Dependencies, build_dependencies
from fhirflow_subscriptions import operations

USE_CASES: dict[str, Callable[[Dependencies, FhirRequest], FhirResponse]] = {
    "subscription-status": operations.status,
    "subscription-events": operations.events,
}


def build_app(deps: Dependencies | None = None) -> Application:
    deps = deps or build_dependencies()
    handlers: dict[tuple[str, str], UseCase] = {}
    for route in ROUTE_TABLE.for_service("subscriptions"):
        handlers[(route.method, route.pattern)] = partial(USE_CASES[route.interaction], deps)
    return Application.for_service(handlers, deps)
