"""The embedded mode's subscriptions worker, started by ``fhirflow serve`` (DESIGN.md §6).

Three loops, all daemon threads of the serving process:

- the **matcher** follows the SQLite ``events`` table (the ResourceChanged events the outbox drain
  publishes in each write's own transaction, bundles and ``fhirflow import`` included) from a
  durable cursor and hands each batch to :meth:`SubscriptionService.consume`;
- the **dispatcher** (helper B's :class:`~fhirflow_subscriptions.dispatch.Dispatcher`) delivers
  from the durable SQLite queue on its own threads, in order per subscription;
- the **ticker** sends heartbeats, turns subscriptions ``off`` at ``end`` and prunes the logs.

A crash anywhere loses nothing: the cursor moves only in the transaction that queues the batch's
notifications, and a queued notification leaves the queue only after a 2xx.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirflow.adapters.sqlite.deliveries import SqliteDeliveryQueue
    from fhirflow.adapters.sqlite.events import SqliteEventLog
    from fhirflow.local.loop import Worker
    from fhirflow.settings import Settings
    from fhirflow_subscriptions.dispatch import Dispatcher
    from fhirflow_subscriptions.service import SubscriptionService

BATCH = 200
MATCH_INTERVAL_SECONDS = 0.02
PRUNE_EVERY_TICKS = 600

_queues: dict[str, SqliteDeliveryQueue] = {}
_lock = threading.Lock()


def delivery_queue(settings: Settings) -> SqliteDeliveryQueue:
    from fhirflow.adapters.sqlite.deliveries import SqliteDeliveryQueue
    from fhirflow.runtime import sqlite_database

    key = str(settings.sqlite_path.resolve())
    with _lock:
        if key not in _queues:
            _queues[key] = SqliteDeliveryQueue(sqlite_database(settings))
        return _queues[key]


class Matcher:
    """The local event source: the events table, from the service's cursor."""

    def __init__(self, service: SubscriptionService, events: SqliteEventLog) -> None:
        self.service = service
        self.events = events

    def drain(self) -> int:
        from fhirflow_subscriptions.service import CURSOR

        done = 0
        while True:
            batch = self.events.read(after_seq=self.service.state.cursor(CURSOR), limit=BATCH)
            if not batch:
                return done
            done += self.service.consume(batch)


class Ticker:
    def __init__(self, service: SubscriptionService, queue: SqliteDeliveryQueue, settings: Settings) -> None:
        self.service = service
        self.queue = queue
        self.settings = settings
        self._ticks = 0

    def drain(self) -> int:
        self.service.tick()
        self._ticks += 1
        if self._ticks % PRUNE_EVERY_TICKS == 1:
            now = self.service.deps.clock.now_ms()
            self.service.state.prune(
                events_older_than_ms=now - self.settings.subscriptions_event_retention_seconds * 1000
            )
            self.queue.prune(older_than_ms=now - self.settings.subscriptions_delivery_log_retention_seconds * 1000)
        return 0


class SubscriptionsWorker:
    def __init__(self, service: SubscriptionService, workers: list[Worker], dispatcher: Dispatcher) -> None:
        self.service = service
        self.workers = workers
        self.dispatcher = dispatcher

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.dispatcher.stop()


def build_service(settings: Settings) -> SubscriptionService:
    from fhirflow.runtime import build_dependencies
    from fhirflow_subscriptions.hook import state_store
    from fhirflow_subscriptions.service import SubscriptionService

    return SubscriptionService(build_dependencies(settings), state_store(settings), delivery_queue(settings))


def start_subscriptions_worker(settings: Settings) -> SubscriptionsWorker | None:
    """What ``fhirflow serve`` runs for subscriptions; None where the events are not the local log
    (with EventBridge the AWS matcher and deliverer do this, docs/subscriptions.md)."""
    if settings.events != "local" or settings.store != "sqlite":
        return None
    from fhirflow.adapters.sqlite.events import SqliteEventLog
    from fhirflow.local.loop import Worker
    from fhirflow.runtime import sqlite_database
    from fhirflow_subscriptions.backoff import next_delay
    from fhirflow_subscriptions.dispatch import Dispatcher

    service = build_service(settings)
    queue = delivery_queue(settings)
    scale = settings.subscriptions_retry_scale
    dispatcher = Dispatcher(
        queue,
        deliver=service.deliver,
        on_result=service.on_result,
        horizon_seconds=settings.subscriptions_retry_horizon_seconds,
        workers=settings.subscriptions_delivery_workers,
        backoff=lambda attempt: next_delay(attempt) * scale,
        # A crash leaves the job in flight leased: the next process re-sends it once the lease is
        # over, so the lease is as short as it can be while covering the longest request.
        lease_seconds=settings.subscriptions_request_timeout_seconds * 2 + 5,
    ).start()
    service.on_enqueued = dispatcher.wake
    service.load()
    matcher = Worker(Matcher(service, SqliteEventLog(sqlite_database(settings))), interval=MATCH_INTERVAL_SECONDS)
    ticker = Worker(Ticker(service, queue, settings), interval=settings.subscriptions_heartbeat_tick_seconds)
    return SubscriptionsWorker(service, [matcher.start(), ticker.start()], dispatcher)
