"""The fhirflow stack: the capabilities of DESIGN.md §7 wired together.

Where later capabilities plug in (each is a construct of its own, like the ones here):

- **search index** (OpenSearch): the :class:`~fhirflow_infra.search.SearchDomain` construct, an
  IAM-only domain encrypted with the data key; the settings point every function at it
  (``search_index="opensearch"`` and its endpoint), and only index-sync (bulk writes) and the
  functions that search (search; crud and bundle for conditional interactions, conditional
  references and search entries; the export worker) are granted access to it.
- **export** (``services/export``) is the :class:`~fhirflow_infra.export.BulkExport` construct: the
  kick-off/status routes' function is in :data:`API_SERVICES`; the construct adds the SQS work queue
  with its dead-letter queue, the worker function, and the grants on job items, queue and export bucket.
- **reindex** (``$reindex``, ``services/search``) is the :class:`~fhirflow_infra.reindex.Reindexing`
  construct: an SQS queue of job chunks with its dead-letter queue and the worker that runs them.
- **subscriptions** (``services/subscriptions``) is the :class:`~fhirflow_infra.subscriptions.Subscriptions`
  construct: a rule on ``change_events.bus`` with ``change_events.pattern`` → SQS → matcher → SQS FIFO
  → rest-hook deliverer, each queue with a DLQ; a ticker on a schedule; a state table.

The bundle workflow (multi-batch transactions, ``Prefer: respond-async``) is the
:class:`~fhirflow_infra.transactions.Transactions` construct: Express and Standard state machines
generated from the workflow's Python definition, a function per task step, the sweeper's schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from fhirflow.routes import ROUTES
from fhirflow.settings import Settings
from fhirflow_infra.api import DEFAULT_THROTTLE, FhirApi, Throttle
from fhirflow_infra.audit import AUDIT_RETENTION_DAYS, AuditArchive
from fhirflow_infra.cognito import CognitoUsers
from fhirflow_infra.compliance import acknowledge
from fhirflow_infra.dashboard import Dashboard
from fhirflow_infra.encryption import DataKey
from fhirflow_infra.environment import LAMBDA_DATA_DIR, check_deployable, lambda_environment
from fhirflow_infra.events import ChangeEvents
from fhirflow_infra.export import BulkExport
from fhirflow_infra.function import (
    API_TIMEOUT,
    ARCHITECTURE,
    LAMBDA_PAYLOAD_BYTES,
    MAX_REQUEST_BODY_BYTES,
    METRICS_NAMESPACE,
    RUNTIME,
    FhirFunction,
)
from fhirflow_infra.index_provision import SearchIndexProvisioning
from fhirflow_infra.index_sync import IndexSync
from fhirflow_infra.monitoring import Alarms
from fhirflow_infra.packaging import ServicePackage, require_layer, service_packages
from fhirflow_infra.reindex import Reindexing
from fhirflow_infra.search import SearchDomain
from fhirflow_infra.storage import ObjectBuckets, ResourceTables
from fhirflow_infra.subscriptions import Subscriptions
from fhirflow_infra.transactions import Transactions


@dataclass(frozen=True, slots=True)
class ApiService:
    description: str
    writes_resources: bool
    """Creates resource versions; the others only read (and write AuditEvents when ``audit="auditevent"``)."""
    memory_size: int = 1024
    timeout: Duration = API_TIMEOUT


API_SERVICES: dict[str, ApiService] = {
    "crud": ApiService("fhirflow crud: the RESTful interactions, history, Binary, metadata", writes_resources=True),
    "bundle": ApiService("fhirflow bundle: batch and transaction", writes_resources=True),
    "search": ApiService("fhirflow search: type, system and compartment search", writes_resources=False),
    # Writes export jobs, never resources: BulkExport grants the job items alone (fhirflow_infra.export).
    "export": ApiService("fhirflow export: bulk data kick-off, status, cancel and files", writes_resources=False),
    # $status and $events; the matcher, deliverer and ticker are the Subscriptions construct's.
    "subscriptions": ApiService("fhirflow subscriptions: $status and $events", writes_resources=False),
}
"""The services behind the API; every service the route table names must be here."""

SEARCHING_SERVICES = ("crud", "bundle", "search", "subscriptions")
"""API services that run searches on the index (conditional interactions and references too;
subscriptions: the type-level $status lists what the caller may read by search)."""
STREAM_CONCURRENCY = 10
"""index-sync's reserved concurrency by default (context ``fhirflow:streamConcurrency``; 0: none)."""
AUDIT_RETENTION = Duration.days(AUDIT_RETENTION_DAYS)
"""The audit archive's retention by default (context ``fhirflow:auditRetentionDays``; ``0``: no archive)."""
SEARCHING_STEPS = ("prepare",)
"""Transaction workflow steps that run a bundle's entries, and so its searches."""


class FhirflowStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        code_dir: Path,
        layer_dir: Path,
        alarm_email: str | None = None,
        reserved_concurrency: int | None = None,
        stream_concurrency: int | None = STREAM_CONCURRENCY,
        throttle: Throttle = DEFAULT_THROTTLE,
        api_keys: bool = False,
        cognito: bool = False,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        metrics_namespace: str = METRICS_NAMESPACE,
        tracing: bool = True,
        audit_retention: Duration | None = AUDIT_RETENTION,
        **stack_props: Any,
    ) -> None:
        super().__init__(scope, construct_id, **stack_props)
        # fhirflow:cognito: the stack's own user pool is the issuer, its groups the authorization (RBAC).
        self.cognito = CognitoUsers(self, "Cognito", removal_policy=removal_policy) if cognito else None
        if self.cognito is not None:
            settings = replace(
                settings,
                auth="rbac",
                auth_issuer=self.cognito.issuer,
                auth_jwks_uri=self.cognito.jwks_uri,
                auth_audience=None,
                auth_introspection_url=None,
            )
        check_deployable(settings)
        packages = service_packages()

        self.data_key = DataKey(self, "DataKey", removal_policy=removal_policy).key
        self.tables = ResourceTables(self, "Tables", key=self.data_key, removal_policy=removal_policy)
        self.buckets = ObjectBuckets(self, "Buckets", key=self.data_key, removal_policy=removal_policy)
        self.change_events = ChangeEvents(self, "ChangeEvents", key=self.data_key)
        self.search = SearchDomain(
            self, "Search", key=self.data_key, index=settings.opensearch_index, removal_policy=removal_policy
        )
        self.cursor_key = self._cursor_key()
        self.subscriptions = Subscriptions(
            self,
            "Subscriptions",
            key=self.data_key,
            bus=self.change_events.bus,
            pattern=self.change_events.pattern,
            tables=self.tables,
            removal_policy=removal_policy,
        )

        self.settings = replace(
            settings,
            store="dynamodb",
            data_dir=LAMBDA_DATA_DIR,
            dynamodb_table=self.tables.table.table_name,
            dynamodb_ledger_table=self.tables.ledger.table_name,
            blob_bucket=self.buckets.blobs.bucket_name,
            export_bucket=self.buckets.exports.bucket_name,
            events="eventbridge",
            event_bus=self.change_events.bus.event_bus_name,
            index_on_write=False,
            search_index="opensearch",
            opensearch_url=self.search.endpoint_url,
            # Lambda's payload limits, not the embedded defaults: a 413 OperationOutcome from the
            # service instead of API Gateway's 502 (fhirflow_infra.function).
            max_body_bytes=min(settings.max_body_bytes, MAX_REQUEST_BODY_BYTES),
            max_response_bytes=LAMBDA_PAYLOAD_BYTES,
            # The secret's ARN only: each function reads the key itself, once per container.
            cursor_secret_arn=self.cursor_key.secret_arn,
            subscriptions_table=self.subscriptions.table.table_name,
            subscriptions_queue_url=self.subscriptions.notifications.queue_url,
        )
        self.metrics_namespace = metrics_namespace
        # Powertools Metrics' namespace (fhirflow.observability): the dashboard reads the same one.
        environment = {**lambda_environment(self.settings), "POWERTOOLS_METRICS_NAMESPACE": metrics_namespace}
        if not tracing:
            # The X-Ray SDK stays unloaded (fhirflow.tracing); Lambda's active tracing still
            # records each invocation's segment.
            environment["POWERTOOLS_TRACE_DISABLED"] = "true"
        self.code = lambda_.Code.from_asset(str(code_dir))
        self.layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=lambda_.Code.from_asset(str(require_layer(layer_dir))),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="fhirflow's third-party dependencies (infra/build_layer.py)",
        )

        self.api_functions: dict[str, FhirFunction] = {}
        for service in sorted({route.service for route in ROUTES}):
            if service not in API_SERVICES or service not in packages:
                raise ValueError(
                    f"the route table routes to '{service}', which has no API_SERVICES entry or services/ package"
                )
            self.api_functions[service] = self._api_function(
                packages[service], API_SERVICES[service], environment, reserved_concurrency
            )
        self.transactions = Transactions(
            self,
            "Transactions",
            package=packages["bundle"],
            code=self.code,
            layers=[self.layer],
            environment=environment,
            key=self.data_key,
            tables=self.tables,
            buckets=self.buckets,
            settings=self.settings,
            reserved_concurrency=reserved_concurrency,
        )
        self.transactions.grant_run(self.api_functions["bundle"])
        self.export = BulkExport(
            self,
            "Export",
            package=packages["export"],
            api_function=self.api_functions["export"],
            code=self.code,
            layers=[self.layer],
            environment=environment,
            key=self.data_key,
            tables=self.tables,
            buckets=self.buckets,
            reserved_concurrency=reserved_concurrency,
        )
        self.index_sync = IndexSync(
            self,
            "IndexSync",
            package=packages["index-sync"],
            code=self.code,
            layers=[self.layer],
            environment=environment,
            key=self.data_key,
            tables=self.tables,
            buckets=self.buckets,
            bus=self.change_events.bus,
            # Reserved even when the others are not: API bursts cannot starve indexing (search lag),
            # and a stream backlog cannot take the API's concurrency.
            reserved_concurrency=reserved_concurrency or stream_concurrency or None,
        )
        self.search.grant_index_write(self.index_sync.handler)
        self.index_provisioning = SearchIndexProvisioning(
            self,
            "IndexProvisioning",
            package=packages["index-sync"],
            search=self.search,
            code=self.code,
            layers=[self.layer],
            environment=environment,
            key=self.data_key,
        )
        self.subscriptions.add_functions(
            package=packages["subscriptions"],
            code=self.code,
            layers=[self.layer],
            environment=environment,
            tables=self.tables,
            buckets=self.buckets,
            reserved_concurrency=reserved_concurrency,
        )
        # The Subscription write hook keeps secrets in the state table (crud, bundle); $status and
        # $events read it; runtime SearchParameters compile into criteria.
        for writer in ("crud", "bundle"):
            self.subscriptions.grant_state(self.api_functions[writer], write=True)
        self.subscriptions.grant_state(self.api_functions["subscriptions"], write=False)
        # Runtime SearchParameters (docs/dynamodb.md, "Search parameters"): index-sync records them;
        # the search service reads them and starts $reindex jobs, which a queue's worker runs
        # (jobs, marks, bulk rewrites: the Reindexing construct).
        self.tables.grant_search_params(self.index_sync.handler)
        self.reindexing = Reindexing(
            self,
            "Reindex",
            package=packages["search"],
            api_function=self.api_functions["search"],
            code=self.code,
            layers=[self.layer],
            environment=environment,
            key=self.data_key,
            tables=self.tables,
            search=self.search,
            reserved_concurrency=reserved_concurrency,
        )
        # Everything that runs searches: search; crud and bundle (conditional interactions and
        # references resolve by search; bundles run search entries); the transaction workflow's
        # Prepare step (it runs a ``Prefer: respond-async`` bundle, searches included); the export
        # worker (it pages through each type by search).
        searchers = (
            *(self.api_functions[s] for s in SEARCHING_SERVICES),
            *(self.transactions.functions[s] for s in SEARCHING_STEPS),
            self.export.worker,
        )
        for searcher in searchers:
            self.search.grant_search(searcher)
        self.api = FhirApi(
            self,
            "Api",
            functions={name: f.function for name, f in self.api_functions.items()},
            key=self.data_key,
            cors_origins=settings.cors_origins,
            throttle=throttle,
            api_keys=api_keys,
        )
        functions = {
            **{name: f.function for name, f in self.api_functions.items()},
            "index-sync": self.index_sync.function,
            "index-provision": self.index_provisioning.handler.function,
            "export-worker": self.export.worker.function,
            "reindex-worker": self.reindexing.worker.function,
            **{f"transaction-{name}": f.function for name, f in self.transactions.functions.items()},
            **self.subscriptions.functions,
        }
        dead_letter_queues = {
            "index-sync": self.index_sync.dead_letter_queue,
            "export": self.export.dead_letter_queue,
            "reindex": self.reindexing.dead_letter_queue,
            "integration": self.change_events.integration_dlq,
            **self.subscriptions.dead_letter_queues,
        }
        stream_consumers = {"index-sync": self.index_sync.function}
        self.alarms = Alarms(
            self,
            "Alarms",
            key=self.data_key,
            functions=functions,
            stream_consumers=stream_consumers,
            dead_letter_queues=dead_letter_queues,
            api=self.api.rest_api,
            email=alarm_email,
        )
        # The API functions' audit lines (fhirflow.authz.audit), when they write any; None: no archive.
        self.audit_archive = None
        if audit_retention is not None and self.settings.audit in ("log", "auditevent"):
            self.audit_archive = AuditArchive(
                self,
                "AuditArchive",
                key=self.data_key,
                log_groups={name: f.log_group for name, f in self.api_functions.items()},
                access_logs=self.buckets.access_logs,
                retention=audit_retention,
                removal_policy=removal_policy,
            )
        self.dashboard = Dashboard(
            self,
            "Dashboard",
            api=self.api.rest_api,
            functions=functions,
            stream_consumers=stream_consumers,
            dead_letter_queues=dead_letter_queues,
            domain=self.search.domain,
            namespace=metrics_namespace,
        )
        for function in self.functions():
            self.cursor_key.grant_read(function.role)
        self._outputs()

    def functions(self) -> list[FhirFunction]:
        """Every Lambda of the stack (each reads the settings, the cursor key among them)."""
        return [
            *self.api_functions.values(),
            *self.transactions.functions.values(),
            self.export.worker,
            self.reindexing.worker,
            self.index_sync.handler,
            self.subscriptions.matcher,
            self.subscriptions.deliverer,
            self.subscriptions.ticker,
        ]

    def _api_function(
        self, package: ServicePackage, service: ApiService, environment: dict[str, str], reserved: int | None
    ) -> FhirFunction:
        function = FhirFunction(
            self,
            f"Service-{package.service}",
            package=package,
            code=self.code,
            layers=[self.layer],
            environment=environment,
            key=self.data_key,
            description=service.description,
            memory_size=service.memory_size,
            timeout=service.timeout,
            reserved_concurrency=reserved,
        )
        if service.writes_resources or self.settings.audit == "auditevent":
            self.tables.grant_resources_read_write(function)
            self.buckets.grant_blobs_read_write(function)
        else:
            self.tables.grant_resources_read(function)
            self.buckets.grant_blobs_read(function)
        return function

    def _cursor_key(self) -> secretsmanager.Secret:
        secret = secretsmanager.Secret(
            self,
            "CursorKey",
            description="HMAC key that signs fhirflow paging cursors (FHIRFLOW_CURSOR_SECRET)",
            encryption_key=self.data_key,
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=64, exclude_punctuation=True),
        )
        reason = (
            "The paging-cursor HMAC key signs only paging cursors, which live minutes; each function reads it "
            "once per container. Rotating it would only invalidate open paging cursors; no rotation Lambda."
        )
        acknowledge(secret, "HIPAA.Security-SecretsManagerRotationEnabled", reason)
        acknowledge(secret, "AwsSolutions-SMG4", reason)
        return secret

    def _outputs(self) -> None:
        outputs = {
            "ApiUrl": self.api.url,
            "ResourceTable": self.tables.table.table_name,
            "LedgerTable": self.tables.ledger.table_name,
            "BlobBucket": self.buckets.blobs.bucket_name,
            "ExportBucket": self.buckets.exports.bucket_name,
            "EventBus": self.change_events.bus.event_bus_name,
            "SearchEndpoint": self.search.endpoint_url,
            "TransactionStateMachine": self.transactions.express.state_machine_arn,
            "IntegrationQueueUrl": self.change_events.integration_queue.queue_url,
            "ExportQueueUrl": self.export.queue.queue_url,
            "AlarmTopic": self.alarms.topic.topic_arn,
            "DashboardName": self.dashboard.dashboard.dashboard_name,
        }
        if self.api.api_key is not None:
            outputs["ApiKeyId"] = self.api.api_key.key_id
        if self.audit_archive is not None:
            outputs["AuditBucket"] = self.audit_archive.bucket.bucket_name
            outputs["AuditTable"] = f"{self.audit_archive.database_name}.{self.audit_archive.table_name}"
        if self.cognito is not None:
            outputs["UserPoolId"] = self.cognito.user_pool.user_pool_id
            outputs["UserPoolClientId"] = self.cognito.client.user_pool_client_id
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
