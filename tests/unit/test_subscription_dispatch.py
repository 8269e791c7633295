"""The Dispatcher over the embedded queue, with scripted deliverers and a controlled clock:
settling each outcome, backoff and Retry-After, the horizon, 410, order per group, isolation of a
stuck group, and re-delivery after a crash (no sockets: ``deliver`` is a function here)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.deliveries import SqliteDeliveryQueue
from fhirflow.delivery_ports import Attempt, ClaimedJob, DeliveryJob
from fhirflow_subscriptions.dispatch import Dispatcher

T0 = 1_700_000_000.0
OK = Attempt("delivered", 200, 1.0)
FAIL = Attempt("retry", 500, 1.0, "HTTP 500")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def queue(tmp_path: Any) -> SqliteDeliveryQueue:
    return SqliteDeliveryQueue(SqliteDatabase(tmp_path / "q.sqlite3"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def enqueue(queue: SqliteDeliveryQueue, group: str, *ns: int, clock: Clock | None = None) -> None:
    at = int((clock.now if clock else T0) * 1000)
    queue.enqueue([DeliveryJob(group, f"{group}#{n}", str(n).encode(), at) for n in ns], now_ms=at)


class Recorder:
    def __init__(self, script: Callable[[ClaimedJob], Attempt] = lambda _j: OK) -> None:
        self.script = script
        self.delivered: list[str] = []
        self.results: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def deliver(self, job: ClaimedJob) -> Attempt:
        attempt = self.script(job)
        with self.lock:
            self.delivered.append(job.job_id)
        return attempt

    def on_result(self, job: ClaimedJob, _attempt: Attempt, result: str) -> None:
        with self.lock:
            self.results.append((job.job_id, result))


def dispatcher(queue: SqliteDeliveryQueue, rec: Recorder, clock: Clock, **kw: Any) -> Dispatcher:
    kw.setdefault("backoff", lambda n: 10.0 * n)
    return Dispatcher(queue, deliver=rec.deliver, on_result=rec.on_result, clock=clock, **kw)


def test_a_delivered_job_leaves_the_queue_and_is_logged(queue: SqliteDeliveryQueue, clock: Clock) -> None:
    rec = Recorder()
    enqueue(queue, "a", 1)
    d = dispatcher(queue, rec, clock)
    assert d.run_once() == 1
    assert rec.results == [("a#1", "delivered")]
    assert queue.depth() == 0
    assert queue.attempts("a")[0]["outcome"] == "delivered"
    assert d.run_once() == 0


def test_failures_back_off_by_the_schedule_then_deliver(queue: SqliteDeliveryQueue, clock: Clock) -> None:
    rec = Recorder(lambda job: FAIL if job.attempts < 2 else OK)
    enqueue(queue, "a", 1)
    d = dispatcher(queue, rec, clock)
    assert d.run_once() == 1  # fails: next try in backoff(1) = 10 s
    clock.now += 9.9
    assert d.run_once() == 0
    clock.now += 0.1
    assert d.run_once() == 1  # fails again: backoff(2) = 20 s
    clock.now += 19.9
    assert d.run_once() == 0
    clock.now += 0.1
    assert d.run_once() == 1
    assert rec.results == [("a#1", "retrying"), ("a#1", "retrying"), ("a#1", "delivered")]
    assert [a["outcome"] for a in queue.attempts("a")] == ["delivered", "retry", "retry"]


@pytest.mark.parametrize(("retry_after", "wait"), [(3.0, 3.0), (0.0, 1.0), (600.0, 600.0)])
def test_retry_after_replaces_the_backoff(
    queue: SqliteDeliveryQueue, clock: Clock, retry_after: float, wait: float
) -> None:
    rec = Recorder(lambda job: Attempt("retry", 503, 1.0, "HTTP 503", retry_after) if job.attempts == 0 else OK)
    enqueue(queue, "a", 1)
    d = dispatcher(queue, rec, clock)
    d.run_once()
    clock.now += wait - 0.01
    assert d.run_once() == 0
    clock.now += 0.01
    assert d.run_once() == 1
    assert rec.results[-1] == ("a#1", "delivered")


def test_retries_stop_at_the_horizon_with_a_last_try_on_it(queue: SqliteDeliveryQueue, clock: Clock) -> None:
    rec = Recorder(lambda _j: FAIL)
    enqueue(queue, "a", 1, 2)
    d = dispatcher(queue, rec, clock, horizon_seconds=25.0)
    d.run_once()  # t=0 → next at 10
    clock.now += 10
    d.run_once()  # t=10 → backoff 20 would be t=30, clamped to the horizon t=25
    clock.now += 14.9
    assert d.run_once() == 0
    clock.now += 0.1
    d.run_once()  # t=25: the last try, then given up
    assert rec.results == [("a#1", "retrying"), ("a#1", "retrying"), ("a#1", "gave-up")]
    assert queue.depth("a") == 1  # the next job of the group is now the head
    assert d.run_once() == 1
    assert rec.delivered[-1] == "a#2"


def test_410_drops_the_group_and_leaves_the_others(queue: SqliteDeliveryQueue, clock: Clock) -> None:
    rec = Recorder(lambda job: Attempt("gone", 410, 1.0, "gone") if job.group == "a" else OK)
    enqueue(queue, "a", 1, 2, 3)
    enqueue(queue, "b", 1, 2)
    d = dispatcher(queue, rec, clock)
    while d.run_once():
        pass
    assert ("a#1", "gone") in rec.results
    assert "a#2" not in rec.delivered
    assert [r for r in rec.results if r[0].startswith("b")] == [("b#1", "delivered"), ("b#2", "delivered")]
    assert queue.depth() == 0


def test_a_deliverer_that_raises_is_a_failed_attempt(queue: SqliteDeliveryQueue, clock: Clock) -> None:
    def boom(_job: ClaimedJob) -> Attempt:
        raise RuntimeError("bug")

    rec = Recorder(boom)
    enqueue(queue, "a", 1)
    d = dispatcher(queue, rec, clock)
    d.run_once()
    assert rec.delivered == []  # deliver raised before the recorder saw it; on_result is still told
    assert rec.results == [("a#1", "retrying")]
    [logged] = queue.attempts("a")
    assert (logged["outcome"], logged["error"]) == ("retry", "internal error (RuntimeError)")
    assert queue.depth("a") == 1


def test_a_failing_on_result_does_not_stall_the_queue(queue: SqliteDeliveryQueue, clock: Clock) -> None:
    def on_result(*_args: Any) -> None:
        raise RuntimeError("status store down")

    enqueue(queue, "a", 1, 2)
    d = Dispatcher(queue, deliver=lambda _j: OK, on_result=on_result, clock=clock)
    assert d.run_once() + d.run_once() == 2
    assert queue.depth() == 0


def test_order_per_group_holds_through_failures(queue: SqliteDeliveryQueue, clock: Clock) -> None:
    failures = {"a#2": 2, "b#1": 1}

    def script(job: ClaimedJob) -> Attempt:
        return FAIL if job.attempts < failures.get(job.job_id, 0) else OK

    rec = Recorder(script)
    enqueue(queue, "a", 1, 2, 3, 4)
    enqueue(queue, "b", 1, 2, 3)
    d = dispatcher(queue, rec, clock, backoff=lambda _n: 1.0)
    for _ in range(40):
        d.run_once()
        clock.now += 1
    done = [job for job, result in rec.results if result == "delivered"]
    assert [j for j in done if j.startswith("a")] == ["a#1", "a#2", "a#3", "a#4"]
    assert [j for j in done if j.startswith("b")] == ["b#1", "b#2", "b#3"]


def test_a_crashed_dispatcher_s_job_is_redelivered_with_the_same_id(queue: SqliteDeliveryQueue, clock: Clock) -> None:
    enqueue(queue, "a", 1)
    [lost] = queue.claim(now_ms=int(clock.now * 1000), limit=1, lease_ms=60_000)  # then the process died
    rec = Recorder()
    d = dispatcher(queue, rec, clock, lease_seconds=60)
    assert d.run_once() == 0
    clock.now += 60
    assert d.run_once() == 1
    assert rec.delivered == [lost.job_id]


def test_threads_keep_other_groups_moving_while_one_is_stuck(queue: SqliteDeliveryQueue) -> None:
    release = threading.Event()

    def script(job: ClaimedJob) -> Attempt:
        if job.group == "stuck":
            release.wait(10)
        return OK

    rec = Recorder(script)
    enqueue(queue, "stuck", 1, 2)
    for g in range(6):
        enqueue(queue, f"g{g}", 1, 2, 3)
    d = Dispatcher(queue, deliver=rec.deliver, on_result=rec.on_result, workers=3, poll_seconds=0.01).start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(rec.results) < 18:
            time.sleep(0.01)
        others = [job for job, _ in rec.results if not job.startswith("stuck")]
        assert len(others) == 18
        assert "stuck#1" not in rec.delivered  # still in flight, holding one worker only
    finally:
        release.set()
        d.stop()
    stuck = [job for job, _ in rec.results if job.startswith("stuck")]
    assert stuck in (["stuck#1"], ["stuck#1", "stuck#2"])


def test_wake_starts_a_delivery_without_waiting_for_the_poll(queue: SqliteDeliveryQueue) -> None:
    rec = Recorder()
    d = Dispatcher(queue, deliver=rec.deliver, on_result=rec.on_result, workers=2, poll_seconds=5.0).start()
    try:
        time.sleep(0.1)  # the loop is now asleep for up to 5 s
        enqueue(queue, "a", 1, clock=Clock())
        queue.retry("a#1", not_before_ms=0, attempts=0)  # due now, whatever the wall clock says
        started = time.monotonic()
        d.wake()
        while not rec.results and time.monotonic() - started < 4:
            time.sleep(0.005)
        assert rec.results == [("a#1", "delivered")]
        assert time.monotonic() - started < 1.0
    finally:
        d.stop()
