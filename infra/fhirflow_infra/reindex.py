"""``$reindex`` (``services/search``): the chunk queue, its dead-letter queue, the worker, and grants.

The kick-off and status routes are the search API function's (the stack builds it like every API
service); this construct gives it what a kick-off needs on top of searching: the reindex job items
(``rj#…``: create and read) and the queue to send the job's first chunk to. The worker is an
SQS-triggered function of the search package (``fhirflow_search.reindex_handler``): one message
at a time (a chunk runs up to ``WORKER_TIMEOUT_SECONDS``), partial-failure reporting, and after
``MAX_RECEIVES`` deliveries the message goes to the dead-letter queue, which an alarm watches.
It reads and updates job items (never creates them), marks search parameters searchable
(``sp#…``), walks the index (``POST /<index>/_search``), rewrites documents in bulk
(``POST /<index>/_bulk``) and queues each next chunk. Neither function may write a resource.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from fhirflow_infra.function import FhirFunction
from fhirflow_infra.packaging import ServicePackage
from fhirflow_infra.search import SearchDomain
from fhirflow_infra.storage import ResourceTables
from fhirflow_infra.workers import QueueLimits, queue_worker
from fhirflow_search import reindex_queue as limits

QUEUE_URL_VARIABLE = "FHIRFLOW_REINDEX_QUEUE_URL"
KICK_OFF_JOB_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem")
"""The search API: create a job, read its status."""
WORKER_JOB_ACTIONS = ("dynamodb:GetItem", "dynamodb:UpdateItem")
"""The worker: read a job, lease it and save it by revision (conditional updates)."""


@dataclass(frozen=True, slots=True)
class WorkerPackage(ServicePackage):
    """The search service's package, with the reindex worker's entry point."""

    @property
    def handler(self) -> str:
        return f"{self.package}.reindex_handler.lambda_handler"

    @property
    def function_service(self) -> str:
        return "reindex-worker"


class Reindexing(Construct):
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
        search: SearchDomain,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        drained = queue_worker(
            self,
            queue_id="Chunks",
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
            description="fhirflow reindex worker: AdvanceReindex (SQS) → one chunk of a $reindex job",
            memory_size=1024,
            reserved_concurrency=reserved_concurrency,
        )
        self.dead_letter_queue, self.queue, self.worker = drained.dead_letter_queue, drained.queue, drained.worker
        # The API side: jobs (create, status) and the first chunk's message.
        api_function.function.add_environment(QUEUE_URL_VARIABLE, self.queue.queue_url)
        tables.grant_search_params(api_function, job_actions=KICK_OFF_JOB_ACTIONS)
        self.queue.grant_send_messages(api_function.function)
        # The worker: jobs, the catalog's marks, the index (walk and bulk rewrite), its continuations.
        tables.grant_search_params(self.worker, job_actions=WORKER_JOB_ACTIONS)
        search.grant_search(self.worker)
        search.grant_reindex(self.worker)
        self.queue.grant_send_messages(self.worker.function)
