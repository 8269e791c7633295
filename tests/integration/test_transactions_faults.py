"""Fault injection on the multi-batch commit protocol (DynamoDB Local).

A transaction of 12 changes (10 creates, 2 updates of existing resources) in batches of 4 runs
through the bundle workflow on the LocalRunner, one batch at a time, and is interrupted after
each of its tasks in turn: either the process dies there (a ``BaseException`` nothing handles),
or the task fails with an ordinary exception (the workflow's Retry/Catch take over). Then the
sweeper runs, as its schedule would once the transaction is past due. Every case must end all or
nothing, checked by reading the table's items directly, and a reader thread that keeps reading
the twelve resources throughout must never see the new state and then the old one again, nor any
new state of a transaction that ends rolled back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from fhirflow.adapters.aws import items
from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore
from fhirflow.adapters.aws.dynamodb_transactions import ABORTED, DONE, DynamoDbTransactions
from fhirflow.adapters.memory import InMemoryBlobStore
from fhirflow.ports import Change, ResourceVersion
from fhirflow.workflow import LocalRunner
from fhirflow_bundle.transaction.definition import transaction_workflow
from fhirflow_bundle.transaction.steps import TransactionSteps

T0 = 1_700_000_000_000
CREATES, UPDATES, BATCH = 10, 2, 4
TASK_ORDER = ["StageBatch"] * 3 + ["LockBatch"] * 3 + ["Commit"] + ["ApplyBatch"] * 3 + ["Finish"]
"""The tasks of the transaction in the order a Map concurrency of 1 runs them."""
COMMIT_TASK = TASK_ORDER.index("Commit") + 1
"""Interrupted after this many tasks or more, the transaction has committed."""
FAR_FUTURE = 2**60


class Killed(BaseException):
    """The process dies here: no Catch, no Retry, no finally in the workflow sees it."""


class Injected(Exception):
    """A task fails here (after doing its work), as a Lambda timing out would."""


def version(tenant: str, id_: str, number: int, marker: str) -> ResourceVersion:
    body = orjson.dumps({"resourceType": "Basic", "id": id_, "meta": {"versionId": str(number)}, "marker": marker})
    return ResourceVersion(tenant, "Basic", id_, number, T0 + number, False, "PUT" if number > 1 else "POST", body)


@dataclass
class Read:
    started: float
    ended: float
    id: str
    version: int | None


@dataclass
class Reader:
    """Reads every resource of the transaction, over and over, until stopped."""

    store: DynamoDbResourceStore
    tenant: str
    ids: list[str]
    reads: list[Read] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for id_ in self.ids:
                    started = time.monotonic()
                    found = self.store.current(self.tenant, "Basic", id_)
                    self.reads.append(Read(started, time.monotonic(), id_, found.version if found else None))
        except BaseException as exc:
            self.errors.append(exc)


@dataclass
class Case:
    store: DynamoDbResourceStore
    transactions: DynamoDbTransactions
    tenant: str
    created: list[str]
    updated: list[str]
    changes: list[Change]

    @property
    def ids(self) -> list[str]:
        return self.created + self.updated

    def old(self, id_: str) -> int | None:
        return 1 if id_ in self.updated else None

    def new(self, id_: str) -> int:
        return 2 if id_ in self.updated else 1

    def runner(self, after_task: Any) -> LocalRunner:
        steps = TransactionSteps(
            store=self.store, transactions=self.transactions, jobs=None, app_factory=None, direct_max_items=0
        )
        workflow = transaction_workflow(max_concurrency=1)
        return LocalRunner(workflow, steps.tasks(), max_concurrency=1, after_task=after_task, sleep=lambda _: None)


@pytest.fixture
def case(shared_tables, tenant) -> Case:
    store = DynamoDbResourceStore(shared_tables.resources, client=shared_tables.client, blobs=InMemoryBlobStore())
    transactions = DynamoDbTransactions(store, batch_items=BATCH)
    updated = [f"u{n}" for n in range(UPDATES)]
    store.commit([Change(version(tenant, id_, 1, "before"), None) for id_ in updated])
    created = [f"c{n}" for n in range(CREATES)]
    changes = [Change(version(tenant, id_, 1, "tx"), None) for id_ in created]
    changes += [Change(version(tenant, id_, 2, "tx"), 1) for id_ in updated]
    return Case(store, transactions, tenant, created, updated, changes)


def run_interrupted(case: Case, after: int, fault: type[BaseException]) -> tuple[str, Reader]:
    """Prepare, run the workflow until the fault after ``after`` tasks, sweep; returns the tx id."""
    reader = Reader(DynamoDbResourceStore(case.store.table, client=case.store.client), case.tenant, case.ids)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    try:
        prepared = case.transactions.prepare(case.changes)
        assert prepared.batches == len(TASK_ORDER[:3])
        done: list[str] = []

        def after_task(name: str, output: Any) -> None:
            done.append(name)
            if len(done) == after:
                raise fault(f"after {name}")

        if after > 0:
            try:
                execution = case.runner(after_task).run(prepared.workflow_input())
                assert fault is Injected or after > len(TASK_ORDER), "the process should have died"
                assert execution.status == "SUCCEEDED", execution
            except Killed:
                assert done[:after] == TASK_ORDER[:after]
        time.sleep(0.05)  # let the reader see the interrupted state
        case.transactions.sweep(now_ms=FAR_FUTURE)
        time.sleep(0.05)
    finally:
        reader.stop.set()
        thread.join(30)
    assert not reader.errors, reader.errors
    return prepared.tx_id, reader


def assert_all_or_nothing(case: Case, tx_id: str, *, committed: bool) -> None:
    """Straight from the table: heads, version items, staged items, the record."""
    client, table = case.store.client, case.store.table
    for id_ in case.ids:
        pk = items.resource_pk(case.tenant, "Basic", id_)
        rows = client.query(
            TableName=table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}},
            ConsistentRead=True,
        )["Items"]
        by_sk = {row["sk"]["S"]: row for row in rows}
        assert not [sk for sk in by_sk if sk.startswith(items.STAGED_PREFIX)], f"{id_}: staged items left"
        expected = case.new(id_) if committed else case.old(id_)
        head = by_sk.get(items.HEAD)
        if expected is None:
            assert head is None, f"{id_}: a head exists for a create that was rolled back"
            assert not [sk for sk in by_sk if sk.startswith(items.VERSION_PREFIX)]
            continue
        assert head is not None, f"{id_}: no head"
        assert items.LOCK not in head, f"{id_}: still locked"
        assert items.PENDING not in head, f"{id_}: still pending"
        assert int(head[items.VERSION]["N"]) == expected, f"{id_}: head at {head[items.VERSION]['N']}"
        versions = sorted(int(sk[len(items.VERSION_PREFIX) :]) for sk in by_sk if sk.startswith(items.VERSION_PREFIX))
        assert versions == list(range(1, expected + 1)), f"{id_}: versions {versions}"
        marker = orjson.loads(head[items.BODY]["B"])["marker"]
        assert marker == ("tx" if committed else "before")
    record = client.get_item(TableName=table, Key=items.tx_key(tx_id), ConsistentRead=True)["Item"]
    assert record[items.TX_STATE]["S"] == (DONE if committed else ABORTED)
    assert items.TX_OPEN not in record, "the transaction is still listed for the sweeper"


def assert_readers_saw_no_partial_state(case: Case, reader: Reader, *, committed: bool) -> None:
    assert reader.reads, "the reader read nothing"
    for read in reader.reads:
        assert read.version in (case.old(read.id), case.new(read.id)), read
    newer = [r for r in reader.reads if r.version == case.new(r.id) and r.version != case.old(r.id)]
    if not committed:
        assert not newer, f"a reader saw {newer[0]} of a transaction that was rolled back"
        return
    if newer:
        # Once any reader has seen the transaction, every read that starts later sees all of it.
        first_seen = min(r.ended for r in newer)
        stale = [r for r in reader.reads if r.started > first_seen and r.version != case.new(r.id)]
        assert not stale, f"after the new state was seen at {first_seen}, {stale[0]} saw the old one"


@pytest.mark.parametrize(
    "after", range(len(TASK_ORDER) + 1), ids=lambda n: f"killed-after-{(['prepare', *TASK_ORDER])[n]}-{n}"
)
def test_a_crash_after_any_step_ends_all_or_nothing(case: Case, after: int) -> None:
    tx_id, reader = run_interrupted(case, after, Killed)
    committed = after >= COMMIT_TASK
    assert_all_or_nothing(case, tx_id, committed=committed)
    assert_readers_saw_no_partial_state(case, reader, committed=committed)


@pytest.mark.parametrize("after", range(1, len(TASK_ORDER) + 1), ids=lambda n: f"failing-{TASK_ORDER[n - 1]}-{n}")
def test_a_task_failing_after_any_step_ends_all_or_nothing(case: Case, after: int) -> None:
    tx_id, reader = run_interrupted(case, after, Injected)
    # A failure after the commit point's write is caught like any other; the rollback then finds
    # the transaction committed and applies it instead.
    committed = after >= COMMIT_TASK
    assert_all_or_nothing(case, tx_id, committed=committed)
    assert_readers_saw_no_partial_state(case, reader, committed=committed)


def test_a_rollback_interrupted_half_way_is_finished_by_the_sweeper(case: Case) -> None:
    prepared = case.transactions.prepare(case.changes)
    for batch in range(prepared.batches):
        case.transactions.stage(prepared.tx_id, batch)
        case.transactions.lock(prepared.tx_id, batch)
    assert case.transactions.decide_abort(prepared.tx_id) == ABORTED
    case.transactions._undo(prepared.tx_id, 0)  # then the rollback's process dies
    assert prepared.tx_id in case.transactions.due(now_ms=FAR_FUTURE)
    assert case.store.current(case.tenant, "Basic", case.updated[0]).version == 1  # readers: the old state
    case.transactions.sweep(now_ms=FAR_FUTURE)
    assert_all_or_nothing(case, prepared.tx_id, committed=False)


def test_the_sweeper_aborting_a_slow_transaction_stops_its_workflow(case: Case) -> None:
    prepared = case.transactions.prepare(case.changes)
    case.transactions.stage(prepared.tx_id, 0)
    case.transactions.sweep(now_ms=FAR_FUTURE)  # the workflow is too slow: its time is up
    execution = case.runner(None).run(prepared.workflow_input())
    assert execution.status == "SUCCEEDED"
    assert execution.output["status"] == "aborted"
    assert execution.output["error"]["Error"] == "TransactionAborted"
    assert_all_or_nothing(case, prepared.tx_id, committed=False)


def test_writers_settle_what_a_decided_transaction_left_on_their_resource(case: Case) -> None:
    """A crash after the commit point leaves locked heads; a writer applies that resource itself
    instead of waiting for the sweeper. An undecided transaction's lock is a 409 to retry."""
    from fhirflow.adapters.aws.dynamodb_store import ResourceLocked

    prepared = case.transactions.prepare(case.changes)
    for batch in range(prepared.batches):
        case.transactions.stage(prepared.tx_id, batch)
        case.transactions.lock(prepared.tx_id, batch)
    target = case.updated[0]
    later = Change(version(case.tenant, target, 2, "later"), 1)
    with pytest.raises(ResourceLocked):
        case.store.commit([later])  # PREPARED: the transaction holds the resource
    case.transactions.commit(prepared.tx_id)
    assert case.store.current(case.tenant, "Basic", target).version == 2  # read rolls forward
    case.store.commit([Change(version(case.tenant, target, 3, "later"), 2)])
    assert case.store.current(case.tenant, "Basic", target).version == 3
    assert case.store.version(case.tenant, "Basic", target, 2).body is not None  # applied by the writer
    case.transactions.sweep(now_ms=FAR_FUTURE)
    assert case.store.transaction_state(prepared.tx_id, cached=False) == DONE
