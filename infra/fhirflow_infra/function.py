"""``FhirFunction``: every fhirflow Lambda, built the same way.

arm64, Python 3.12, the shared code asset and dependencies layer, X-Ray active tracing, JSON logs
into a KMS-encrypted log group, the environment from :mod:`fhirflow_infra.environment` (encrypted
with the data key), and a role of its own that starts with nothing but writing its log group and
traces: everything else comes from ``grant_*`` calls by the capability that owns the resource.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from fhirflow_infra.compliance import acknowledge
from fhirflow_infra.packaging import ServicePackage

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64
METRICS_NAMESPACE = "fhirflow"
"""The CloudWatch namespace of the functions' EMF metrics unless ``fhirflow:metricsNamespace`` says otherwise."""
API_TIMEOUT = Duration.seconds(28)
"""Inside API Gateway's 29 s integration limit."""
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024
"""A synchronous invocation's request and response payloads (the event, the proxy result)."""
EVENT_OVERHEAD_BYTES = 256 * 1024
"""What an API Gateway proxy event carries besides the body (headers twice, context): generous."""
MAX_REQUEST_BODY_BYTES = (LAMBDA_PAYLOAD_BYTES - EVENT_OVERHEAD_BYTES) * 3 // 4
"""The largest body that reaches a Lambda: every body arrives base64-encoded (binary media types
``*/*``), a third larger. About 4.3 MiB, well below API Gateway's 10 MB."""
INVOKED_BY_API = (
    "Invoked synchronously by API Gateway's Lambda proxy integration: a failure is the caller's response "
    "(a 5xx), there is no event to keep."
)
INVOKED_BY_STEP_FUNCTIONS = (
    "Invoked synchronously by the transaction state machines' tasks: a failure is the task's error, "
    "which the workflow retries or catches and rolls back; there is no event to keep."
)
INVOKED_BY_STREAM = (
    "Invoked by a DynamoDB stream event source mapping, which retries and then sends the failed batch's "
    "description to its on-failure destination (a KMS-encrypted SQS queue); a function DLQ never applies."
)
INVOKED_BY_QUEUE = (
    "Invoked by an SQS event source mapping: failed messages return to the queue and, after its last "
    "delivery, to the queue's redrive dead-letter queue; a function DLQ never applies."
)
"""Why each kind of fhirflow Lambda needs no dead-letter queue of its own (HIPAA.Security-LambdaDLQ)."""


class FhirFunction(Construct):
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
        description: str,
        memory_size: int = 1024,
        timeout: Duration = API_TIMEOUT,
        reserved_concurrency: int | None = None,
        invoked_by: str = INVOKED_BY_API,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR,
    ) -> None:
        super().__init__(scope, construct_id)
        self.service = package.service
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=key,
            retention=log_retention,
            removal_policy=RemovalPolicy.RETAIN,  # the audit records are in here
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"fhirflow {package.service} Lambda",
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=code,
            handler=package.handler,
            layers=list(layers),
            role=self.role,
            memory_size=memory_size,
            timeout=timeout,
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=self.log_group,
            environment={
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,  # the stack's fhirflow:metricsNamespace overrides it
                **environment,
                # One name per function in its log lines, metrics and traces (fhirflow.observability).
                "POWERTOOLS_SERVICE_NAME": package.function_service,
                # Responses carry resources (PHI): never copy them into traces.
                "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
            },
            environment_encryption=key,
        )
        acknowledge(
            self.role,
            "HIPAA.Security-IAMNoInlinePolicy",
            "CDK's grant_* calls write this role's own policy, each statement scoped to the resources it names; "
            "the rule guards against hand-written policies a managed policy would make reviewable and shared.",
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "Resource '*' only for actions that have no resource-level permissions: X-Ray's PutTraceSegments and "
            "PutTelemetryRecords (active tracing) and, for stream consumers, dynamodb:ListStreams.",
        )
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "Python 3.12 is the runtime fhirflow targets (DESIGN.md §7) and builds its dependencies layer for; "
            "moving to a newer runtime is a deliberate change of both.",
        )
        acknowledge(self.function, "HIPAA.Security-LambdaDLQ", invoked_by)
        acknowledge(
            self.function,
            "HIPAA.Security-LambdaInsideVPC",
            "The functions reach only AWS APIs (IAM-authorized, TLS), the IAM-only OpenSearch domain (SigV4, TLS) "
            "and the identity provider's JWKS on the internet; there is no private resource to reach.",
        )
        if reserved_concurrency is None:
            acknowledge(
                self.function,
                "HIPAA.Security-LambdaConcurrency",
                "Reserved concurrency is a deployment choice (fhirflow context reservedConcurrency): reserving "
                "by default fails to deploy in accounts with the initial concurrency quota.",
            )
