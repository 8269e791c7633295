"""The subscriptions service: change events in, queued notifications out, status kept.

:class:`SubscriptionService` is transport-neutral. The embedded wiring (:mod:`fhirflow_subscriptions.local`)
feeds it the SQLite ``events`` table from a durable cursor and runs helper B's
:class:`~fhirflow_subscriptions.dispatch.Dispatcher` with :meth:`deliver` and :meth:`on_result`.

- A change of a **Subscription** (the same events stream) (re)loads it: compiled criteria go into
  the :class:`~fhirflow_subscriptions.index.SubscriptionIndex`; a client's ``requested`` becomes
  ``active`` (R4) or queues a ``handshake`` (topic-based) whose 2xx makes it ``active``; ``off`` or
  a deletion takes it out and drops its queue.
- Any other change is matched; each matching subscription whose owner may read the resource gets
  the next event number (atomic, keyed by the change's event id: a replay keeps its number) and a
  job in its queue group ``{tenant}/{id}`` (FIFO per subscription, isolated from the others). The
  numbers, the jobs and the consumer's cursor commit in one SQLite transaction.
- Delivery results move the status: a failure → ``error`` (the reason in ``Subscription.error``),
  the next success → ``active``, the retry horizon or ``410`` → ``off`` (and the queue is dropped).
  Status changes are system writes of a new version of the resource, so reads and history show them.
- A timer sends heartbeats to idle topic-based subscriptions and turns them ``off`` at ``end``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from fhirflow import jsonio, versioning
from fhirflow.errors import FhirError
from fhirflow.ports import Change, ResourceVersion, VersionConflict
from fhirflow_subscriptions.hook import endpoint_policy, spec_of
from fhirflow_subscriptions.notifications import (
    NotificationEvent,
    notification_bundle,
    r4_request,
    status_parameters,
)
from fhirflow_subscriptions.owner import owner_may_read
from fhirflow_subscriptions.spec import SubscriptionSpec

if TYPE_CHECKING:
    from fhirflow.adapters.sqlite.deliveries import SqliteDeliveryQueue
    from fhirflow.adapters.sqlite.events import LoggedEvent
    from fhirflow.delivery_ports import Attempt, DeliveryJob
    from fhirflow.runtime import Dependencies
    from fhirflow.subscription_ports import SubscriptionStateStore
    from fhirflow_subscriptions.index import SubscriptionIndex

logger = logging.getLogger("fhirflow.subscriptions")

CURSOR = "subscriptions"
LIVE = frozenset({"requested", "active", "error"})
SYSTEM_REQUEST_ID = "fhirflow-subscriptions"


def group_of(tenant: str, id_: str) -> str:
    return f"{tenant}/{id_}"


@dataclass(frozen=True, slots=True)
class _Match:
    tenant: str
    id: str
    focus: tuple[str, str, int]
    operation: str
    at_ms: int
    source: str
    resource: dict[str, Any] | None


class SubscriptionService:
    def __init__(
        self,
        deps: Dependencies,
        state: SubscriptionStateStore,
        queue: SqliteDeliveryQueue,
        index: SubscriptionIndex | None = None,
    ) -> None:
        from fhirflow_subscriptions.index import SubscriptionIndex

        self.deps = deps
        self.state = state
        self.queue = queue
        self.index = index or SubscriptionIndex()
        self.specs: dict[tuple[str, str], SubscriptionSpec] = {}
        self._status_lock = threading.Lock()
        self.filtered = 0
        self.skipped = 0
        self.since: dict[tuple[str, str], int] = {}
        """Per subscription: the change event that created it; earlier changes are not its events."""
        """Change events that could not be handled (logged; a metric)."""
        self.on_enqueued: Callable[[], None] = lambda: None
        """Called after jobs were queued (the embedded dispatcher's ``wake``: no polling delay)."""
        """Matches not notified because the owner may not read the resource (a metric)."""

    # -- start-up -----------------------------------------------------------------------------

    def load(self) -> None:
        """Rebuild the in-memory index from the state store (after a restart)."""
        for state in self.state.states():
            if state.status in LIVE and self._load(state.tenant, state.id, restarting=True):
                self._activate(state.tenant, state.id)  # a crash came between the write and its activation

    # -- consuming change events --------------------------------------------------------------

    def consume(self, events: Sequence[LoggedEvent]) -> int:
        """Handle a batch of change events (in commit order); returns how many were handled. The
        cursor moves past them in the transaction that records their notifications."""
        if not events:
            return 0
        matches: list[_Match] = []
        activations: list[tuple[str, str]] = []
        for event in events:
            try:
                detail = json.loads(event.detail)
                rtype, id_ = detail.get("resourceType"), detail.get("id")
                if rtype == "Subscription":
                    if self._load(event.tenant, id_, seq=event.seq):
                        activations.append((event.tenant, id_))
                    continue
                matches.extend(self._matches(event, detail))
            except (FhirError, ValueError, KeyError, TypeError) as error:
                # A change that can never be handled must not stop every later one (a poison
                # message); storage errors (sqlite3.Error) propagate and the batch is retried. The
                # log names the event and the error's type, never its text (criteria may hold PHI).
                self.skipped += 1
                logger.warning(
                    "change event skipped by the subscriptions matcher",
                    extra={"seq": event.seq, "error": type(error).__name__},
                )
        # One transaction (the state store and the queue share the SQLite database and join it):
        # the numbers, the jobs and the cursor commit together. Were they apart, a crash between
        # them would still replay into the same numbers and job ids (both are keyed by the change).
        jobs = []
        with self.state_db_write():
            for match in matches:
                job = self._record(match)
                if job is not None:
                    jobs.append(job)
            if jobs:
                self.queue.enqueue(jobs)
            self.state.advance(CURSOR, events[-1].seq)
        if jobs:
            self.on_enqueued()
        for tenant, id_ in activations:
            self._activate(tenant, id_)
        return len(events)

    def _matches(self, event: LoggedEvent, detail: dict[str, Any]) -> list[_Match]:
        rtype, id_ = str(detail["resourceType"]), str(detail["id"])
        version, operation = int(detail["versionId"]), str(detail["operation"])
        if not self.index.covers(event.tenant, rtype):
            return []  # no subscription is about this type: no body to read
        store = self.deps.store
        current = store.version(event.tenant, rtype, id_, version)
        resource = _parsed(current)
        if operation == "delete":  # match (and re-check) on the last content the resource had
            previous = store.version(event.tenant, rtype, id_, version - 1) if version > 1 else None
            resource = _parsed(previous)
        keys: list[Hashable] = self.index.match(
            tenant=event.tenant, resource_type=rtype, operation=operation, resource=resource
        )
        at_ms = current.last_updated if current is not None else 0
        out: list[_Match] = []
        for key in keys:
            tenant, sub_id = cast("tuple[str, str]", key)
            if event.seq <= self.since.get((tenant, sub_id), 0):
                continue
            secrets = self.state.secrets(tenant, sub_id)
            owner = secrets.owner if secrets is not None else {}
            if not owner_may_read(self.deps.policy, owner, resource):
                self.filtered += 1
                continue
            out.append(
                _Match(
                    tenant,
                    sub_id,
                    (rtype, id_, version),
                    operation,
                    at_ms,
                    event.event_id,
                    resource if operation != "delete" else None,
                )
            )
        return out

    def state_db_write(self) -> Any:
        """One transaction of the state store (its SQLite database), or none for other stores."""
        db = getattr(self.state, "db", None)
        return db.write() if db is not None else contextlib.nullcontext()

    def _record(self, match: _Match) -> DeliveryJob | None:
        from fhirflow.delivery_ports import DeliveryJob

        spec = self.specs.get((match.tenant, match.id))
        if spec is None:
            return None
        number, _new = self.state.record_event(
            match.tenant,
            match.id,
            source=match.source,
            at_ms=match.at_ms,
            focus=match.focus,
            operation=match.operation,
        )
        if _new:  # a replayed change keeps its number and was counted the first time
            self.state.count(match.tenant, match.id, matched=1)
        event = NotificationEvent(number, match.at_ms, *match.focus, match.operation, match.resource)
        payload = self._event_payload(match.tenant, match.id, spec, event)
        group = group_of(match.tenant, match.id)
        self.state.mark_sent(match.tenant, match.id, self.deps.clock.now_ms())
        return DeliveryJob(group=group, job_id=f"{group}/event/{number}", payload=payload, not_before_ms=0)

    def _event_payload(self, tenant: str, id_: str, spec: SubscriptionSpec, event: NotificationEvent) -> bytes:
        if spec.kind == "r4":
            method, url, body = r4_request(spec.endpoint, spec.payload, event.resource)
            return _job(
                "event", tenant, id_, method=method, url=url, body=body, content_type=spec.payload if body else None
            )
        base = self._base_url(tenant, id_)
        state = self.state.state(tenant, id_)
        status = status_parameters(
            base_url=base,
            subscription_id=id_,
            topic=spec.topic,
            # The status as the notification is queued: "error" while earlier ones keep failing.
            status="error" if state is not None and state.status == "error" else "active",
            kind="event-notification",
            events_since_start=event.number,
            events=[event],
            content=spec.content,
        )
        bundle = notification_bundle(
            status, base_url=base, events=[event], content=spec.content, now_ms=self.deps.clock.now_ms()
        )
        return _job(
            "event", tenant, id_, method="POST", url=spec.endpoint, body=jsonio.dumps(bundle), content_type=spec.payload
        )

    def _base_url(self, tenant: str, id_: str) -> str:
        secrets = self.state.secrets(tenant, id_)
        base = (secrets.owner.get("base_url") if secrets else None) or self.deps.settings.base_url or ""
        return str(base).rstrip("/")

    # -- the subscriptions themselves ---------------------------------------------------------

    def _load(self, tenant: str, id_: str, *, restarting: bool = False, seq: int = 0) -> bool:
        """(Re)load one subscription from its current version; True when a client asked for its
        activation (status ``requested``)."""
        head = self.deps.store.current(tenant, "Subscription", id_)
        resource = _parsed(head)
        key = (tenant, id_)
        if head is None or resource is None:
            self._drop(tenant, id_, forget=True)
            return False
        status = resource.get("status")
        if status not in LIVE:
            self._drop(tenant, id_)
            self.state.put_state(tenant, id_, version=head.version, spec={}, status="off")
            return False
        from fhirflow.runtime import search_param_catalog

        catalog = search_param_catalog(self.deps.settings)
        base_url = self._base_url(tenant, id_)
        try:
            spec = spec_of(resource, tenant, catalog=catalog, base_url=base_url)
        except FhirError as error:  # e.g. a search parameter that was removed since
            logger.warning("subscription no longer valid", extra={"tenant": tenant, "id": id_})
            self._drop(tenant, id_)
            self._set_status(tenant, id_, "error", f"The subscription can no longer be evaluated: {error.diagnostics}")
            return False
        from fhirflow_subscriptions.criteria import compile_criteria

        compiled = [
            compile_criteria(spec.resource_type, q, tenant=tenant, catalog=catalog, base_url=base_url)
            for q in spec.queries
        ]
        previous = self.state.state(tenant, id_)
        # Changes committed before the subscription are not its events, even when the matcher meets
        # them after a restart with the subscription already loaded.
        since = int(previous.spec.get("since_seq", 0)) if previous is not None and previous.spec else seq
        self.since[key] = since
        stored = {**spec.to_json(), "since_seq": since}
        self.state.put_state(tenant, id_, version=head.version, spec=stored, status=str(status))
        self.specs[key] = spec
        self.index.put(
            key, tenant=tenant, resource_type=spec.resource_type, interactions=spec.interactions, criteria=compiled
        )
        return status == "requested" and (restarting or previous is None or previous.version != head.version)

    def _drop(self, tenant: str, id_: str, *, forget: bool = False) -> None:
        key = (tenant, id_)
        if key in self.specs:
            del self.specs[key]
            self.index.remove(key)
        self.queue.drop_group(group_of(tenant, id_))
        if forget:
            self.state.forget(tenant, id_)

    def _activate(self, tenant: str, id_: str) -> None:
        spec = self.specs.get((tenant, id_))
        if spec is None:
            return
        if spec.kind == "r4":
            self._set_status(tenant, id_, "active", None, only_from=("requested",))
            return
        # Topic-based: a handshake through the same queue; its result decides (on_result).
        from fhirflow.delivery_ports import DeliveryJob

        head = self.deps.store.current(tenant, "Subscription", id_)
        state = self.state.state(tenant, id_)
        base = self._base_url(tenant, id_)
        status = status_parameters(
            base_url=base,
            subscription_id=id_,
            topic=spec.topic,
            status="requested",
            kind="handshake",
            events_since_start=state.events if state else 0,
        )
        bundle = notification_bundle(status, base_url=base, events=(), content="empty", now_ms=self.deps.clock.now_ms())
        group = group_of(tenant, id_)
        payload = _job(
            "handshake",
            tenant,
            id_,
            method="POST",
            url=spec.endpoint,
            body=jsonio.dumps(bundle),
            content_type=spec.payload,
        )
        version = head.version if head else 0
        self.queue.enqueue(
            [DeliveryJob(group=group, job_id=f"{group}/handshake/{version}", payload=payload, not_before_ms=0)]
        )
        self.on_enqueued()
        self.state.mark_sent(tenant, id_, self.deps.clock.now_ms())

    # -- heartbeats and end -------------------------------------------------------------------

    def tick(self) -> None:
        """Heartbeats for idle topic-based subscriptions; ``off`` for those whose ``end`` passed."""
        from fhirflow.delivery_ports import DeliveryJob

        now = self.deps.clock.now_ms()
        for state in self.state.states():
            spec = self.specs.get((state.tenant, state.id))
            if spec is None or state.status not in ("active", "error"):
                continue
            if spec.end_ms is not None and spec.end_ms <= now:
                self._drop(state.tenant, state.id)
                self._set_status(state.tenant, state.id, "off", None)
                continue
            period = spec.heartbeat_seconds
            if spec.kind != "topic" or not period or now - state.last_sent_ms < period * 1000:
                continue
            base = self._base_url(state.tenant, state.id)
            status = status_parameters(
                base_url=base,
                subscription_id=state.id,
                topic=spec.topic,
                status=state.status,
                kind="heartbeat",
                events_since_start=state.events,
            )
            bundle = notification_bundle(status, base_url=base, events=(), content="empty", now_ms=now)
            group = group_of(state.tenant, state.id)
            payload = _job(
                "heartbeat",
                state.tenant,
                state.id,
                method="POST",
                url=spec.endpoint,
                body=jsonio.dumps(bundle),
                content_type=spec.payload,
            )
            self.queue.enqueue(
                [DeliveryJob(group=group, job_id=f"{group}/heartbeat/{now}", payload=payload, not_before_ms=0)]
            )
            self.on_enqueued()
            self.state.mark_sent(state.tenant, state.id, now)

    # -- delivery (called by the dispatcher's threads) ----------------------------------------

    def deliver(self, job: Any) -> Attempt:
        from fhirflow.delivery_ports import Attempt
        from fhirflow_subscriptions.sender import Outgoing, send

        data = json.loads(job.payload)
        tenant, id_ = data["tenant"], data["id"]
        spec = self.specs.get((tenant, id_))
        secrets = self.state.secrets(tenant, id_)
        if spec is None or secrets is None:
            return Attempt(
                outcome="gone", status=None, latency_ms=0.0, error="the subscription is off", retry_after=None
            )
        headers = dict(secrets.headers)
        if data.get("content_type"):
            headers["Content-Type"] = data["content_type"]
        # backport-timeout may shorten the server's request timeout, never lengthen it (the
        # dispatcher's lease covers the server's timeout).
        limit = self.deps.settings.subscriptions_request_timeout_seconds
        timeout = float(min(spec.timeout_seconds or limit, limit))
        outgoing = Outgoing(
            method=data["method"],
            url=data["url"],
            headers=headers,
            body=bytes.fromhex(data["body"]),
            message_id=job.job_id,
            secrets=secrets.live_signing(self.deps.clock.now_ms()),
            timeout=timeout,
        )
        return send(outgoing, endpoint_policy(self.deps.settings, tenant))

    def on_result(self, job: Any, attempt: Attempt, outcome: str) -> None:
        data = json.loads(job.payload)
        tenant, id_, kind = data["tenant"], data["id"], data["kind"]
        try:
            if outcome == "delivered":
                if kind == "event":
                    self.state.count(tenant, id_, delivered=1, latency_ms=attempt.latency_ms)
            else:
                self.state.count(tenant, id_, failed=1)
        except Exception as error:  # a counter must never stop a status change
            logger.warning(
                "could not count a delivery", extra={"tenant": tenant, "id": id_, "error": type(error).__name__}
            )
        try:
            if outcome == "delivered":
                self._set_status(tenant, id_, "active", None, only_from=("requested", "error"))
            elif outcome == "retrying":
                reason = _reason(attempt)
                what = "handshake" if kind == "handshake" else "notification"
                self._set_status(
                    tenant, id_, "error", f"The {what} failed ({reason}); retrying", only_from=("requested", "active")
                )
            elif outcome in ("gave-up", "gone", "refused"):
                self._drop(tenant, id_)
                why = (
                    "the endpoint answered 410 Gone" if outcome == "gone" else "delivery failed until the retry horizon"
                )
                self._set_status(tenant, id_, "off", f"Turned off: {why} ({_reason(attempt)})")
        except Exception as error:
            logger.warning(
                "could not record a delivery result", extra={"tenant": tenant, "id": id_, "error": type(error).__name__}
            )

    # -- status: system writes ----------------------------------------------------------------

    def _set_status(
        self, tenant: str, id_: str, status: str, error: str | None, *, only_from: tuple[str, ...] | None = None
    ) -> None:
        """Write the status as a new version of the resource (the server owns status and error)."""
        store = self.deps.store
        with self._status_lock:
            for _ in range(10):
                head = store.current(tenant, "Subscription", id_)
                resource = _parsed(head)
                if head is None or resource is None:
                    return
                current = resource.get("status")
                if only_from is not None and current not in only_from:
                    return
                if current == status and resource.get("error") == error:
                    return
                updated = {k: v for k, v in resource.items() if k != "error"}
                updated["status"] = status
                if error:
                    updated["error"] = error[:1000]
                new = _next_version(self.deps, head, updated)
                self.state.copy_secrets(tenant, id_, head.version, new.version)
                try:
                    store.commit([Change(new, head.version, SYSTEM_REQUEST_ID)])
                except VersionConflict:
                    continue
                self.state.set_status(tenant, id_, status, error)
                return


def _next_version(deps: Dependencies, head: ResourceVersion, resource: dict[str, Any]) -> ResourceVersion:
    version = head.version + 1
    last_updated = max(deps.clock.now_ms(), head.last_updated + 1)
    stamped = versioning.stamp(resource, id_=head.id, version=version, last_updated=last_updated)
    return ResourceVersion(
        head.tenant,
        head.type,
        head.id,
        version,
        last_updated,
        False,
        "PUT",
        versioning.serialise(stamped),
        False,
        resource=stamped,
    )


def _parsed(version: ResourceVersion | None) -> dict[str, Any] | None:
    if version is None or version.deleted or version.body is None:
        return None
    if version.resource is not None:
        return version.resource
    parsed = jsonio.loads(version.body)
    return parsed if isinstance(parsed, dict) else None


def _job(kind: str, tenant: str, id_: str, *, method: str, url: str, body: bytes, content_type: str | None) -> bytes:
    """A queued notification: everything but the secrets (headers and signing keys are looked up
    when it is sent, so they never sit in the queue)."""
    return json.dumps(
        {
            "kind": kind,
            "tenant": tenant,
            "id": id_,
            "method": method,
            "url": url,
            "body": body.hex(),
            "content_type": content_type,
        }
    ).encode()


def _reason(attempt: Attempt) -> str:
    if attempt.status is not None:
        return f"HTTP {attempt.status}" + (f": {attempt.error}" if attempt.error else "")
    return attempt.error or "no answer"
