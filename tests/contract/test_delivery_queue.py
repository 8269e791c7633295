"""The DeliveryQueue contract (fhirflow/delivery_ports.py): FIFO per group, only heads handed out,
leases that expire into re-delivery of the same job, idempotent enqueue, the delivery log.
Run against the embedded adapter; the AWS adapter (SQS FIFO) joins the parameter list later."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fhirflow.delivery_ports import Attempt, DeliveryJob, DeliveryQueue

T0 = 1_700_000_000_000
LEASE = 30_000


@pytest.fixture(params=["sqlite"])
def queue(request: pytest.FixtureRequest, tmp_path: Any) -> DeliveryQueue:
    from fhirflow.adapters.sqlite.database import SqliteDatabase
    from fhirflow.adapters.sqlite.deliveries import SqliteDeliveryQueue

    return SqliteDeliveryQueue(SqliteDatabase(tmp_path / "deliveries.sqlite3"))


def job(group: str, n: int, *, due: int = T0) -> DeliveryJob:
    return DeliveryJob(group=group, job_id=f"{group}#{n}", payload=f"{group}:{n}".encode(), not_before_ms=due)


def ids(claimed: list[Any]) -> list[str]:
    return sorted(c.job_id for c in claimed)


def test_only_the_head_of_each_group_is_claimed(queue: DeliveryQueue) -> None:
    queue.enqueue([job("a", 1), job("a", 2), job("b", 1), job("a", 3)])
    first = queue.claim(now_ms=T0, limit=10, lease_ms=LEASE)
    assert ids(first) == ["a#1", "b#1"]
    assert {c.job_id: c.payload for c in first} == {"a#1": b"a:1", "b#1": b"b:1"}
    assert queue.claim(now_ms=T0, limit=10, lease_ms=LEASE) == []  # both groups are leased


def test_each_group_is_delivered_in_enqueue_order(queue: DeliveryQueue) -> None:
    queue.enqueue([job("a", n) for n in range(5)])
    queue.enqueue([job("a", n) for n in range(5, 8)])
    seen = []
    while claimed := queue.claim(now_ms=T0, limit=10, lease_ms=LEASE):
        [head] = claimed
        seen.append(head.job_id)
        queue.complete(head.job_id)
    assert seen == [f"a#{n}" for n in range(8)]


def test_a_crashed_delivery_is_redelivered_with_the_same_id_after_the_lease(queue: DeliveryQueue) -> None:
    queue.enqueue([job("a", 1), job("a", 2)])
    [first] = queue.claim(now_ms=T0, limit=1, lease_ms=LEASE)
    # the deliverer dies here: no complete, no retry
    assert queue.claim(now_ms=T0 + LEASE - 1, limit=1, lease_ms=LEASE) == []
    [again] = queue.claim(now_ms=T0 + LEASE, limit=1, lease_ms=LEASE)
    assert (again.job_id, again.payload, again.attempts) == (first.job_id, first.payload, 0)
    assert again.created_ms == first.created_ms
    queue.complete(again.job_id)
    [second] = queue.claim(now_ms=T0 + LEASE, limit=1, lease_ms=LEASE)
    assert second.job_id == "a#2"


def test_a_failing_group_does_not_block_the_others(queue: DeliveryQueue) -> None:
    queue.enqueue([job("bad", n) for n in range(3)] + [job("good", n) for n in range(3)])
    delivered = []
    now = T0
    for _ in range(3):
        for claimed in queue.claim(now_ms=now, limit=10, lease_ms=LEASE):
            if claimed.group == "bad":
                queue.retry(claimed.job_id, not_before_ms=now + 3_600_000, attempts=claimed.attempts + 1)
            else:
                delivered.append(claimed.job_id)
                queue.complete(claimed.job_id)
        now += 1000
    assert delivered == ["good#0", "good#1", "good#2"]
    # the bad group keeps its head (and its order) until it is due again
    assert queue.claim(now_ms=now, limit=10, lease_ms=LEASE) == []
    [head] = queue.claim(now_ms=T0 + 3_600_000, limit=10, lease_ms=LEASE)
    assert (head.job_id, head.attempts) == ("bad#0", 1)


def test_not_before_delays_a_job_and_the_group_behind_it(queue: DeliveryQueue) -> None:
    queue.enqueue([job("a", 1, due=T0 + 5000), job("a", 2, due=T0)])
    assert queue.claim(now_ms=T0, limit=10, lease_ms=LEASE) == []
    assert queue.next_due_ms() == T0 + 5000
    assert ids(queue.claim(now_ms=T0 + 5000, limit=10, lease_ms=LEASE)) == ["a#1"]


def test_claim_respects_the_limit_and_serves_the_most_overdue_first(queue: DeliveryQueue) -> None:
    queue.enqueue([job("late", 1, due=T0 - 9000), job("early", 1, due=T0 - 1000), job("mid", 1, due=T0 - 5000)])
    assert ids(queue.claim(now_ms=T0, limit=2, lease_ms=LEASE)) == ["late#1", "mid#1"]
    assert ids(queue.claim(now_ms=T0, limit=2, lease_ms=LEASE)) == ["early#1"]


def test_enqueue_is_idempotent_on_the_job_id_even_after_delivery(queue: DeliveryQueue) -> None:
    queue.enqueue([job("a", 1), job("a", 2)])
    queue.enqueue([job("a", 1)])  # the producer replays after a crash
    [head] = queue.claim(now_ms=T0, limit=10, lease_ms=LEASE)
    queue.complete(head.job_id)
    queue.enqueue([job("a", 1)])
    [nxt] = queue.claim(now_ms=T0, limit=10, lease_ms=LEASE)
    assert nxt.job_id == "a#2"
    queue.complete(nxt.job_id)
    assert queue.claim(now_ms=T0, limit=10, lease_ms=LEASE) == []


def test_retry_records_attempts_and_keeps_the_head(queue: DeliveryQueue) -> None:
    queue.enqueue([job("a", 1), job("a", 2)])
    [head] = queue.claim(now_ms=T0, limit=1, lease_ms=LEASE)
    queue.retry(head.job_id, not_before_ms=T0 + 100, attempts=3)
    [again] = queue.claim(now_ms=T0 + 100, limit=5, lease_ms=LEASE)
    assert (again.job_id, again.attempts) == ("a#1", 3)


def test_drop_group_removes_only_that_group(queue: DeliveryQueue) -> None:
    queue.enqueue([job("a", 1), job("a", 2), job("b", 1)])
    assert queue.drop_group("a") == 2
    assert ids(queue.claim(now_ms=T0, limit=10, lease_ms=LEASE)) == ["b#1"]
    queue.enqueue([job("a", 3)])  # a later job of the dropped group starts a fresh group
    assert ids(queue.claim(now_ms=T0, limit=10, lease_ms=LEASE)) == ["a#3"]


def test_the_delivery_log_lists_attempts_newest_first_and_is_pruned(queue: DeliveryQueue) -> None:
    queue.log_attempt("a", "a#1", Attempt("retry", 503, 12.5, "HTTP 503", 7.0), T0)
    queue.log_attempt("a", "a#1", Attempt("delivered", 200, 3.25, None), T0 + 10)
    queue.log_attempt("b", "b#1", Attempt("gone", 410, 1.0, "gone"), T0 + 20)
    assert queue.attempts("a") == [
        {"job_id": "a#1", "at_ms": T0 + 10, "outcome": "delivered", "status": 200, "latency_ms": 3.25, "error": None},
        {"job_id": "a#1", "at_ms": T0, "outcome": "retry", "status": 503, "latency_ms": 12.5, "error": "HTTP 503"},
    ]
    assert len(queue.attempts("a", limit=1)) == 1
    queue.prune(older_than_ms=T0 + 5)
    assert [a["at_ms"] for a in queue.attempts("a")] == [T0 + 10]


def test_pruning_forgets_delivered_ids(queue: DeliveryQueue) -> None:
    queue.enqueue([job("a", 1)])
    [head] = queue.claim(now_ms=T0, limit=1, lease_ms=LEASE)
    queue.complete(head.job_id)
    queue.prune(older_than_ms=2**62)
    queue.enqueue([job("a", 1)])
    assert ids(queue.claim(now_ms=T0, limit=1, lease_ms=LEASE)) == ["a#1"]


def test_concurrent_claimers_never_share_a_group(queue: DeliveryQueue) -> None:
    queue.enqueue([job(f"g{g}", n) for g in range(20) for n in range(5)])
    got: list[str] = []
    lock = threading.Lock()

    def claimer() -> None:
        for _ in range(10):
            claimed = queue.claim(now_ms=T0, limit=3, lease_ms=LEASE)
            with lock:
                got.extend(c.group for c in claimed)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"g{g}" for g in range(20))


def test_a_process_killed_mid_delivery_loses_nothing(tmp_path: Any) -> None:
    """A real crash: another process enqueues, claims and dies (``os._exit``) before settling; after
    the lease the job is claimed again here, same id and payload, and the group's order holds."""
    import subprocess
    import sys
    import textwrap

    from fhirflow.adapters.sqlite.database import SqliteDatabase
    from fhirflow.adapters.sqlite.deliveries import SqliteDeliveryQueue

    path = tmp_path / "crash.sqlite3"
    script = textwrap.dedent(
        f"""
        import os
        from fhirflow.adapters.sqlite.database import SqliteDatabase
        from fhirflow.adapters.sqlite.deliveries import SqliteDeliveryQueue
        from fhirflow.delivery_ports import DeliveryJob
        q = SqliteDeliveryQueue(SqliteDatabase({str(path)!r}))
        q.enqueue([DeliveryJob("s", f"s#{{n}}", b"p%d" % n, {T0}) for n in range(3)])
        [head] = q.claim(now_ms={T0}, limit=5, lease_ms={LEASE})
        print(head.job_id, flush=True)
        os._exit(9)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 9, done.stderr
    assert done.stdout.strip() == "s#0"
    queue = SqliteDeliveryQueue(SqliteDatabase(path))
    assert queue.claim(now_ms=T0 + 1, limit=5, lease_ms=LEASE) == []
    seen = []
    now = T0 + LEASE
    while claimed := queue.claim(now_ms=now, limit=5, lease_ms=LEASE):
        [head] = claimed
        seen.append((head.job_id, head.payload))
        queue.complete(head.job_id)
    assert seen == [("s#0", b"p0"), ("s#1", b"p1"), ("s#2", b"p2")]


def test_an_enqueue_joins_the_producer_s_transaction(tmp_path: Any) -> None:
    """Enqueued inside the producer's write transaction: rolled back with it, committed with it."""
    from fhirflow.adapters.sqlite.database import SqliteDatabase
    from fhirflow.adapters.sqlite.deliveries import SqliteDeliveryQueue

    db = SqliteDatabase(tmp_path / "joined.sqlite3")
    queue = SqliteDeliveryQueue(db)

    def failing_producer() -> None:
        with db.write():
            queue.enqueue([job("a", 1)])
            raise RuntimeError("the producer failed before its commit")

    with pytest.raises(RuntimeError):
        failing_producer()
    assert queue.claim(now_ms=T0, limit=5, lease_ms=LEASE) == []
    with db.write():
        queue.enqueue([job("a", 2)])
    assert ids(queue.claim(now_ms=T0, limit=5, lease_ms=LEASE)) == ["a#2"]


def test_a_deliverer_that_overran_its_lease_cannot_reschedule_the_new_holder(queue: DeliveryQueue) -> None:
    queue.enqueue([job("a", 1)])
    [stale] = queue.claim(now_ms=T0, limit=1, lease_ms=LEASE)
    [fresh] = queue.claim(now_ms=T0 + LEASE, limit=1, lease_ms=LEASE)  # the first one hung past its lease
    queue.retry(stale.job_id, not_before_ms=T0 + LEASE + 1, attempts=1, leased_until_ms=stale.leased_until_ms)
    assert queue.claim(now_ms=T0 + LEASE + 1, limit=1, lease_ms=LEASE) == []  # still the new holder's
    queue.retry(fresh.job_id, not_before_ms=T0 + LEASE + 2, attempts=1, leased_until_ms=fresh.leased_until_ms)
    [again] = queue.claim(now_ms=T0 + LEASE + 2, limit=1, lease_ms=LEASE)
    assert (again.job_id, again.attempts) == ("a#1", 1)
