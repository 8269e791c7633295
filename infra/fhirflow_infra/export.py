"""Bulk export (``services/export``): the work queue, its dead-letter queue, the worker, and grants.

The API function of the route table's ``export`` routes (kick-off, status, cancel, files) is built
by the stack like every API service; this construct gives it what exporting needs on top of
reading resources: the export job items of the resource table (and nothing else of it for writing),
the work queue to send to, and the export bucket to read (presigned URLs are signed with its role)
and delete from (cancel). The worker is an SQS-triggered function: one message at a time
(``batch_size=1``, a step runs up to ``WORKER_TIMEOUT_SECONDS``), partial-failure reporting, and
after ``MAX_RECEIVES`` deliveries the message goes to the dead-letter queue (the last delivery marks
the job failed first).

Job items live in the resource table (docs/dynamodb.md, "Export jobs"): the functions may put and
get only items whose partition key starts with ``xj#`` (IAM's ``dynamodb:LeadingKeys``), so the
export functions can record jobs but never write a resource.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from fhirflow.adapters.aws.dynamodb_export_jobs import JOB_PREFIX
from fhirflow_export import limits
from fhirflow_infra.compliance import acknowledge_grant_wildcards, arn_reference
from fhirflow_infra.function import FhirFunction
from fhirflow_infra.packaging import ServicePackage
from fhirflow_infra.storage import KMS_GRANT_ACTIONS, S3_READ_ACTIONS, S3_WRITE_ACTIONS, ObjectBuckets, ResourceTables
from fhirflow_infra.workers import QueueLimits, queue_worker

QUEUE_URL_VARIABLE = "FHIRFLOW_EXPORT_QUEUE_URL"
JOB_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem")


@dataclass(frozen=True, slots=True)
class WorkerPackage(ServicePackage):
    """The export service's package, with the SQS worker's entry point."""

    @property
    def handler(self) -> str:
        return f"{self.package}.handler.worker_handler"

    @property
    def function_service(self) -> str:
        return f"{self.service}-worker"


class BulkExport(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        package: ServicePackage,
        api_function: FhirFunction,
        code: lambda_.Code,
        layers: Sequence[lambda_.ILayerVersion],
        environment: Mapping[str, str],
        key: kms.IKey,
        tables: ResourceTables,
        buckets: ObjectBuckets,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.tables = tables
        self.buckets = buckets
        drained = queue_worker(
            self,
            queue_id="Work",
            package=WorkerPackage(service=package.service, package=package.package),
            code=code,
            layers=layers,
            environment=environment,
            queue_url_variable=QUEUE_URL_VARIABLE,
            key=key,
            limits=QueueLimits(
                worker_timeout_seconds=limits.WORKER_TIMEOUT_SECONDS,
                visibility_timeout_seconds=limits.VISIBILITY_TIMEOUT_SECONDS,
                max_receives=limits.MAX_RECEIVES,
            ),
            description="fhirflow export worker: StartExport (SQS) → NDJSON files in the export bucket",
            memory_size=2048,
            reserved_concurrency=reserved_concurrency,
        )
        self.dead_letter_queue, self.queue, self.worker = drained.dead_letter_queue, drained.queue, drained.worker
        self.api_function = api_function
        api_function.function.add_environment(QUEUE_URL_VARIABLE, self.queue.queue_url)

        # The API side: jobs, the queue, and the files it hands out (read, presign) or deletes (cancel).
        self._grant_jobs(api_function, key)
        self.queue.grant_send_messages(api_function.function)
        buckets.exports.grant_read(api_function.function)
        buckets.exports.grant_delete(api_function.function)
        self._acknowledge_exports(api_function, (*S3_READ_ACTIONS, "s3:DeleteObject*"))
        # The worker: reads resources (a Group's members; bodies offloaded to the blob bucket), writes
        # files and jobs, and queues its own continuation.
        tables.grant_resources_read(self.worker)
        buckets.grant_blobs_read(self.worker)
        self._grant_jobs(self.worker, key)
        self.queue.grant_send_messages(self.worker.function)
        buckets.exports.grant_put(self.worker.function)
        buckets.exports.grant_delete(self.worker.function)
        self._acknowledge_exports(self.worker, (*S3_WRITE_ACTIONS, *KMS_GRANT_ACTIONS))

    def _grant_jobs(self, function: FhirFunction, key: kms.IKey) -> None:
        function.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=list(JOB_ACTIONS),
                resources=[self.tables.table.table_arn],
                conditions={"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{JOB_PREFIX}*"]}},
            )
        )
        key.grant_encrypt_decrypt(function.function)
        acknowledge_grant_wildcards(
            function.role,
            actions=KMS_GRANT_ACTIONS,
            reason="The export job items are encrypted with the data key: the KMS actions that encrypt and "
            "decrypt them, on that key only.",
        )

    def _acknowledge_exports(self, function: FhirFunction, actions: tuple[str, ...]) -> None:
        acknowledge_grant_wildcards(
            function.role,
            actions=actions,
            resources=[f"{arn_reference(self.buckets.exports)}/*"],
            reason="CDK's grants on the export bucket: the action families they grant, on that bucket's objects only.",
        )
