"""index-sync: the DynamoDB stream consumer that indexes and announces each committed change.

The event source mapping keeps the order the service relies on (one batch per shard at a time),
reports partial batch failures (the handler uses Powertools' ``process_partial_response``),
halves failing batches to isolate a poison record, retries a bounded number of times and then
sends the failed batch's description to an SQS dead-letter queue. Only version-item INSERTs
reach the function: they are the only records that report a change
(:mod:`fhirflow_index_sync.records`), so head updates cost no invocation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from fhirflow.adapters.aws import items
from fhirflow_infra.compliance import acknowledge
from fhirflow_infra.events import dead_letter_queue
from fhirflow_infra.function import INVOKED_BY_STREAM, FhirFunction
from fhirflow_infra.packaging import ServicePackage
from fhirflow_infra.storage import ObjectBuckets, ResourceTables

RETRY_ATTEMPTS = 10
MAX_RECORD_AGE = Duration.hours(24)
"""DynamoDB keeps stream records 24 hours; past that a record is gone either way."""


def change_filter() -> Mapping[str, Any]:
    """Lambda event filter: INSERTs of version items, the records that report a committed change."""
    return lambda_.FilterCriteria.filter(
        {
            "eventName": lambda_.FilterRule.is_equal("INSERT"),
            "dynamodb": {"Keys": {items.SK: {"S": lambda_.FilterRule.begins_with(items.VERSION_PREFIX)}}},
        }
    )


class IndexSync(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        package: ServicePackage,
        code: lambda_.Code,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        key: kms.IKey,
        tables: ResourceTables,
        buckets: ObjectBuckets,
        bus: events.IEventBus,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.handler = FhirFunction(
            self,
            "Handler",
            package=package,
            code=code,
            layers=layers,
            environment=environment,
            key=key,
            description="fhirflow index-sync: DynamoDB stream → search index and ResourceChanged events",
            memory_size=512,
            timeout=Duration.seconds(60),
            reserved_concurrency=reserved_concurrency,
            invoked_by=INVOKED_BY_STREAM,
        )
        self.function = self.handler.function
        self.dead_letter_queue = dead_letter_queue(self, "DeadLetters", key=key)
        self.function.add_event_source(
            sources.DynamoEventSource(
                tables.table,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=100,
                max_batching_window=Duration.seconds(1),
                parallelization_factor=1,  # version order per resource (DESIGN.md §3)
                report_batch_item_failures=True,
                bisect_batch_on_error=True,
                retry_attempts=RETRY_ATTEMPTS,
                max_record_age=MAX_RECORD_AGE,
                on_failure=sources.SqsDlq(self.dead_letter_queue),
                filters=[change_filter()],
            )
        )
        # What it reads and writes, and nothing more: the stream (granted by the event source),
        # offloaded bodies, its ledger, and the bus.
        buckets.grant_blobs_read(self.handler)
        tables.grant_ledger_read_write(self.handler)
        bus.grant_put_events_to(self.function)
        acknowledge(
            self.dead_letter_queue,
            "AwsSolutions-SQS3",
            "This queue is a dead-letter queue: the on-failure destination of the stream event source mapping.",
        )
