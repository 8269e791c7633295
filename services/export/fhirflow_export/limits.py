"""Numbers the export worker and its infrastructure (infra/fhirflow_infra/export.py) must agree on.

Kept apart from the use cases so that the CDK app can import them without loading the service.
"""

MAX_RECEIVES = 5
"""Deliveries of one StartExport before it goes to the dead-letter queue; the last one marks the
job failed instead of raising, so the status URL says so."""
WORKER_TIMEOUT_SECONDS = 900
"""The worker Lambda's timeout (Lambda's maximum)."""
YIELD_MARGIN_SECONDS = 120
"""A worker step stops and queues the next one when less than this is left of its time."""
VISIBILITY_TIMEOUT_SECONDS = 6 * WORKER_TIMEOUT_SECONDS
"""SQS's advice for a Lambda consumer: six times the function's timeout."""
LOCAL_STEP_SECONDS = 30.0
"""The embedded worker's turn: a long export goes on in steps, like in Lambda."""
