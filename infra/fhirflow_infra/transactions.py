"""Transactions: the bundle workflow on Step Functions, its task Lambdas and the sweeper.

Both state machines are built from one Python definition
(:func:`fhirflow_bundle.transaction.definition.transaction_workflow` → ``to_asl``), with each
task's ``Resource`` substituted by its function's ARN:

- **Express** (``StartSyncExecution``): the bundle service runs an ordinary multi-batch
  transaction through it and answers within API Gateway's limit (its timeout is
  ``SYNC_EXECUTION_SECONDS``, inside the bundle Lambda's);
- **Standard** (``StartExecution``, ``DescribeExecution``): ``Prefer: respond-async``; its
  executions are looked up by the status endpoint.

One function per task step (their handlers are in ``fhirflow_bundle.transaction.handlers``), each
built by :class:`FhirFunction` and granted the resource table and the blob bucket (the steps read
and write heads, versions, staged items, transaction records and the prepared batches). The
sweeper runs every minute from an EventBridge schedule and finishes or rolls back transactions
left past due. Logs of both state machines go to a KMS-encrypted log group without execution data
(states carry ids, never resources).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from fhirflow.adapters.aws.stepfunctions import SYNC_EXECUTION_SECONDS
from fhirflow.settings import Settings
from fhirflow_bundle.transaction.definition import TASKS, transaction_workflow
from fhirflow_infra.compliance import acknowledge
from fhirflow_infra.environment import env_name
from fhirflow_infra.function import INVOKED_BY_STEP_FUNCTIONS, FhirFunction
from fhirflow_infra.packaging import ServicePackage
from fhirflow_infra.storage import ObjectBuckets, ResourceTables

HANDLERS_MODULE = "fhirflow_bundle.transaction.handlers"
SWEEP_INTERVAL = Duration.minutes(1)
EXPRESS_LIMIT_SECONDS = 300
"""An Express execution lasts at most five minutes."""
_STEP_TIMEOUTS = {"prepare": Duration.minutes(5), "rollback": Duration.minutes(5)}
_STEP_MEMORY = {"prepare": 2048}
"""Prepare runs a whole bundle's entries (thousands of resources) in memory."""
STAGING_RETENTION = Duration.days(2)
"""Prepared batches are deleted when their transaction ends; a crashed one's are expired by S3."""
ASYNC_RETENTION = Duration.days(7)
SWEEPER_INVOCATION = (
    "Invoked asynchronously by EventBridge Scheduler every minute, with no retries: a failed sweep leaves "
    "its transactions due, and the next run sweeps them, so a dead-letter queue would only collect "
    "duplicates of that work; failures raise the function's error alarm."
)


@dataclass(frozen=True, slots=True)
class StepPackage(ServicePackage):
    """A task step: the bundle service's package, with an entry point of its own."""

    entry: str = ""

    @property
    def handler(self) -> str:
        return self.entry

    @property
    def function_service(self) -> str:
        return f"{self.service}-{self.entry.rsplit('.', 1)[-1]}"


def step_handlers() -> dict[str, str]:
    """Task key (and ``sweep``) → Lambda handler."""
    return {name: f"{HANDLERS_MODULE}.{name}" for name in (*TASKS, "sweep")}


class Transactions(Construct):
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
        settings: Settings,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.functions: dict[str, FhirFunction] = {}
        for name, handler in step_handlers().items():
            function = FhirFunction(
                self,
                f"Step-{name}",
                package=StepPackage(package.service, package.package, entry=handler),
                code=code,
                layers=layers,
                environment=environment,
                key=key,
                description=f"fhirflow transaction {name}" + (" (sweeper)" if name == "sweep" else " step"),
                memory_size=_STEP_MEMORY.get(name, 1024),
                timeout=_STEP_TIMEOUTS.get(name, Duration.minutes(1 if name != "sweep" else 5)),
                reserved_concurrency=reserved_concurrency,
                invoked_by=SWEEPER_INVOCATION if name == "sweep" else INVOKED_BY_STEP_FUNCTIONS,
            )
            if name == "sweep":
                # EventBridge Scheduler invokes asynchronously: no Lambda retries of a sweep (the
                # next minute's run does the same work), and a stale event is dropped.
                function.function.configure_async_invoke(retry_attempts=0, max_event_age=SWEEP_INTERVAL)
            tables.grant_resources_read_write(function)
            buckets.grant_blobs_read_write(function)
            self.functions[name] = function
        # Their objects are scratch: once deleted or expired, no older version is worth keeping.
        for prefix, retention in (("transactions/", STAGING_RETENTION), ("async/", ASYNC_RETENTION)):
            buckets.blobs.add_lifecycle_rule(
                prefix=prefix, expiration=retention, noncurrent_version_expiration=Duration.days(1)
            )

        # An EventBridge Scheduler schedule: a missed run is harmless, the next one sweeps the same.
        self.sweep_role = iam.Role(
            self,
            "SweepScheduleRole",
            assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
            description="EventBridge Scheduler invoking the fhirflow transaction sweeper",
        )
        self.sweep_schedule = scheduler.Schedule(
            self,
            "SweepSchedule",
            description="fhirflow: finish or roll back multi-batch transactions left past due",
            schedule=scheduler.ScheduleExpression.rate(SWEEP_INTERVAL),
            target=scheduler_targets.LambdaInvoke(
                self.functions["sweep"].function, role=self.sweep_role, retry_attempts=0
            ),
        )
        acknowledge(
            self.sweep_role,
            "HIPAA.Security-IAMNoInlinePolicy",
            "CDK writes this role's one statement (lambda:InvokeFunction on the sweeper) from the schedule's target.",
        )
        acknowledge(
            self.sweep_role,
            f"AwsSolutions-IAM5[Resource::<{_logical_arn(self.functions['sweep'])}>:*]",
            "The schedule target's invoke grant covers the sweeper's versions and aliases (ARN:*), nothing else.",
        )

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=key,
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # The Express machine only runs synchronous transactions: it must end (TIMED_OUT at worst)
        # while the bundle Lambda that waits for it can still decide the outcome and answer.
        timeout = min(settings.transaction_timeout_seconds, SYNC_EXECUTION_SECONDS, EXPRESS_LIMIT_SECONDS)
        self.express = self._state_machine("Express", sfn.StateMachineType.EXPRESS, settings, timeout)
        self.standard = self._state_machine(
            "Standard", sfn.StateMachineType.STANDARD, settings, settings.transaction_timeout_seconds
        )

    def _state_machine(
        self, construct_id: str, kind: sfn.StateMachineType, settings: Settings, timeout_seconds: int
    ) -> sfn.StateMachine:
        # The timeout is the definition's own TimeoutSeconds: CDK cannot add one to a definition string.
        workflow = transaction_workflow(
            max_concurrency=settings.transaction_max_concurrency, timeout_seconds=timeout_seconds
        )
        asl = workflow.to_asl({task: "${" + _placeholder(task) + "}" for task in TASKS})
        machine = sfn.StateMachine(
            self,
            construct_id,
            comment=asl.get("Comment"),
            definition_body=sfn.DefinitionBody.from_string(json.dumps(asl, separators=(",", ":"))),
            definition_substitutions={_placeholder(task): self.functions[task].function.function_arn for task in TASKS},
            state_machine_type=kind,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        for task in TASKS:
            self.functions[task].function.grant_invoke(machine)
        acknowledge(
            machine.role,
            "HIPAA.Security-IAMNoInlinePolicy",
            "CDK writes the state machine role's policy from grant_invoke and the logging and tracing it needs, "
            "each statement scoped as narrowly as the service allows.",
        )
        acknowledge(
            machine.role,
            "AwsSolutions-IAM5[Resource::*]",
            "CloudWatch Logs delivery (logs:CreateLogDelivery and friends) and X-Ray (PutTraceSegments) have no "
            "resource-level permissions.",
        )
        for task in TASKS:
            acknowledge(
                machine.role,
                f"AwsSolutions-IAM5[Resource::<{_logical_arn(self.functions[task])}>:*]",
                "grant_invoke covers the task function's versions and aliases (ARN:*), nothing else.",
            )
        return machine

    def grant_run(self, function: FhirFunction) -> None:
        """Let the bundle service run transactions (sync and async) and read async executions."""
        self.express.grant_start_sync_execution(function.function)
        self.standard.grant_start_execution(function.function)
        self.standard.grant_read(function.function)
        function.function.add_environment(env_name("transaction_state_machine"), self.express.state_machine_arn)
        function.function.add_environment(env_name("transaction_async_state_machine"), self.standard.state_machine_arn)
        acknowledge(
            function.role,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
            f'{{"Fn::Select":[6,{{"Fn::Split":[":",{{"Ref":"{_logical_id(self.standard)}"}}]}}]}}:*]',
            "grant_read on the Standard state machine: DescribeExecution of its own executions (the async status).",
        )


def _placeholder(task: str) -> str:
    return f"{task.capitalize()}FunctionArn"


def _logical_id(construct: Construct) -> str:
    from aws_cdk import CfnElement, Stack

    cfn = construct.node.default_child
    assert isinstance(cfn, CfnElement)
    return Stack.of(construct).get_logical_id(cfn)


def _logical_arn(function: FhirFunction) -> str:
    return f"{_logical_id(function.function)}.Arn"
