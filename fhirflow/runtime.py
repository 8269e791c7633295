"""The dependencies a use case receives, built from settings by each service's composition root.

Adapters are built lazily and only once per process; importing this module does no I/O and
imports no AWS SDK (the DynamoDB adapter imports boto3 when it is first built).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fhirflow.ports import (
    AccessPolicy,
    AllowAll,
    Authenticator,
    BlobStore,
    Change,
    Clock,
    EventLedger,
    EventPublisher,
    ResourceStore,
    SearchIndex,
    SystemClock,
)
from fhirflow.settings import Settings

if TYPE_CHECKING:
    from fhirflow.adapters.aws.dynamodb_searchparams import DynamoDbSearchParamCatalog
    from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
    from fhirflow.adapters.sqlite.database import SqliteDatabase
    from fhirflow.authz.audit import AuditSink
    from fhirflow.cursor import CursorSigner
    from fhirflow.reindex_ports import SearchParamCatalog
    from fhirflow.search_ports import ResourceMatcher, SearchEngine


@dataclass
class Dependencies:
    settings: Settings
    store: ResourceStore
    cursors: CursorSigner
    clock: Clock = field(default_factory=SystemClock)
    policy: AccessPolicy = field(default_factory=AllowAll)
    authenticator: Authenticator | None = None
    """None: authorization is off (embedded mode on loopback only)."""
    audit: AuditSink | None = None
    """Where each request's audit record goes (fhirflow.authz.audit); None: nowhere."""
    _blobs: BlobStore | None = field(default=None, repr=False)
    _index: SearchIndex | None = field(default=None, repr=False)
    _events: EventPublisher | None = field(default=None, repr=False)

    # Built on first use: most use cases need none of these, and each may open a client.
    @property
    def blobs(self) -> BlobStore:
        if self._blobs is None:
            self._blobs = build_blobs(self.settings)
        return self._blobs

    @property
    def index(self) -> SearchIndex:
        if self._index is None:
            self._index = build_index(self.settings)
        return self._index

    @property
    def events(self) -> EventPublisher:
        if self._events is None:
            self._events = build_events(self.settings)
        return self._events


class WriteHooks(Protocol):
    """What runs around each commit of the embedded store: the embedded runner's outbox drainer
    (:class:`fhirflow.local.worker.OutboxDrainer`), which indexes and announces the changes."""

    def prepare(self, changes: Sequence[Change]) -> None: ...

    def drain_joined(self, changes: Sequence[Change] = ()) -> None: ...

    def after_commit(self) -> None: ...


_write_hooks: Callable[[Settings], WriteHooks] | None = None


def register_write_hooks(factory: Callable[[Settings], WriteHooks] | None) -> None:
    """The embedded runner registers its read-your-writes hooks here
    (:func:`fhirflow.local.worker.install_read_your_writes`): the kernel never imports the embedded
    runner (docs/architecture.md, Layers). Without them an embedded store's changes wait in the
    outbox for the worker loop; stores built before the registration keep what they had."""
    global _write_hooks
    _write_hooks = factory


_databases: dict[str, SqliteDatabase] = {}
_blob_stores: dict[str, BlobStore] = {}
_lock = threading.Lock()


def sqlite_database(settings: Settings) -> SqliteDatabase:
    """One SqliteDatabase per file per process, shared by every embedded adapter."""
    from fhirflow.adapters.sqlite.database import SqliteDatabase

    key = str(settings.sqlite_path.resolve())
    with _lock:
        if key not in _databases:
            _databases[key] = SqliteDatabase(settings.sqlite_path)
        return _databases[key]


def build_store(settings: Settings) -> ResourceStore:
    if settings.store == "sqlite":
        from fhirflow.adapters.sqlite.store import SqliteResourceStore

        store = SqliteResourceStore(
            sqlite_database(settings), blobs=build_blobs(settings), blob_threshold=settings.blob_threshold_bytes
        )
        if settings.index_on_write and _write_hooks is not None:
            # Read-your-writes in the embedded mode: each commit is indexed and announced before
            # the write returns. The use cases know nothing of it (DESIGN.md §6).
            drainer = _write_hooks(settings)
            store.before_transaction = drainer.prepare
            store.in_transaction = drainer.drain_joined
            store.after_commit = drainer.after_commit
        return store
    if settings.store == "dynamodb":
        from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore

        return DynamoDbResourceStore(
            settings.dynamodb_table,
            blobs=build_blobs(settings),
            blob_threshold=settings.blob_threshold_bytes,
            history_shards=settings.dynamodb_history_shards,
            endpoint_url=settings.dynamodb_endpoint,
            region=settings.aws_region,
        )
    raise ValueError(f"Unknown store '{settings.store}' (FHIRFLOW_STORE); expected 'sqlite' or 'dynamodb'")


def build_engine(settings: Settings) -> SearchEngine:
    """The search engine over the settings' index (a new one; :func:`search_engine` shares one)."""
    if settings.search_index == "sqlite":
        from fhirflow.adapters.sqlite.search.engine import SqliteSearchEngine

        return SqliteSearchEngine(sqlite_database(settings))
    if settings.search_index == "opensearch":
        from fhirflow.adapters.opensearch.engine import OpenSearchSearchEngine

        return OpenSearchSearchEngine(opensearch_index(settings))
    raise ValueError(
        f"Unknown search index '{settings.search_index}' (FHIRFLOW_SEARCH_INDEX); expected 'sqlite' or 'opensearch'"
    )


_engines: dict[str, SearchEngine] = {}
_engines_lock = threading.Lock()


def search_engine(settings: Settings) -> SearchEngine:
    """One search engine per index per process: the search service's, and the one conditional
    interactions, export and the subscriptions listing query (services never import each other:
    docs/architecture.md, Layers)."""
    if settings.search_index == "opensearch":
        key = f"opensearch:{settings.opensearch_url}/{settings.opensearch_index}"
    else:
        key = f"{settings.search_index}:{settings.sqlite_path.resolve()}"
    with _engines_lock:
        if key not in _engines:
            _engines[key] = build_engine(settings)
        return _engines[key]


def build_matcher(settings: Settings) -> ResourceMatcher:
    """Whether one resource matches a query, whatever the index: the embedded engine on a scratch
    in-memory database (conditional creates check a uniqueness key's owner with it)."""
    from fhirflow.adapters.sqlite.search.matcher import SqliteResourceMatcher

    return SqliteResourceMatcher()


def build_blobs(settings: Settings) -> BlobStore:
    """S3 when a bucket is configured, else files in the data directory (one per process)."""
    key = f"s3:{settings.blob_bucket}" if settings.blob_bucket else f"files:{settings.blob_dir.resolve()}"
    with _lock:
        if key not in _blob_stores:
            if settings.blob_bucket:
                from fhirflow.adapters.aws.s3_blobs import S3BlobStore

                _blob_stores[key] = S3BlobStore(settings.blob_bucket, region=settings.aws_region)
            else:
                from fhirflow.adapters.filesystem import FileBlobStore

                _blob_stores[key] = FileBlobStore(settings.blob_dir)
        return _blob_stores[key]


def build_index(settings: Settings, *, client: Any | None = None) -> SearchIndex:
    """The index index-sync writes. ``client`` replaces the OpenSearch client built from the
    settings (tests); the OpenSearch index creates itself with its mapping on the first write."""
    if settings.search_index == "sqlite":
        from fhirflow.adapters.sqlite.index import SqliteSearchIndex

        return SqliteSearchIndex(sqlite_database(settings), bodies_from_store=settings.store == "sqlite")
    if settings.search_index == "opensearch":
        return opensearch_index(settings, client=client, create_missing=True)
    raise ValueError(
        f"Unknown search index '{settings.search_index}' (FHIRFLOW_SEARCH_INDEX); expected 'sqlite' or 'opensearch'"
    )


def opensearch_index(
    settings: Settings, *, client: Any | None = None, create_missing: bool = False
) -> OpenSearchSearchIndex:
    """An ``OpenSearchSearchIndex`` for the settings' endpoint and index; its client (opensearch-py,
    SigV4-signed by default) is built on first use unless ``client`` is given."""
    from fhirflow.adapters.opensearch.client import client_factory
    from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex

    factory = None if client is not None else client_factory(settings)
    return OpenSearchSearchIndex(
        client=client,
        client_factory=factory,
        index=settings.opensearch_index,
        base_url=settings.base_url,
        create_missing=create_missing,
        catalog=dynamodb_search_param_catalog(settings) if settings.store == "dynamodb" else None,
    )


_dynamodb_catalogs: dict[str, DynamoDbSearchParamCatalog] = {}


def dynamodb_search_param_catalog(settings: Settings) -> DynamoDbSearchParamCatalog:
    """The AWS catalog of runtime search parameters (items of the resource table), one per table
    per process: index-sync records SearchParameters in it, the search service reads it."""
    from fhirflow.adapters.aws.dynamodb_searchparams import DynamoDbSearchParamCatalog

    key = f"{settings.dynamodb_endpoint or ''}/{settings.dynamodb_table}"
    with _lock:
        if key not in _dynamodb_catalogs:
            _dynamodb_catalogs[key] = DynamoDbSearchParamCatalog(
                settings.dynamodb_table, endpoint_url=settings.dynamodb_endpoint, region=settings.aws_region
            )
        return _dynamodb_catalogs[key]


def search_param_catalog(settings: Settings) -> SearchParamCatalog | None:
    """The tenants' runtime search parameters (SearchParameter resources), kept next to the index
    (SQLite) or in the resource table (OpenSearch with DynamoDB); None where there is no catalog
    (OpenSearch fed by another store: the official parameters only)."""
    if settings.search_index == "opensearch" and settings.store == "dynamodb":
        return dynamodb_search_param_catalog(settings)
    if settings.search_index != "sqlite":
        return None
    from fhirflow.adapters.sqlite.searchparams import catalog_for

    return catalog_for(sqlite_database(settings))


def build_events(settings: Settings) -> EventPublisher:
    if settings.events == "local":
        from fhirflow.adapters.sqlite.events import SqliteEventLog

        return SqliteEventLog(sqlite_database(settings))
    if settings.events == "eventbridge":
        from fhirflow.adapters.aws.eventbridge import EventBridgeEventPublisher

        return EventBridgeEventPublisher(settings.event_bus, region=settings.aws_region)
    raise ValueError(
        f"Unknown event publisher '{settings.events}' (FHIRFLOW_EVENTS); expected 'local' or 'eventbridge'"
    )


def build_ledger(settings: Settings) -> EventLedger:
    """Next to the store: the DynamoDB ledger table with DynamoDB; with SQLite, none of its own when
    the events are SQLite's too (they commit with the outbox), the SQLite database otherwise."""
    if settings.store == "dynamodb":
        from fhirflow.adapters.aws.dynamodb_ledger import DynamoDbEventLedger

        return DynamoDbEventLedger(
            settings.dynamodb_ledger_table, endpoint_url=settings.dynamodb_endpoint, region=settings.aws_region
        )
    if settings.events == "local":  # SqliteEventLog in the outbox's database: one transaction
        from fhirflow.adapters.sqlite.events import SharedTransactionLedger

        return SharedTransactionLedger()
    from fhirflow.adapters.sqlite.events import SqliteEventLedger

    return SqliteEventLedger(sqlite_database(settings))


def build_cursors(settings: Settings) -> CursorSigner:
    """The paging-cursor signer: its key from Secrets Manager in AWS (fetched on first use, once
    per process), else the setting, else a key file in the data directory."""
    from fhirflow.cursor import CursorSigner

    if settings.cursor_secret_arn and not settings.cursor_secret:
        from fhirflow.adapters.aws.secrets import SecretsManagerSecret

        return CursorSigner(SecretsManagerSecret(settings.cursor_secret_arn, region=settings.aws_region).read)
    return CursorSigner.from_secret_or_file(settings.cursor_secret, settings.data_dir / "cursor.key")


def build_dependencies(settings: Settings | None = None) -> Dependencies:
    settings = settings or Settings.from_env()
    cursors = build_cursors(settings)
    deps = Dependencies(settings=settings, store=build_store(settings), cursors=cursors)
    from fhirflow.authz.build import build_audit, build_auth

    if settings.auth != "off":
        deps.authenticator, deps.policy = build_auth(settings, deps.store)
    deps.audit = build_audit(settings, deps.store, deps.clock)
    return deps
