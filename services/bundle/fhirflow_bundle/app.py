"""The bundle service's composition root."""

from __future__ import annotations

from fhirflow.http import Application, UseCase
from fhirflow.routes import ROUTE_TABLE
from fhirflow.runtime import Dependencies, build_dependencies
from fhirflow_bundle.processor import BundleProcessor


def build_app(deps: Dependencies | None = None) -> Application:
    from fhirflow_crud.app import USE_CASES

    deps = deps or build_dependencies()
    processor = BundleProcessor(deps, dict(USE_CASES))
    handlers: dict[tuple[str, str], UseCase] = {
        (route.method, route.pattern): processor.process for route in ROUTE_TABLE.for_service("bundle")
    }
    return Application(handlers, base_url=deps.settings.base_url, authenticator=deps.authenticator, audit=deps.audit)
