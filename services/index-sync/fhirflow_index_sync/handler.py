"""Lambda entry point of index-sync: DynamoDB stream batches with partial-failure reporting.

Importing this module loads Powertools only; the use case, the contracts (pydantic) and the
adapters load on the first invocation.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from fhirflow.observability import event_handler, service_logger

logger = service_logger("index-sync")
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@logger.inject_lambda_context(clear_state=True)
@event_handler
def lambda_handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    from fhirflow_index_sync import app

    return process_partial_response(
        event=event, record_handler=app.stream_batch(event).handle, processor=processor, context=context
    )
