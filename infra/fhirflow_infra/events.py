"""The change-event bus (DESIGN.md §3): index-sync publishes ``ResourceChanged`` v1 here.

The bus is also the integration point for other systems. :class:`ChangeEvents` carries one
example integration: a rule that copies every ``ResourceChanged`` event to an SQS queue with a
dead-letter queue, the shape an integrator's consumer (or the subscriptions matcher) plugs into.
The event pattern comes from the contracts, so it matches what index-sync sends.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fhirflow_contracts import EVENT_SOURCE, ResourceChanged

DEFAULT_RETENTION = Duration.days(4)
DEAD_LETTER_RETENTION = Duration.days(14)
"""The SQS maximum, so an operator has time to look and redrive."""
DEFAULT_VISIBILITY = Duration.seconds(30)


def encrypted_queue(
    scope: Construct,
    construct_id: str,
    *,
    key: kms.IKey,
    retention: Duration = DEFAULT_RETENTION,
    visibility_timeout: Duration = DEFAULT_VISIBILITY,
    dead_letter_queue: sqs.DeadLetterQueue | None = None,
) -> sqs.Queue:
    """An SQS queue encrypted with the data key that refuses plain-HTTP requests."""
    return sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
        enforce_ssl=True,
        retention_period=retention,
        visibility_timeout=visibility_timeout,
        dead_letter_queue=dead_letter_queue,
        removal_policy=RemovalPolicy.DESTROY,  # messages are transient; the table is the record
    )


def dead_letter_queue(scope: Construct, construct_id: str, *, key: kms.IKey) -> sqs.Queue:
    return encrypted_queue(scope, construct_id, key=key, retention=DEAD_LETTER_RETENTION)


class ChangeEvents(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        # ResourceChanged carries keys and versions, never bodies (fhirflow_contracts.events), so the
        # bus keeps EventBridge's default encryption.
        self.bus = events.EventBus(self, "Bus", description="fhirflow ResourceChanged v1 events")
        self.pattern = events.EventPattern(source=[EVENT_SOURCE], detail_type=[ResourceChanged.DETAIL_TYPE])

        self.integration_dlq = dead_letter_queue(self, "IntegrationDeadLetters", key=key)
        self.integration_queue = encrypted_queue(
            self,
            "IntegrationQueue",
            key=key,
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=5, queue=self.integration_dlq),
        )
        self.integration_rule = events.Rule(
            self,
            "ToIntegrationQueue",
            event_bus=self.bus,
            description="Example integration: every ResourceChanged event to an SQS queue",
            event_pattern=self.pattern,
            targets=[
                targets.SqsQueue(
                    self.integration_queue,
                    # Events EventBridge could not deliver land in the same dead-letter queue.
                    dead_letter_queue=self.integration_dlq,
                    retry_attempts=8,
                    max_event_age=Duration.hours(24),
                )
            ],
        )

    @property
    def dead_letter_queues(self) -> list[sqs.Queue]:
        return [self.integration_dlq]
