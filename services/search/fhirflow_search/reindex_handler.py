"""Lambda entry point of the SQS-triggered ``$reindex`` worker (:mod:`fhirflow_search.reindex_queue`).

A module of its own so that the search API's handler does not import the batch utilities: each
record is one chunk of a job, failed ones are reported as ``batchItemFailures`` and come back
after the queue's visibility timeout (then to the dead-letter queue after ``MAX_RECEIVES``).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

logger = Logger(service="reindex")
processor = BatchProcessor(event_type=EventType.SQS)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    from fhirflow_search.reindex_queue import worker_records

    return process_partial_response(
        event=event, record_handler=worker_records(context).handle, processor=processor, context=context
    )
