"""Lambda entry points of the export service (the API one is also what the local gateway calls).

``lambda_handler``: kick-off, status, cancel and files behind API Gateway. ``worker_handler``:
the SQS-triggered export worker, reporting failed messages as ``batchItemFailures``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from fhirflow.http import LazyApplication
from fhirflow.observability import api_handler, event_handler, service_logger

logger = service_logger("export")
app = LazyApplication("fhirflow_export.app:build_app")
processor = BatchProcessor(event_type=EventType.SQS)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@api_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)


@logger.inject_lambda_context(clear_state=True)
@event_handler
def worker_handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    from fhirflow_export import app as export_app

    return process_partial_response(
        event=event, record_handler=export_app.worker_records(context).handle, processor=processor, context=context
    )
