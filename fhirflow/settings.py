"""Settings from the environment, the same way in Lambda and in the embedded mode.

A plain dataclass rather than pydantic-settings: it is read on every cold start, and
importing pydantic would add tens of milliseconds to each handler's import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fhirflow.cors import parse_origins


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True, slots=True)
class Settings:
    store: str = "sqlite"
    """``sqlite`` (embedded) or ``dynamodb``."""
    data_dir: Path = field(default_factory=lambda: Path(".fhirflow"))
    base_url: str | None = None
    """The public FHIR base URL; derived from the request's Host header when unset."""
    max_body_bytes: int = 16 * 1024 * 1024
    request_timeout_seconds: float = 10.0
    """The time budget of one read (GET, ``_search``): past it the request answers 503 ``too-costly``
    instead of holding its worker (fhirflow.budget); 0 turns it off. In Lambda the function's
    remaining time caps it."""
    max_response_bytes: int = 0
    """The most a service's answer may weigh as its Lambda returns it (the JSON of the proxy result;
    the CDK stack sets Lambda's 6 MB); a larger one is a 413 OperationOutcome instead of API
    Gateway's 502. 0: no limit (the embedded mode streams any size)."""
    update_create: bool = True
    """Allow PUT to create a resource with a client-chosen id (http.html#upsert)."""
    update_create_limited: bool = False
    """Open update-as-create also to tokens confined to part of a type (patient/user compartments,
    granular scopes, relationships). Off: such a token's PUT to an id it cannot see answers 405
    whether the id is unused or held by a resource hidden from it, so a PUT cannot probe which ids
    exist; on: an unused id is created (201) and a hidden one answers 404, which tells them apart."""
    skip_unchanged_updates: bool = True
    """An update or patch whose result equals the current version (``meta.versionId`` and
    ``lastUpdated`` aside) writes no new version and answers the current one, as HAPI does."""
    conditional_delete_max: int = 1
    """How many resources one conditional delete (``DELETE [type]?criteria``) may remove: 1 is
    ``conditionalDelete: single``; more is ``multiple``, and more matches than this are a 412."""
    history_default_count: int = 50
    history_max_count: int = 1000
    max_bundle_entries: int = 10_000
    """Entries per batch/transaction; the default loads every Synthea patient as one transaction."""
    transaction_batch_items: int = 25
    """DynamoDB: versions per TransactWriteItems batch of a multi-batch transaction (3 to 100)."""
    transaction_direct_max_items: int = 100
    """DynamoDB: a transaction whose changes fit this many TransactWriteItems items (a head per
    resource, a version per change; at most 100) commits in one call, without the workflow."""
    transaction_sync_max_items: int = 2000
    """AWS: the most TransactWriteItems items (about two per entry) a synchronous multi-batch
    transaction may need; larger ones are refused with 413 before anything is written and must be
    sent with ``Prefer: respond-async``, as they would not finish within API Gateway's 29 s."""
    transaction_max_concurrency: int = 10
    """DynamoDB: batches a multi-batch transaction writes at once (the workflow's Map concurrency)."""
    transaction_timeout_seconds: int = 300
    """DynamoDB: a multi-batch transaction not committed by then is rolled back by the sweeper."""
    transaction_apply_grace_seconds: int = 30
    """DynamoDB: a committed transaction not applied by then is finished by the sweeper."""
    transaction_state_machine: str | None = None
    """The Express state machine that runs multi-batch transactions (set by the CDK stack); unset:
    the workflow runs in-process (the embedded mode's LocalRunner)."""
    transaction_async_state_machine: str | None = None
    """The Standard state machine behind ``Prefer: respond-async`` (set by the CDK stack)."""
    cursor_secret: str | None = None
    """HMAC key for paging cursors; the embedded mode keeps a generated one in the data dir."""
    cursor_secret_arn: str | None = None
    """AWS: the Secrets Manager secret holding the cursor key (set by the CDK stack), read once per
    Lambda container and kept in memory; never put the key itself in the environment."""
    dynamodb_table: str = "fhirflow"
    """Heads and versions (docs/dynamodb.md)."""
    dynamodb_ledger_table: str = "fhirflow-ledger"
    """index-sync's record of published change events."""
    dynamodb_endpoint: str | None = None
    """DynamoDB Local or another stand-in; unset in AWS."""
    dynamodb_history_shards: int = 4
    """Partitions per tenant (and type) of the history GSIs; fixed for a table's lifetime."""
    aws_region: str | None = None
    blob_threshold_bytes: int = 64 * 1024
    """Resource bodies larger than this live in the blob store, not in the database's records."""
    blob_bucket: str | None = None
    """S3 bucket for blobs; unset: files under ``data_dir/blobs``."""
    binary_direct: bool = False
    """Binary content moved by presigned URLs, not through the API (fhirflow.binarycontent)."""
    binary_direct_bytes: int = 5 * 1024 * 1024
    """With ``binary_direct``: Binary content larger than this sent through the API is a 413 that
    points at the presigned upload."""
    binary_url_seconds: int = 300
    """How long a Binary's presigned URLs stay valid."""
    cors_origins: tuple[str, ...] = ()
    """Origins whose browser apps may call the API (``*`` for any); empty: no CORS (fhirflow.cors)."""
    search_index: str = "sqlite"
    """Where index-sync writes and the search service reads: ``sqlite`` (embedded) or ``opensearch``."""
    opensearch_url: str | None = None
    """The OpenSearch endpoint (``https://search-….es.amazonaws.com``) when ``search_index`` is ``opensearch``."""
    opensearch_index: str = "fhirflow-resources"
    """The index (or alias) every tenant's documents share (fhirflow.adapters.opensearch.mappings)."""
    opensearch_auth: str = "sigv4"
    """``sigv4`` (requests signed with the AWS credentials) or ``none`` (a development cluster)."""
    opensearch_service: str = "es"
    """The SigV4 service name: ``es`` (a managed domain) or ``aoss`` (a serverless collection)."""
    events: str = "local"
    """``local`` (an event log in the SQLite database) or ``eventbridge``."""
    event_bus: str = "default"
    """The EventBridge bus that receives ResourceChanged events."""
    index_on_write: bool = True
    """Embedded mode: index each write before answering it (read-your-writes)."""
    auth: str = "off"
    """``off`` (embedded mode on loopback only), ``smart`` (SMART scopes) or ``rbac`` (token groups)."""
    auth_issuer: str | None = None
    """The token issuer (``iss``) for the single-issuer case; more in ``auth_config``."""
    auth_audience: str | None = None
    """Accepted ``aud`` values (space- or comma-separated); unset: ``aud`` is not checked."""
    auth_jwks_uri: str | None = None
    auth_introspection_url: str | None = None
    """RFC 7662 endpoint for opaque tokens of ``auth_issuer``."""
    auth_token_url: str | None = None
    """The IdP's token endpoint, published in the SMART discovery document (README: SMART discovery)."""
    auth_authorize_url: str | None = None
    """The IdP's authorization endpoint (the SMART launch flows), published likewise."""
    auth_config: str | None = None
    """JSON (inline or a file path): issuers per tenant, claim names, RBAC rules, SMART endpoints."""
    auth_dev_issuer: bool = False
    """Trust the embedded mode's development issuer (a key pair in the data dir); refused in AWS."""
    audit: str = "log"
    """``off``, ``log`` (fhirflow.audit logger), ``file`` (data_dir/audit.jsonl) or ``auditevent``."""
    export_queue_url: str | None = None
    """The SQS queue that carries bulk export work to the export workers; unset: a queue table in the
    embedded database, drained by the local worker loop."""
    reindex_queue_url: str | None = None
    """The SQS queue that carries ``$reindex`` chunks to the reindex worker; unset: a queue table in
    the embedded database, drained by the local worker loop."""
    export_bucket: str | None = None
    """S3 bucket for bulk export files; unset: the blob store (files under ``data_dir/blobs``)."""
    export_file_resources: int = 10_000
    """Resources per bulk export NDJSON file (a type with more gets several files)."""
    export_url_seconds: int = 3600
    """How long the presigned S3 URLs of an export manifest stay valid (AWS)."""
    subscriptions_allow_private: bool = False
    """Subscription endpoints may be loopback/private/link-local addresses (development, tests)."""
    subscriptions_allow_http: bool = False
    """Plain ``http`` endpoints are allowed, and then only to loopback hosts (development, tests)."""
    subscriptions_allow_list: str | None = None
    """Endpoint patterns (fnmatch on the URL) per tenant, JSON ``{"tenant": ["https://x/*"], "*": [...]}``;
    unset: any endpoint that passes the address checks."""
    subscriptions_retry_horizon_seconds: int = 3 * 24 * 3600
    """How long a notification is retried before the subscription is turned ``off``."""
    subscriptions_request_timeout_seconds: float = 10.0
    """Per-request timeout of a notification (a topic subscription's ``backport-timeout`` overrides it)."""
    subscriptions_event_retention_seconds: int = 7 * 24 * 3600
    """How long the per-subscription event log (``$events``) is kept."""
    subscriptions_delivery_log_retention_seconds: int = 7 * 24 * 3600
    """How long delivery attempts (shown by ``$status``) are kept."""
    subscriptions_heartbeat_tick_seconds: float = 1.0
    """How often heartbeats and ``end`` are checked."""
    subscriptions_secret_overlap_seconds: int = 24 * 3600
    """After a signing secret is replaced, the old one keeps signing alongside for this long (rotation)."""
    subscriptions_retry_scale: float = 1.0
    """Multiplies every retry delay of the backoff schedule (tests shorten it; leave 1 in production)."""
    subscriptions_delivery_workers: int = 8
    """Delivery threads of the embedded dispatcher (a slow endpoint holds at most one)."""
    subscriptions_metrics_per_subscription: bool = False
    """AWS: the deliverer's CloudWatch (EMF) metrics get the subscription as a dimension (one metric
    series per subscription: costs grow with their number)."""
    subscriptions_table: str | None = None
    """AWS: the DynamoDB table of subscription state, secrets, event and delivery logs; unset with the
    DynamoDB store: subscriptions are refused (501)."""
    subscriptions_queue_url: str | None = None
    """AWS: the SQS FIFO queue of notifications (message group = subscription), read by the deliverer."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            store=os.environ.get("FHIRFLOW_STORE", "sqlite"),
            data_dir=Path(os.environ.get("FHIRFLOW_DATA_DIR", ".fhirflow")),
            base_url=os.environ.get("FHIRFLOW_BASE_URL") or None,
            cors_origins=parse_origins(os.environ.get("FHIRFLOW_CORS_ORIGINS", "")),
            max_body_bytes=_int("FHIRFLOW_MAX_BODY_BYTES", 16 * 1024 * 1024),
            request_timeout_seconds=float(os.environ.get("FHIRFLOW_REQUEST_TIMEOUT_SECONDS") or 10.0),
            max_response_bytes=_int("FHIRFLOW_MAX_RESPONSE_BYTES", 0),
            update_create=_flag("FHIRFLOW_UPDATE_CREATE", True),
            update_create_limited=_flag("FHIRFLOW_UPDATE_CREATE_LIMITED", False),
            skip_unchanged_updates=_flag("FHIRFLOW_SKIP_UNCHANGED_UPDATES", True),
            conditional_delete_max=max(1, _int("FHIRFLOW_CONDITIONAL_DELETE_MAX", 1)),
            history_default_count=_int("FHIRFLOW_HISTORY_DEFAULT_COUNT", 50),
            history_max_count=_int("FHIRFLOW_HISTORY_MAX_COUNT", 1000),
            max_bundle_entries=_int("FHIRFLOW_MAX_BUNDLE_ENTRIES", 10_000),
            transaction_batch_items=_int("FHIRFLOW_TRANSACTION_BATCH_ITEMS", 25),
            transaction_direct_max_items=_int("FHIRFLOW_TRANSACTION_DIRECT_MAX_ITEMS", 100),
            transaction_sync_max_items=_int("FHIRFLOW_TRANSACTION_SYNC_MAX_ITEMS", 2000),
            transaction_max_concurrency=_int("FHIRFLOW_TRANSACTION_MAX_CONCURRENCY", 10),
            transaction_timeout_seconds=_int("FHIRFLOW_TRANSACTION_TIMEOUT_SECONDS", 300),
            transaction_apply_grace_seconds=_int("FHIRFLOW_TRANSACTION_APPLY_GRACE_SECONDS", 30),
            transaction_state_machine=os.environ.get("FHIRFLOW_TRANSACTION_STATE_MACHINE") or None,
            transaction_async_state_machine=os.environ.get("FHIRFLOW_TRANSACTION_ASYNC_STATE_MACHINE") or None,
            cursor_secret=os.environ.get("FHIRFLOW_CURSOR_SECRET") or None,
            cursor_secret_arn=os.environ.get("FHIRFLOW_CURSOR_SECRET_ARN") or None,
            dynamodb_table=os.environ.get("FHIRFLOW_DYNAMODB_TABLE", "fhirflow"),
            dynamodb_ledger_table=os.environ.get("FHIRFLOW_DYNAMODB_LEDGER_TABLE", "fhirflow-ledger"),
            dynamodb_endpoint=os.environ.get("FHIRFLOW_DYNAMODB_ENDPOINT") or None,
            dynamodb_history_shards=_int("FHIRFLOW_DYNAMODB_HISTORY_SHARDS", 4),
            aws_region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
            blob_threshold_bytes=_int("FHIRFLOW_BLOB_THRESHOLD_BYTES", 64 * 1024),
            blob_bucket=os.environ.get("FHIRFLOW_BLOB_BUCKET") or None,
            binary_direct=_flag("FHIRFLOW_BINARY_DIRECT", False),
            binary_direct_bytes=_int("FHIRFLOW_BINARY_DIRECT_BYTES", 5 * 1024 * 1024),
            binary_url_seconds=_int("FHIRFLOW_BINARY_URL_SECONDS", 300),
            search_index=os.environ.get("FHIRFLOW_SEARCH_INDEX", "sqlite"),
            opensearch_url=os.environ.get("FHIRFLOW_OPENSEARCH_URL") or None,
            opensearch_index=os.environ.get("FHIRFLOW_OPENSEARCH_INDEX", "fhirflow-resources"),
            opensearch_auth=os.environ.get("FHIRFLOW_OPENSEARCH_AUTH", "sigv4"),
            opensearch_service=os.environ.get("FHIRFLOW_OPENSEARCH_SERVICE", "es"),
            events=os.environ.get("FHIRFLOW_EVENTS", "local"),
            event_bus=os.environ.get("FHIRFLOW_EVENT_BUS", "default"),
            index_on_write=_flag("FHIRFLOW_INDEX_ON_WRITE", True),
            auth=os.environ.get("FHIRFLOW_AUTH", "off"),
            auth_issuer=os.environ.get("FHIRFLOW_AUTH_ISSUER") or None,
            auth_audience=os.environ.get("FHIRFLOW_AUTH_AUDIENCE") or None,
            auth_jwks_uri=os.environ.get("FHIRFLOW_AUTH_JWKS_URI") or None,
            auth_introspection_url=os.environ.get("FHIRFLOW_AUTH_INTROSPECTION_URL") or None,
            auth_token_url=os.environ.get("FHIRFLOW_AUTH_TOKEN_URL") or None,
            auth_authorize_url=os.environ.get("FHIRFLOW_AUTH_AUTHORIZE_URL") or None,
            auth_config=os.environ.get("FHIRFLOW_AUTH_CONFIG") or None,
            auth_dev_issuer=_flag("FHIRFLOW_AUTH_DEV_ISSUER", False),
            audit=os.environ.get("FHIRFLOW_AUDIT", "log"),
            export_queue_url=os.environ.get("FHIRFLOW_EXPORT_QUEUE_URL") or None,
            reindex_queue_url=os.environ.get("FHIRFLOW_REINDEX_QUEUE_URL") or None,
            export_bucket=os.environ.get("FHIRFLOW_EXPORT_BUCKET") or None,
            export_file_resources=_int("FHIRFLOW_EXPORT_FILE_RESOURCES", 10_000),
            export_url_seconds=_int("FHIRFLOW_EXPORT_URL_SECONDS", 3600),
            subscriptions_allow_private=_flag("FHIRFLOW_SUBSCRIPTIONS_ALLOW_PRIVATE", False),
            subscriptions_allow_http=_flag("FHIRFLOW_SUBSCRIPTIONS_ALLOW_HTTP", False),
            subscriptions_allow_list=os.environ.get("FHIRFLOW_SUBSCRIPTIONS_ALLOW_LIST") or None,
            subscriptions_retry_horizon_seconds=_int("FHIRFLOW_SUBSCRIPTIONS_RETRY_HORIZON_SECONDS", 3 * 24 * 3600),
            subscriptions_request_timeout_seconds=float(
                os.environ.get("FHIRFLOW_SUBSCRIPTIONS_REQUEST_TIMEOUT_SECONDS") or 10.0
            ),
            subscriptions_event_retention_seconds=_int("FHIRFLOW_SUBSCRIPTIONS_EVENT_RETENTION_SECONDS", 7 * 24 * 3600),
            subscriptions_delivery_log_retention_seconds=_int(
                "FHIRFLOW_SUBSCRIPTIONS_DELIVERY_LOG_RETENTION_SECONDS", 7 * 24 * 3600
            ),
            subscriptions_heartbeat_tick_seconds=float(
                os.environ.get("FHIRFLOW_SUBSCRIPTIONS_HEARTBEAT_TICK_SECONDS") or 1.0
            ),
            subscriptions_secret_overlap_seconds=_int("FHIRFLOW_SUBSCRIPTIONS_SECRET_OVERLAP_SECONDS", 24 * 3600),
            subscriptions_retry_scale=float(os.environ.get("FHIRFLOW_SUBSCRIPTIONS_RETRY_SCALE") or 1.0),
            subscriptions_delivery_workers=max(1, _int("FHIRFLOW_SUBSCRIPTIONS_DELIVERY_WORKERS", 8)),
            subscriptions_metrics_per_subscription=_flag("FHIRFLOW_SUBSCRIPTIONS_METRICS_PER_SUBSCRIPTION", False),
            subscriptions_table=os.environ.get("FHIRFLOW_SUBSCRIPTIONS_TABLE") or None,
            subscriptions_queue_url=os.environ.get("FHIRFLOW_SUBSCRIPTIONS_QUEUE_URL") or None,
        )

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "fhirflow.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"
