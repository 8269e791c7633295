"""Lambda entry points of the bundle workflow's task steps and of the sweeper: one line of work each.

Step Functions invokes a step with the state as the event and takes the returned object as its
result; an exception fails the task with the exception's class name as the error, which the
state machine's Retry and Catch match (fhirflow_bundle.transaction.definition). The sweeper runs
on an EventBridge schedule. The steps are built once per container, on the first invocation.
"""

from __future__ import annotations

from typing import Any

from fhirflow.observability import event_handler, service_logger
from fhirflow_bundle.transaction.steps import TransactionSteps

logger = service_logger("bundle-transaction")
_steps: TransactionSteps | None = None


def steps() -> TransactionSteps:
    global _steps
    if _steps is None:
        from fhirflow.runtime import build_dependencies
        from fhirflow_bundle.app import prepare_app_factory
        from fhirflow_bundle.transaction.wiring import build_parts

        deps = build_dependencies()
        _steps = build_parts(deps, prepare_app_factory(deps)).steps
    return _steps


@logger.inject_lambda_context(clear_state=True)
@event_handler
def prepare(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return steps().prepare(event)


@logger.inject_lambda_context(clear_state=True)
@event_handler
def stage(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return steps().stage(event)


@logger.inject_lambda_context(clear_state=True)
@event_handler
def lock(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return steps().lock(event)


@logger.inject_lambda_context(clear_state=True)
@event_handler
def commit(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return steps().commit(event)


@logger.inject_lambda_context(clear_state=True)
@event_handler
def apply(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return steps().apply(event)


@logger.inject_lambda_context(clear_state=True)
@event_handler
def finish(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return steps().finish(event)


@logger.inject_lambda_context(clear_state=True)
@event_handler
def rollback(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return steps().rollback(event)


@logger.inject_lambda_context(clear_state=True)
@event_handler
def sweep(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"resolved": [{"txId": r.tx_id, "outcome": r.outcome} for r in steps().sweep()]}
