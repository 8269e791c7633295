"""The subscriptions service on AWS: matcher, deliverer and ticker Lambda handlers (docs/subscriptions.md).

The same :class:`~fhirflow_subscriptions.service.SubscriptionService` and helper B's
:class:`~fhirflow_subscriptions.dispatch.Dispatcher` as the embedded mode, over other adapters:

- **matcher**: an SQS batch of EventBridge ``ResourceChanged`` envelopes → ``service.consume`` (one
  record at a time, so a failure is reported for that record only: partial batch response) →
  notifications as SQS FIFO messages, ``MessageGroupId = {tenant}/{subscription id}`` (order and
  isolation per subscription), ``MessageDeduplicationId`` = the notification id (``webhook-id``);
- **deliverer**: a FIFO batch → ``Dispatcher.handle`` per message → Standard Webhooks signed HTTP.
  A failed message and every later message of its group in the batch are reported as failures, so
  the group's order holds; other groups go on. The retry waits in the message's **visibility
  timeout** (ChangeMessageVisibility, up to 12 h, beyond SQS's 15-minute DelaySeconds): FIFO hands
  out nothing of a group while one of its messages is in flight, so the subscription waits and no
  other one does. Attempts come from ``ApproximateReceiveCount``, the horizon from the first send;
- **ticker** (EventBridge Scheduler, every minute): heartbeats and ``end``.

The in-memory subscription index of each Lambda instance is refreshed when the table's
``generation`` moved (bumped by the write hook before a client's Subscription write commits, and
whenever a batch changed a subscription) or a noted write is still pending: one GetItem per batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhirflow.adapters.aws import clients
from fhirflow.delivery_ports import Attempt, ClaimedJob, DeliveryJob
from fhirflow.observability import event_handler, service_logger

if TYPE_CHECKING:
    from fhirflow.adapters.aws.dynamodb_subscriptions import DynamoDbDeliveryLog, DynamoDbSubscriptionState
    from fhirflow.ports import BlobStore
    from fhirflow.settings import Settings
    from fhirflow_subscriptions.service import SubscriptionService

logger = logging.getLogger("fhirflow.subscriptions")
lambda_logger = service_logger("subscriptions")
"""The three functions' Powertools Logger (each is named by its POWERTOOLS_SERVICE_NAME)."""

MAX_VISIBILITY_SECONDS = 12 * 3600 - 60
"""SQS's visibility limit is 12 h from the receive; a longer backoff step retries a little early."""


def dynamodb_state(settings: Settings) -> DynamoDbSubscriptionState:
    from fhirflow.adapters.aws.dynamodb_subscriptions import DynamoDbSubscriptionState

    assert settings.subscriptions_table
    return DynamoDbSubscriptionState(
        settings.subscriptions_table,
        event_retention_seconds=settings.subscriptions_event_retention_seconds,
        endpoint_url=settings.dynamodb_endpoint,
        region=settings.aws_region,
    )


def delivery_log(settings: Settings) -> DynamoDbDeliveryLog:
    from fhirflow.adapters.aws.dynamodb_subscriptions import DynamoDbDeliveryLog

    assert settings.subscriptions_table
    return DynamoDbDeliveryLog(
        settings.subscriptions_table,
        retention_seconds=settings.subscriptions_delivery_log_retention_seconds,
        endpoint_url=settings.dynamodb_endpoint,
        region=settings.aws_region,
    )


def dedup_id(job_id: str) -> str:
    """SQS allows 128 characters of ASCII punctuation and alphanumerics; longer ids are hashed."""
    if len(job_id) <= 128 and job_id.isascii() and all(c.isalnum() or (33 <= ord(c) <= 126) for c in job_id):
        return job_id
    return hashlib.sha256(job_id.encode()).hexdigest()


OFFLOAD_BYTES = 200_000
"""A notification larger than this waits in the blobs bucket and its message carries the key: SQS
takes at most 256 KB per message, and per batch (a ``full-resource`` notification of a large resource)."""
BATCH_BYTES = 240_000
NOTIFICATIONS_PREFIX = "subscriptions/notifications/"


class SqsFifoQueue:
    """The producer side of the delivery queue on SQS FIFO (what the service's ``enqueue`` needs)."""

    def __init__(
        self, queue_url: str, *, client: Any = None, region: str | None = None, blobs: BlobStore | None = None
    ) -> None:
        self.queue_url = queue_url
        self.client = client or clients.lazy_client("sqs", region=region)
        self.blobs = blobs

    def _body(self, job: DeliveryJob, now_ms: int) -> str:
        if len(job.payload) > OFFLOAD_BYTES and self.blobs is not None:
            # Keyed by the job: a replayed change writes the same object again, and the message is the same.
            key = NOTIFICATIONS_PREFIX + hashlib.sha256(job.job_id.encode()).hexdigest()
            self.blobs.put(key, job.payload, content_type="application/json")
            return json.dumps({"job_id": job.job_id, "payload_ref": key, "created_ms": now_ms})
        return json.dumps({"job_id": job.job_id, "payload": job.payload.decode(), "created_ms": now_ms})

    def _batches(self, jobs: Sequence[DeliveryJob], now_ms: int) -> list[list[dict[str, Any]]]:
        """Entries in order, at most 10 and :data:`BATCH_BYTES` per SendMessageBatch."""
        out: list[list[dict[str, Any]]] = []
        size = 0
        for job in jobs:
            body = self._body(job, now_ms)
            if not out or len(out[-1]) == 10 or size + len(body) > BATCH_BYTES:
                out.append([])
                size = 0
            entry = {
                "Id": str(len(out[-1])),
                "MessageBody": body,
                "MessageGroupId": job.group,
                "MessageDeduplicationId": dedup_id(job.job_id),
            }
            out[-1].append(entry)
            size += len(body)
        return out

    def enqueue(self, jobs: Sequence[DeliveryJob]) -> None:
        now_ms = int(time.time() * 1000)
        for batch in self._batches(jobs, now_ms):
            entries = batch
            for attempt in range(5):
                with clients.translated("The notification queue"):
                    reply = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
                failed = {f["Id"] for f in reply.get("Failed", [])}
                if not failed:
                    break
                # In order: resend from the first refused entry (a group's later entries after it).
                first = min(int(i) for i in failed)
                entries = [e for e in entries if int(e["Id"]) >= first]
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise RuntimeError(f"SQS refused {len(entries)} notification(s)")

    def drop_group(self, group: str) -> int:
        """SQS cannot remove a group's messages; those of a subscription that is off are discarded
        by the deliverer (the service answers ``gone`` for them)."""
        return 0


PENDING_SECONDS = 120
"""A pending Subscription write not committed after this long never will be (the crud and bundle
functions time out well before): the matcher stops waiting for it."""


class _Generation:
    """Which version of the subscription list an instance has loaded."""

    def __init__(self, state: DynamoDbSubscriptionState) -> None:
        self.state = state
        self.loaded: int | None = None

    def current(self) -> tuple[int, list[tuple[str, str, int, int]]]:
        return self.state.generation()

    def bump(self) -> None:
        self.state.bump_generation()


@dataclass
class Runtime:
    service: SubscriptionService
    state: DynamoDbSubscriptionState
    log: DynamoDbDeliveryLog
    generation: _Generation

    def refresh(self) -> None:
        """Bring this instance's index up to the table (cold start, another instance changed a
        subscription, or a client's Subscription write is pending): load what is new or newer, drop
        what is gone or off. One strongly consistent GetItem when nothing changed."""
        from fhirflow_subscriptions.service import LIVE

        current, pending = self.generation.current()
        if current == self.generation.loaded and not pending:
            return
        service = self.service
        if current != self.generation.loaded:
            seen = set()
            for found in self.state.states():
                key = (found.tenant, found.id)
                seen.add(key)
                if found.status in LIVE:
                    known = service.specs.get(key)
                    if known is None or self._versions.get(key) != found.version:
                        service._load(found.tenant, found.id)
                        self._versions[key] = found.version
                elif key in service.specs:
                    service._drop(found.tenant, found.id)
            for key in list(service.specs):
                if key not in seen:
                    service._drop(*key)
        for tenant, id_, version, noted_ms in pending:
            self._load_pending(tenant, id_, version, noted_ms)
        self.generation.loaded = current

    def _load_pending(self, tenant: str, id_: str, version: int, noted_ms: int) -> None:
        """A client's Subscription write noted by the write hook before it committed. Once committed,
        it is loaded (and activated: the handshake goes first in its group) here, whether or not its
        own change event has reached any matcher yet; until then it stays pending, and every batch
        checks it again (a change committed after it cannot be matched before it is loaded)."""
        store = self.service.deps.store
        head = store.current(tenant, "Subscription", id_)
        if head is None or head.version < version:
            if self.service.deps.clock.now_ms() - noted_ms > PENDING_SECONDS * 1000:
                self.state.settle(tenant, id_, version, noted_ms)  # the write failed: it never commits
            return
        key = (tenant, id_)
        if self._versions.get(key) != head.version or key not in self.service.specs:
            committed = store.version(tenant, "Subscription", id_, version)
            # Its commit time, as its change event would carry it: earlier changes are not its events.
            seq = committed.last_updated if committed is not None else head.last_updated
            if self.service._load(tenant, id_, seq=seq):
                self.service._activate(tenant, id_)
            self._versions[key] = head.version
        self.state.settle(tenant, id_, version, noted_ms)

    def __post_init__(self) -> None:
        self._versions: dict[tuple[str, str], int] = {}


_runtime: Runtime | None = None


def build(settings: Settings | None = None) -> Runtime:
    from fhirflow.runtime import build_dependencies
    from fhirflow.settings import Settings
    from fhirflow_subscriptions.service import SubscriptionService

    settings = settings or Settings.from_env()
    if not settings.subscriptions_table or not settings.subscriptions_queue_url:
        raise RuntimeError("FHIRFLOW_SUBSCRIPTIONS_TABLE and FHIRFLOW_SUBSCRIPTIONS_QUEUE_URL must be set")
    state = dynamodb_state(settings)
    deps = build_dependencies(settings)
    queue = SqsFifoQueue(settings.subscriptions_queue_url, region=settings.aws_region, blobs=deps.blobs)
    service = SubscriptionService(deps, state, queue)  # type: ignore[arg-type]
    return Runtime(service, state, delivery_log(settings), _Generation(state))


def use(runtime: Runtime | None) -> None:
    """Replace the process's runtime (tests build one on their own settings)."""
    global _runtime
    _runtime = runtime


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = build()
    return _runtime


# -- the matcher ------------------------------------------------------------------------------


def _logged_event(envelope: dict[str, Any]) -> Any:
    from fhirflow.adapters.sqlite.events import LoggedEvent

    detail = envelope["detail"]
    # No log position in AWS: the change's commit time (ms) orders it against the commit of a
    # subscription (the service skips changes committed before the subscription was).
    return LoggedEvent(
        seq=_ms(str(detail["lastUpdated"])),
        event_id=str(detail["metadata"]["eventId"]),
        source=str(envelope.get("source", "fhirflow")),
        detail_type=str(envelope.get("detail-type", "ResourceChanged")),
        tenant=str(detail["tenant"]),
        detail=json.dumps(detail),
    )


def _ms(instant: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(instant).timestamp() * 1000)


@lambda_logger.inject_lambda_context(clear_state=True)
@event_handler
def match_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS (standard) batch of EventBridge envelopes → notifications on the FIFO queue."""
    rt = runtime()
    rt.refresh()
    failures = []
    changed_subscriptions = False
    for record in event.get("Records", []):
        try:
            envelope = json.loads(record["body"])
            if envelope.get("detail-type") != "ResourceChanged":
                continue
            logged = _logged_event(envelope)
            rt.service.consume([logged])
            if envelope["detail"].get("resourceType") == "Subscription":
                changed_subscriptions = True
        except Exception as exc:  # reported for this record only; SQS redelivers it
            logger.warning("subscription matching failed", extra={"error": type(exc).__name__})
            failures.append({"itemIdentifier": record["messageId"]})
    if changed_subscriptions:
        rt.generation.bump()
        rt.generation.loaded = None  # this instance reloads too (it may have missed other changes)
    return {"batchItemFailures": failures}


# -- the deliverer ----------------------------------------------------------------------------


class _Batch:
    """The delivery queue as the Dispatcher sees it, for the messages of one FIFO batch: settling a
    message decides whether it is reported (kept) or deleted, and how long it waits."""

    def __init__(self, sqs: Any, queue_url: str, log: DynamoDbDeliveryLog, *, per_subscription: bool = False) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.log = log
        self.per_subscription = per_subscription
        self.kinds: dict[str, str] = {}
        """job id → notification kind (event, handshake, heartbeat), for the metrics."""
        self.receipts: dict[str, str] = {}
        self.kept: set[str] = set()
        self.received_ms: dict[str, int] = {}

    def complete(self, job_id: str) -> None:
        self.kept.discard(job_id)

    def retry(self, job_id: str, *, not_before_ms: int, attempts: int, leased_until_ms: int | None = None) -> None:
        self.kept.add(job_id)
        wait = max(0, (not_before_ms - int(time.time() * 1000) + 999) // 1000)
        wait = min(wait, MAX_VISIBILITY_SECONDS)
        with clients.translated("The notification queue"):
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=self.receipts[job_id], VisibilityTimeout=int(wait)
            )

    def drop_group(self, group: str) -> int:
        return 0

    def log_attempt(self, group: str, job_id: str, attempt: Attempt, at_ms: int) -> None:
        from fhirflow_subscriptions.metrics import emf_record, emit

        self.log.log_attempt(group, job_id, attempt, at_ms)
        kind = self.kinds.get(job_id, "event")
        emit(
            emf_record(
                group=group,
                kind=kind,
                outcome=attempt.outcome,
                latency_ms=attempt.latency_ms,
                per_subscription=self.per_subscription,
                now_ms=at_ms,
            )
        )


@lambda_logger.inject_lambda_context(clear_state=True)
@event_handler
def deliver_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS FIFO batch of notifications → signed webhooks; partial batch response per group."""
    from fhirflow_subscriptions.backoff import next_delay
    from fhirflow_subscriptions.dispatch import Dispatcher

    rt = runtime()
    rt.refresh()
    settings = rt.service.deps.settings
    assert settings.subscriptions_queue_url
    batch = _Batch(
        _sqs(rt),
        settings.subscriptions_queue_url,
        rt.log,
        per_subscription=settings.subscriptions_metrics_per_subscription,
    )
    scale = settings.subscriptions_retry_scale
    dispatcher = Dispatcher(
        batch,  # type: ignore[arg-type]
        deliver=rt.service.deliver,
        on_result=rt.service.on_result,
        horizon_seconds=settings.subscriptions_retry_horizon_seconds,
        workers=1,
        backoff=lambda attempt: next_delay(attempt) * scale,
    )
    failures: list[dict[str, str]] = []
    blocked: set[str] = set()
    for record in event.get("Records", []):
        attributes = record.get("attributes", {})
        group = str(attributes.get("MessageGroupId", ""))
        if group in blocked:  # an earlier message of the group failed: keep the order
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        try:
            body = json.loads(record["body"])
            ref = body.get("payload_ref")  # a large notification waits in the blobs bucket
            job = ClaimedJob(
                group=group,
                job_id=str(body["job_id"]),
                payload=rt.service.deps.blobs.get(str(ref)) if ref else str(body["payload"]).encode(),
                attempts=max(int(attributes.get("ApproximateReceiveCount", "1")) - 1, 0),
                created_ms=int(body.get("created_ms") or attributes.get("SentTimestamp") or 0),
                leased_until_ms=0,
            )
            batch.receipts[job.job_id] = record["receiptHandle"]
            batch.kinds[job.job_id] = str(json.loads(job.payload).get("kind", "event"))
            dispatcher.handle(job)
            kept = job.job_id in batch.kept
        except Exception as exc:
            logger.warning("notification delivery failed", extra={"group": group, "error": type(exc).__name__})
            kept = True
        if kept:
            blocked.add(group)
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def _sqs(rt: Runtime) -> Any:
    queue = rt.service.queue
    return queue.client if isinstance(queue, SqsFifoQueue) else clients.client("sqs")


# -- the ticker -------------------------------------------------------------------------------


@lambda_logger.inject_lambda_context(clear_state=True)
@event_handler
def tick_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge Scheduler: heartbeats for idle topic-based subscriptions, ``off`` at ``end``."""
    rt = runtime()
    rt.refresh()
    rt.service.tick()
    return {"subscriptions": len(rt.service.specs)}
