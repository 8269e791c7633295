"""Subscriptions on AWS (docs/subscriptions.md, "AWS"): matcher, deliverer and ticker.

change-event bus → rule → SQS (``Changes``, DLQ) → **matcher** Lambda → SQS FIFO (``Notifications``,
message group = ``{tenant}/{subscription id}``, FIFO DLQ) → **deliverer** Lambda (partial batch
responses); an EventBridge Scheduler schedule runs the **ticker** every minute (heartbeats, ``end``).
State, secrets, event and delivery logs are in a table of their own (TTL on ``expires``).

The construct is built in two steps because the table and the queue must be known before the
stack computes every function's environment: ``Subscriptions(...)`` makes the storage and queues,
:meth:`Subscriptions.add_functions` the Lambdas once the environment exists.

Retries wait in the FIFO message's visibility timeout (the deliverer sets it, up to 12 h), so the
redrive count is high: a message reaches the dead-letter queue only after ``MAX_RECEIVES``
deliveries, far more than the retry schedule makes before its horizon (then the message is dropped
and the subscription turned ``off``), i.e. only when the deliverer itself keeps failing on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_backup as backup
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fhirflow.adapters.aws.dynamodb_subscriptions import TTL_ATTRIBUTE, subscriptions_table
from fhirflow_infra.compliance import acknowledge, acknowledge_grant_wildcards, arn_reference
from fhirflow_infra.events import DEAD_LETTER_RETENTION, dead_letter_queue, encrypted_queue
from fhirflow_infra.function import INVOKED_BY_QUEUE, FhirFunction
from fhirflow_infra.packaging import ServicePackage
from fhirflow_infra.storage import (
    KMS_GRANT_ACTIONS,
    RESOURCE_READ_ACTIONS,
    RESOURCE_WRITE_ACTIONS,
    ObjectBuckets,
    ResourceTables,
    table_from_schema,
)
from fhirflow_subscriptions.aws import NOTIFICATIONS_PREFIX

NOTIFICATION_RETENTION = Duration.days(14)
NOTIFICATION_BLOB_RETENTION = Duration.days(15)

MATCHER_TIMEOUT = Duration.minutes(1)
DELIVERER_TIMEOUT = Duration.minutes(3)
"""A batch of up to 10 notifications, each bounded by the request timeout (10 s by default)."""
TICKER_TIMEOUT = Duration.minutes(1)
TICK_INTERVAL = Duration.minutes(1)
"""EventBridge Scheduler's finest rate: heartbeat periods are honoured to within a minute."""
MAX_RECEIVES = 50
SUBSCRIPTION_TABLE_READS = RESOURCE_READ_ACTIONS
SUBSCRIPTION_TABLE_WRITES = (*RESOURCE_WRITE_ACTIONS,)
"""TransactWriteItems (event numbers) is authorized as the Put/Update/ConditionCheck it holds."""


@dataclass(frozen=True, slots=True)
class EntryPackage(ServicePackage):
    """The subscriptions package with one of the AWS entry points of ``fhirflow_subscriptions.aws``."""

    entry: str = "match_handler"

    @property
    def handler(self) -> str:
        return f"{self.package}.aws.{self.entry}"

    @property
    def function_service(self) -> str:
        return f"{self.service}-{self.entry.removesuffix('_handler')}"


TICKER_INVOCATION = (
    "Invoked asynchronously by EventBridge Scheduler every minute, with no retries: a missed tick's "
    "heartbeats and end dates are handled by the next one, so a dead-letter queue would only collect "
    "duplicates of that work; failures raise the function's error alarm."
)


class Subscriptions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        bus: events.IEventBus,
        pattern: events.EventPattern,
        tables: ResourceTables,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = key
        self.table = table_from_schema(
            self,
            "State",
            subscriptions_table("fhirflow-subscriptions"),
            key=key,
            time_to_live_attribute=TTL_ATTRIBUTE,
            removal_policy=removal_policy,
        )
        # The signing secrets and event counters are worth the same backups as the resources: the
        # resource tables' plan and vault.
        selection = tables.backups.plan.add_selection(
            "SubscriptionsState", resources=[backup.BackupResource.from_dynamo_db_table(self.table)]
        )
        acknowledge(
            selection,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSBackupServiceRolePolicyForBackup]",
            "The role AWS Backup assumes to take the backups, with the policy AWS maintains for that purpose.",
        )

        self.changes_dlq = dead_letter_queue(self, "ChangesDeadLetters", key=key)
        self.changes = encrypted_queue(
            self,
            "Changes",
            key=key,
            visibility_timeout=Duration.seconds(MATCHER_TIMEOUT.to_seconds() * 6),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=5, queue=self.changes_dlq),
        )
        self.rule = events.Rule(
            self,
            "ToMatcher",
            event_bus=bus,
            description="Every ResourceChanged event to the subscriptions matcher",
            event_pattern=pattern,
            targets=[
                targets.SqsQueue(
                    self.changes, dead_letter_queue=self.changes_dlq, retry_attempts=8, max_event_age=Duration.hours(24)
                )
            ],
        )
        self.notifications_dlq = sqs.Queue(
            self,
            "NotificationsDeadLetters",
            fifo=True,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.notifications = sqs.Queue(
            self,
            "Notifications",
            fifo=True,
            content_based_deduplication=False,  # MessageDeduplicationId = the notification id
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            # Longer than the retry horizon (3 days by default): a waiting notification must not expire.
            retention_period=NOTIFICATION_RETENTION,
            visibility_timeout=Duration.seconds(DELIVERER_TIMEOUT.to_seconds() * 2),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=MAX_RECEIVES, queue=self.notifications_dlq),
            removal_policy=RemovalPolicy.DESTROY,
        )

    @property
    def dead_letter_queues(self) -> dict[str, sqs.IQueue]:
        return {"subscriptions-changes": self.changes_dlq, "subscriptions-notifications": self.notifications_dlq}

    def add_functions(
        self,
        *,
        package: ServicePackage,
        code: lambda_.Code,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        tables: ResourceTables,
        buckets: ObjectBuckets,
        reserved_concurrency: int | None = None,
    ) -> None:
        def function(name: str, entry: str, description: str, timeout: Duration, invoked_by: str) -> FhirFunction:
            made = FhirFunction(
                self,
                name,
                package=EntryPackage(service=package.service, package=package.package, entry=entry),
                code=code,
                layers=layers,
                environment=environment,
                key=self.key,
                description=description,
                timeout=timeout,
                reserved_concurrency=reserved_concurrency,
                invoked_by=invoked_by,
            )
            # Every one of them reads the subscription (and the focus resources) and writes its
            # status as a system write of a new version (docs/subscriptions.md).
            tables.grant_resources_read_write(made)
            buckets.grant_blobs_read_write(made)
            self.grant_state(made, write=True)
            return made

        # Notifications too large for SQS wait there (fhirflow_subscriptions.aws.SqsFifoQueue): kept
        # longer than the FIFO queue keeps a message, so a waiting one always finds its body.
        buckets.blobs.add_lifecycle_rule(
            prefix=NOTIFICATIONS_PREFIX,
            expiration=NOTIFICATION_BLOB_RETENTION,
            noncurrent_version_expiration=Duration.days(1),
        )
        self.matcher = function(
            "Matcher",
            "match_handler",
            "fhirflow subscriptions matcher: ResourceChanged → notifications",
            MATCHER_TIMEOUT,
            INVOKED_BY_QUEUE,
        )
        self.matcher.function.add_event_source(
            sources.SqsEventSource(self.changes, batch_size=10, report_batch_item_failures=True)
        )
        self.notifications.grant_send_messages(self.matcher.function)

        self.deliverer = function(
            "Deliverer",
            "deliver_handler",
            "fhirflow subscriptions deliverer: signed rest-hooks",
            DELIVERER_TIMEOUT,
            INVOKED_BY_QUEUE,
        )
        self.deliverer.function.add_event_source(
            sources.SqsEventSource(self.notifications, batch_size=10, report_batch_item_failures=True)
        )  # grants receive, delete and ChangeMessageVisibility (the retry wait)

        self.ticker = function(
            "Ticker", "tick_handler", "fhirflow subscriptions: heartbeats and end", TICKER_TIMEOUT, TICKER_INVOCATION
        )
        # EventBridge Scheduler invokes asynchronously: no Lambda retries (the next tick does the same).
        self.ticker.function.configure_async_invoke(retry_attempts=0, max_event_age=TICK_INTERVAL)
        self.notifications.grant_send_messages(self.ticker.function)
        self.schedule_role = iam.Role(
            self,
            "TickScheduleRole",
            assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
            description="EventBridge Scheduler invoking the fhirflow subscriptions ticker",
        )
        self.schedule = scheduler.Schedule(
            self,
            "TickSchedule",
            description="fhirflow: subscription heartbeats and end",
            schedule=scheduler.ScheduleExpression.rate(TICK_INTERVAL),
            target=scheduler_targets.LambdaInvoke(self.ticker.function, role=self.schedule_role, retry_attempts=0),
        )
        acknowledge(
            self.schedule_role,
            "HIPAA.Security-IAMNoInlinePolicy",
            "CDK writes this role's one statement (lambda:InvokeFunction on the ticker) from the schedule's target.",
        )
        acknowledge(
            self.schedule_role,
            f"AwsSolutions-IAM5[Resource::<{_logical_arn(self.ticker)}>:*]",
            "The schedule target's invoke grant covers the ticker's versions and aliases (ARN:*), nothing else.",
        )

    @property
    def functions(self) -> dict[str, lambda_.IFunction]:
        return {
            "subscriptions-matcher": self.matcher.function,
            "subscriptions-deliverer": self.deliverer.function,
            "subscriptions-ticker": self.ticker.function,
        }

    def grant_state(self, function: FhirFunction, *, write: bool) -> None:
        """The subscriptions table and its listing index: reads, and with ``write`` the writes;
        never Scan."""
        actions = SUBSCRIPTION_TABLE_READS + (SUBSCRIPTION_TABLE_WRITES if write else ())
        iam.Grant.add_to_principal(
            grantee=function.function,
            actions=list(actions),
            resource_arns=[self.table.table_arn, f"{self.table.table_arn}/index/*"],
        )
        if write:
            self.key.grant_encrypt_decrypt(function.function)
        else:
            self.key.grant_decrypt(function.function)
        acknowledge_grant_wildcards(
            function.role,
            actions=KMS_GRANT_ACTIONS if write else (),
            resources=[f"{arn_reference(self.table)}/index/*"],
            reason="The subscriptions table's data actions on it and its listing index, and the data key for it.",
        )


def _logical_arn(function: FhirFunction) -> str:
    return arn_reference(function.function).removeprefix("<").removesuffix(">")
