"""The bundle service's composition root."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhirflow.http import Application, UseCase
from fhirflow.routes import ROUTE_TABLE
from fhirflow.runtime import Dependencies, build_dependencies
from fhirflow_bundle.processor import BundleProcessor
from fhirflow_bundle.processor import UseCase as EntryUseCase
from fhirflow_bundle.transaction.commit import PreparingCommitter
from fhirflow_bundle.transaction.steps import AppFactory
from fhirflow_bundle.transaction.wiring import TransactionParts, build_parts

if TYPE_CHECKING:
    from fhirflow.authz.principal import Principal


def entry_use_cases() -> dict[str, EntryUseCase]:
    """What a bundle entry can do: the crud use cases and searches (``GET Observation?code=...``),
    the same functions a direct request reaches (STYLE.md rule 7)."""
    from fhirflow_crud.app import USE_CASES as CRUD
    from fhirflow_search.app import USE_CASES as SEARCH

    return {**CRUD, **SEARCH}


def build_app(deps: Dependencies | None = None, *, parts: TransactionParts | None = None) -> Application:
    deps = deps or build_dependencies()
    parts = parts or build_parts(deps, prepare_app_factory(deps))
    processor = BundleProcessor(deps, entry_use_cases(), committer=parts.committer, jobs=parts.jobs)
    handlers: dict[tuple[str, str], UseCase] = {}
    for route in ROUTE_TABLE.for_service("bundle"):
        use_case = processor.status if route.interaction == "async-status" else processor.process
        handlers[(route.method, route.pattern)] = use_case
    return Application.for_service(handlers, deps)


def prepare_app_factory(deps: Dependencies) -> AppFactory:
    """What the workflow's Prepare step runs a stored bundle with: the same processor and use cases,
    committing through the step's own committer, answering synchronously, as the stored principal."""

    def factory(committer: PreparingCommitter, root: str, principal: Principal | None) -> Application:
        processor = BundleProcessor(deps, entry_use_cases(), committer=committer)
        handlers: dict[tuple[str, str], UseCase] = {
            (route.method, route.pattern): processor.process
            for route in ROUTE_TABLE.for_service("bundle")
            if route.interaction == "transaction"
        }
        from fhirflow.authz.authenticator import StoredPrincipalAuthenticator

        # The stored request carries no credentials: it runs as the principal they proved.
        authenticator = StoredPrincipalAuthenticator(principal) if deps.authenticator is not None else None
        return Application(handlers, base_url=root, authenticator=authenticator)

    return factory
