"""The delivery loop: takes due notifications from the queue, sends them, records the outcome.

The same code runs embedded (``start()``: worker threads inside ``fhirflow serve``) and, later,
in the AWS deliverer Lambda (``run_once()`` over what SQS handed it). Its guarantees:

* **At least once.** A job leaves the queue only after a 2xx (or when it is abandoned: 410, or the
  retry horizon passed). A crash mid-delivery lets the lease expire and the same job, with the same
  id (the ``webhook-id``), is delivered again.
* **In order per group.** The queue hands out only the head of each group and leases the group
  while it is in flight, so a subscription's notifications arrive one after another.
* **Isolation.** Each claimed job occupies one worker for at most the sender's timeout; other
  groups are claimed by the free workers meanwhile. An endpoint that never answers delays only its
  own group (FWoA #676 was the opposite: one bad endpoint held up everyone).
* **Retries** follow ``backoff.next_delay`` (Standard Webhooks' ~3-day schedule with jitter) or the
  endpoint's ``Retry-After`` (at least 1 s), and never go past ``horizon_seconds`` after the job was
  enqueued: the last try is made at the horizon, then the job is given up.

``on_result(job, attempt, result)`` is told every outcome before the queue changes, with
``result`` one of ``delivered | retrying | gave-up | gone``, so the service can move the
subscription's status (``error`` with the reason, back to ``active``, ``off``). For one group these
calls come in order, because the group stays leased until the queue has been updated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from fhirflow.delivery_ports import Attempt, ClaimedJob, DeliveryQueue
from fhirflow_subscriptions.backoff import DEFAULT_HORIZON_SECONDS, MIN_RETRY_AFTER_SECONDS, next_delay

Result = Literal["delivered", "retrying", "gave-up", "gone"]

logger = logging.getLogger(__name__)


class Dispatcher:
    """N worker threads over one queue; a slow endpoint holds at most one thread, and only its group."""

    def __init__(
        self,
        queue: DeliveryQueue,
        *,
        deliver: Callable[[ClaimedJob], Attempt],
        on_result: Callable[[ClaimedJob, Attempt, Result], None],
        horizon_seconds: float = DEFAULT_HORIZON_SECONDS,
        workers: int = 8,
        clock: Callable[[], float] = time.time,
        backoff: Callable[[int], float] = next_delay,
        lease_seconds: float = 120.0,
        poll_seconds: float = 0.05,
    ) -> None:
        """``lease_seconds`` must exceed the longest ``deliver`` call (the sender's timeout): a job
        whose lease ran out is handed to another worker. ``poll_seconds`` bounds how long an enqueue
        made by another process waits to be seen (in-process producers call :meth:`wake`)."""
        if workers < 1:
            raise ValueError("a dispatcher needs at least one worker")
        self.queue = queue
        self.deliver = deliver
        self.on_result = on_result
        self.horizon_ms = int(horizon_seconds * 1000)
        self.workers = workers
        self.clock = clock
        self.backoff = backoff
        self.lease_ms = int(lease_seconds * 1000)
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._free = workers
        self._loop_thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- one pass (the Lambda's way, and tests')

    def run_once(self) -> int:
        """Claim the due heads (up to ``workers``), deliver them one by one, and return how many."""
        jobs = self.queue.claim(now_ms=self._now_ms(), limit=self.workers, lease_ms=self.lease_ms)
        for job in jobs:
            self.handle(job)
        return len(jobs)

    def handle(self, job: ClaimedJob) -> Result:
        """Deliver one claimed job and settle it in the queue."""
        try:
            attempt = self.deliver(job)
        except Exception as exc:  # a bug in building the request must not kill the worker
            logger.warning(
                "webhook deliver failed", extra={"group": job.group, "job": job.job_id, "error": type(exc).__name__}
            )
            attempt = Attempt("retry", None, 0.0, f"internal error ({type(exc).__name__})")
        at_ms = self._now_ms()
        self.queue.log_attempt(job.group, job.job_id, attempt, at_ms)
        if attempt.outcome == "delivered":
            self._tell(job, attempt, "delivered")
            self.queue.complete(job.job_id)
            return "delivered"
        if attempt.outcome == "gone":
            self._tell(job, attempt, "gone")
            self.queue.drop_group(job.group)
            return "gone"
        deadline_ms = job.created_ms + self.horizon_ms
        if at_ms >= deadline_ms:
            self._tell(job, attempt, "gave-up")
            self.queue.complete(job.job_id)
            return "gave-up"
        attempts = job.attempts + 1
        if attempt.retry_after is not None:
            delay = max(attempt.retry_after, MIN_RETRY_AFTER_SECONDS)
        else:
            delay = self.backoff(attempts)
        not_before_ms = min(at_ms + int(delay * 1000), deadline_ms)
        self._tell(job, attempt, "retrying")
        self.queue.retry(
            job.job_id, not_before_ms=not_before_ms, attempts=attempts, leased_until_ms=job.leased_until_ms
        )
        return "retrying"

    def _tell(self, job: ClaimedJob, attempt: Attempt, result: Result) -> None:
        logger.log(
            logging.DEBUG if result == "delivered" else logging.INFO,
            "webhook attempt",
            extra={
                "group": job.group,
                "job": job.job_id,
                "result": result,
                "status": attempt.status,
                "latency_ms": round(attempt.latency_ms, 1),
            },
        )
        try:
            self.on_result(job, attempt, result)
        except Exception as exc:  # the delivery itself stands; the queue must still move on
            logger.warning("webhook on_result failed", extra={"group": job.group, "error": type(exc).__name__})

    # --- the embedded loop

    def start(self) -> Dispatcher:
        """Run in the background: one thread claims, ``workers`` threads deliver."""
        if self._loop_thread is not None:
            return self
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="webhook-deliver")
        self._loop_thread = threading.Thread(target=self._loop, name="webhook-dispatch", daemon=True)
        self._loop_thread.start()
        return self

    def wake(self) -> None:
        """Look at the queue now (after an enqueue in this process) instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; wait for the deliveries in flight (each bounded by the sender's timeout)."""
        self._stopping.set()
        self._wake.set()
        if self._loop_thread is not None:
            self._loop_thread.join()
            self._loop_thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            with self._lock:
                free = self._free
            jobs: list[ClaimedJob] = []
            if free:
                try:
                    jobs = self.queue.claim(now_ms=self._now_ms(), limit=free, lease_ms=self.lease_ms)
                except Exception as exc:  # e.g. the database busy for longer than its timeout
                    logger.warning("webhook claim failed", extra={"error": type(exc).__name__})
            for job in jobs:
                with self._lock:
                    self._free -= 1
                assert self._pool is not None
                self._pool.submit(self._work, job)
            if jobs and len(jobs) == free:
                continue
            self._wake.wait(self._idle_seconds() if free else self.poll_seconds)

    def _idle_seconds(self) -> float:
        try:
            due = self.queue.next_due_ms()
        except Exception:
            return self.poll_seconds
        if due is None:
            return self.poll_seconds
        return min(max((due - self._now_ms()) / 1000.0, 0.0), self.poll_seconds)

    def _work(self, job: ClaimedJob) -> None:
        try:
            self.handle(job)
        except Exception as exc:  # the queue failed: the lease expires and the job comes back
            logger.warning("webhook settle failed", extra={"group": job.group, "error": type(exc).__name__})
        finally:
            with self._lock:
                self._free += 1
            self._wake.set()
