"""``DynamoDbTransactions``: FHIR transactions of any size on DynamoDB, all or nothing for readers.

One TransactWriteItems is atomic only within itself. A transaction larger than that commits
through this protocol (DESIGN.md §3; docs/dynamodb.md, "Transactions"), one step per state of
the bundle workflow:

1. **prepare** (in the caller): group the changes by resource, pack them into batches of at most
   ``batch_items`` versions, write each batch to the blob store (bodies over the threshold first),
   then put the transaction record ``PREPARED``.
2. **stage** (per batch): put each new version as a *staged* item (``s#{tx}#{version}``), which no
   read, history or stream consumer treats as a version.
3. **lock** (per batch): conditionally lock each head (``lk = tx``) where it is still at the
   expected version and unlocked; a resource the transaction creates gets a *pending* head. A
   failed condition is a ``TransactionConflict`` naming the change.
4. **commit**: one conditional write of the record, ``PREPARED → COMMITTED``. This is the commit
   point: from here readers roll forward to the staged versions.
5. **apply** (per batch): per resource, in one TransactWriteItems, put the version items (whose
   stream INSERTs index-sync announces), put the new head (unlocking it) and delete the staged
   items. Repeating it is harmless: what is already applied fails its condition and is dropped.
6. **finish**: ``COMMITTED → DONE``, leave the sweeper's index.

**rollback** first decides (``PREPARED → ABORTED``, conditionally, so it can never race a commit),
then deletes staged items and releases the transaction's locks, batch by batch. Whichever of the
two conditional writes on the record comes first wins; the other side finds the decision.

Every step checks the record before it writes, stage and lock again after: a step that lost a
race with the sweeper's abort removes what it just wrote. A lock left behind anyway (a crash at
exactly that moment) belongs to an aborted transaction, which any writer may release
(:meth:`DynamoDbTransactions.settle`). The **sweeper** takes over every transaction whose record
is past its due time (``open-transactions`` GSI, no scan): PREPARED ones are rolled back,
COMMITTED ones applied and finished, so a crash at any step ends all-or-nothing.

The prepared batches live in the blob store (:mod:`fhirflow.adapters.aws.dynamodb_transaction_batches`);
the TransactWriteItems helpers are in :mod:`fhirflow.adapters.aws.dynamodb_transact`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from fhirflow.adapters.aws import clients, items
from fhirflow.adapters.aws.dynamodb_transact import (
    ConditionsFailed,
    batch_delete,
    chunks,
    first_conflict,
    transact,
    transact_tolerant,
)
from fhirflow.adapters.aws.dynamodb_transaction_batches import (
    PreparedBatches,
    StagedChange,
    by_resource,
    pack,
    resource_pk,
    to_offload,
)
from fhirflow.errors import PayloadTooLarge
from fhirflow.ports import Change, ResourceVersion

if TYPE_CHECKING:
    from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore

logger = logging.getLogger("fhirflow.transactions")

PREPARED, COMMITTED, DONE, ABORTED = "PREPARED", "COMMITTED", "DONE", "ABORTED"
COMMITTED_STATES = frozenset({COMMITTED, DONE})
DEFAULT_BATCH_ITEMS = 25
DEFAULT_TIMEOUT_SECONDS = 300
DEFAULT_APPLY_GRACE_SECONDS = 30


class TransactionConflict(Exception):
    """A head was not at the version the transaction expected, or another transaction holds it;
    or (``claim``) a uniqueness claim of a conditional create did not hold, ``owner`` holding it.

    The message is JSON (``{"index": ..., "current": ...}``): it travels through Step Functions as
    the error's cause, and the caller turns it back into a ``VersionConflict`` (``ClaimTaken``)."""

    def __init__(self, index: int, current: int | None, *, claim: bool = False, owner: str | None = None) -> None:
        found: dict[str, Any] = {"index": index, "current": current}
        if claim:
            found.update(claim=True, owner=owner)
        super().__init__(json.dumps(found))
        self.index = index
        self.current = current
        self.claim = claim
        self.owner = owner

    @staticmethod
    def parse_claim(message: str) -> tuple[int, str | None] | None:
        """(index, owner) when the message is a claim's conflict, else None."""
        try:
            found = json.loads(message)
            if not found.get("claim"):
                return None
            owner = found.get("owner")
            return int(found["index"]), str(owner) if owner is not None else None
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    @staticmethod
    def parse(message: str) -> tuple[int, int | None] | None:
        try:
            found = json.loads(message)
            current = found.get("current")
            return int(found["index"]), int(current) if current is not None else None
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


class TransactionAborted(Exception):
    """The transaction is no longer PREPARED: it was aborted (by the sweeper, after its timeout)."""


class TransactionNotCommitted(Exception):
    """Apply was asked for a transaction that has not committed."""


@dataclass(frozen=True, slots=True)
class PreparedTransaction:
    tx_id: str
    batches: int

    def workflow_input(self) -> dict[str, Any]:
        """What the workflow starts from (small: the batches themselves stay in the blob store)."""
        return {"txId": self.tx_id, "batches": list(range(self.batches))}


@dataclass(frozen=True, slots=True)
class SweepResult:
    tx_id: str
    outcome: str
    """``committed``, ``aborted``, or ``failed`` (left for the next sweep)."""


class DynamoDbTransactions:
    def __init__(
        self,
        store: DynamoDbResourceStore,
        *,
        batch_items: int = DEFAULT_BATCH_ITEMS,
        timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
        apply_grace_seconds: int = DEFAULT_APPLY_GRACE_SECONDS,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if not 3 <= batch_items <= 100:
            raise ValueError("batch_items must be between 3 and 100 (TransactWriteItems' limit)")
        self.store = store
        self.batch_items = batch_items
        self.timeout_ms = timeout_seconds * 1000
        self.apply_grace_ms = apply_grace_seconds * 1000
        self.now_ms = clock or (lambda: time.time_ns() // 1_000_000)
        self.batches = PreparedBatches(store)

    @property
    def client(self) -> Any:
        return self.store.client

    @property
    def table(self) -> str:
        return self.store.table

    # -- 1. prepare --------------------------------------------------------------------------------

    def prepare(self, changes: Sequence[Change], *, request_id: str = "") -> PreparedTransaction:
        """Write the batches and the PREPARED record; nothing is visible to anyone yet."""
        from fhirflow.adapters.aws.dynamodb_store import _group_by_resource

        if not changes:
            raise ValueError("a transaction needs at least one change")
        groups = sorted(_group_by_resource(changes).items(), key=lambda kv: items.resource_pk(*kv[0]))
        widest = (self.batch_items - 1) // 2  # apply writes a head, a version and a staged delete per version
        for (_, type_, id_), members in groups:
            if len(members) > widest:
                raise PayloadTooLarge(f"{type_}/{id_} changes {len(members)} times; one transaction may take {widest}")
        tx_id = uuid.uuid4().hex
        written: list[StagedChange] = []
        claimed = frozenset(i for i, change in enumerate(changes) if change.claim is not None)
        batches = pack([members for _, members in groups], self.batch_items, extra=claimed)
        try:
            for number, indexes in enumerate(batches):
                offloaded = to_offload([changes[i] for i in indexes], self.store.blob_threshold)
                batch = [
                    self.batches.stage_body(tx_id, i, changes[i], offload=position in offloaded)
                    for position, i in enumerate(indexes)
                ]
                written.extend(batch)
                self.batches.write(tx_id, number, batch)
            now = self.now_ms()
            record = {
                **items.tx_key(tx_id),
                items.TX_STATE: {"S": PREPARED},
                items.TX_OPEN: {"S": items.OPEN},
                items.TX_DUE: {"N": str(now + self.timeout_ms)},
                items.TX_BATCHES: {"N": str(len(batches))},
                items.TX_STARTED: {"N": str(now)},
            }
            if request_id:
                record[items.REQUEST_ID] = {"S": request_id}
            with clients.translated("The data store"):
                self.client.put_item(TableName=self.table, Item=record, ConditionExpression="attribute_not_exists(pk)")
        except BaseException:
            self.batches.forget(tx_id, len(batches))
            self.batches.delete([s.blob for s in written if s.blob])
            raise
        logger.info("transaction prepared", extra={"tx": tx_id, "changes": len(changes), "batches": len(batches)})
        return PreparedTransaction(tx_id, len(batches))

    # -- 2. stage ---------------------------------------------------------------------------------

    def stage(self, tx_id: str, batch: int) -> None:
        self._require_prepared(tx_id)
        staged = self.batches.read(tx_id, batch)
        request = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": items.staged_item(s.change.new, s.blob, tx_id=tx_id, request_id=s.change.request_id),
                }
            }
            for s in staged
        ]
        for chunk in chunks(request, self.batch_items):
            transact(self.client, chunk)
        if self.store.transaction_state(tx_id, cached=False) != PREPARED:
            self._delete_staged(tx_id, staged)
            raise TransactionAborted(f"transaction {tx_id} was aborted while batch {batch} was staged")

    # -- 3. lock ----------------------------------------------------------------------------------

    def lock(self, tx_id: str, batch: int) -> None:
        self._require_prepared(tx_id)
        staged = self.batches.read(tx_id, batch)
        groups = by_resource(staged)
        request: list[dict[str, Any]] = []
        owners: list[int] = []
        for group in groups:
            request.append(self._lock_item(tx_id, group))
            owners.append(group[0].index)
        claims = [s for s in staged if s.change.claim is not None]
        for claimed in claims:  # taken with the heads: one TransactWriteItems of at most 2 x batch_items
            request.append(self._claim_lock_item(tx_id, claimed.change))
            owners.append(claimed.index)
        try:
            transact(self.client, request)
        except ConditionsFailed as failed:
            for position in sorted(failed.failed()):
                if position >= len(groups):
                    old = failed.reasons[position].get("Item") or {}
                    raise TransactionConflict(owners[position], None, claim=True, owner=items.owner_of(old)) from None
            conflict = first_conflict(failed.reasons, owners)
            if conflict is None:
                raise RuntimeError("a conditional check failed outside the locked heads") from failed
            index, current, _ = conflict
            raise TransactionConflict(index, current) from None
        if self.store.transaction_state(tx_id, cached=False) != PREPARED:
            release = self._release_items(tx_id, groups) + self._release_claims(tx_id, claims)
            transact_tolerant(self.client, release)
            raise TransactionAborted(f"transaction {tx_id} was aborted while batch {batch} was locked")

    def _claim_lock_item(self, tx_id: str, change: Change) -> dict[str, Any]:
        """Lock a uniqueness claim for the transaction: a new one must not exist (it is created
        pending, without an owner), a stale one must still name the owner the transaction found
        stale. Re-entrant like the head locks."""
        assert change.claim is not None
        new, claim = change.new, change.claim
        names = {"#lk": items.LOCK, "#lko": items.LOCK_OWNER, "#t": items.TENANT, "#ty": items.TYPE}
        values: dict[str, Any] = {
            ":tx": {"S": tx_id},
            ":owner": {"S": new.id},
            ":tenant": {"S": new.tenant},
            ":type": {"S": new.type},
        }
        if claim.replaces is None:
            condition = "attribute_not_exists(pk) OR #lk = :tx"
        else:
            condition = "(#o = :previous AND attribute_not_exists(#lk)) OR #lk = :tx"
            names["#o"] = items.OWNER
            values[":previous"] = {"S": claim.replaces}
        return {
            "Update": {
                "TableName": self.table,
                "Key": items.claim_key(new.tenant, new.type, claim.key),
                "UpdateExpression": "SET #lk = :tx, #lko = :owner, #t = :tenant, #ty = :type",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _lock_item(self, tx_id: str, group: list[StagedChange]) -> dict[str, Any]:
        first, last = group[0].change, group[-1].change
        new = last.new
        key = items.key(resource_pk(new), items.HEAD)
        names = {"#lk": items.LOCK}
        values: dict[str, Any] = {":tx": {"S": tx_id}}
        if first.expected_version is None:
            pending = {
                **key,
                items.TENANT: {"S": new.tenant},
                items.TYPE: {"S": new.type},
                items.ID: {"S": new.id},
                items.LOCK: {"S": tx_id},
                items.LOCK_VERSION: {"N": str(new.version)},
                items.PENDING: {"BOOL": True},
            }
            return {
                "Put": {
                    "TableName": self.table,
                    "Item": pending,
                    "ConditionExpression": "attribute_not_exists(pk) OR #lk = :tx",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        names.update({"#lkv": items.LOCK_VERSION, "#v": items.VERSION})
        values.update({":expected": {"N": str(first.expected_version)}, ":target": {"N": str(new.version)}})
        return {
            "Update": {
                "TableName": self.table,
                "Key": key,
                "UpdateExpression": "SET #lk = :tx, #lkv = :target",
                # Re-entrant: a retried lock step finds its own lock and succeeds again.
                "ConditionExpression": "(#v = :expected AND attribute_not_exists(#lk)) OR #lk = :tx",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    # -- 4. commit: the single write that decides -----------------------------------------------------

    def commit(self, tx_id: str) -> None:
        now = self.now_ms()
        try:
            self._update_record(
                tx_id,
                "SET #st = :committed, #due = :due, #cm = :now",
                "#st = :prepared",
                {":committed": {"S": COMMITTED}, ":prepared": {"S": PREPARED}},
                {":due": {"N": str(now + self.apply_grace_ms)}, ":now": {"N": str(now)}},
                extra_names={"#due": items.TX_DUE, "#cm": items.TX_COMMITTED},
            )
        except ConditionsFailed:
            state = self.store.transaction_state(tx_id, cached=False)
            if state in COMMITTED_STATES:
                return  # a retry of our own commit
            raise TransactionAborted(f"transaction {tx_id} is {state}, it cannot commit") from None
        logger.info("transaction committed", extra={"tx": tx_id})

    # -- 5. apply -----------------------------------------------------------------------------------

    def apply(self, tx_id: str, batch: int) -> None:
        state = self.store.transaction_state(tx_id, cached=False)
        if state not in COMMITTED_STATES:
            raise TransactionNotCommitted(f"transaction {tx_id} is {state}; only a committed one is applied")
        staged = self.batches.read(tx_id, batch, missing_ok=state == DONE)
        groups = [[(s.change.new, s.blob, s.change.request_id) for s in group] for group in by_resource(staged)]
        self._apply_groups(tx_id, groups)
        # Claims after the heads: readers already follow a committed transaction's claim locks, so
        # the two need not move together; a claim already applied fails its condition and is dropped.
        puts = [self._claim_apply_item(tx_id, s.change) for s in staged if s.change.claim is not None]
        for chunk in chunks(puts, self.batch_items):
            transact_tolerant(self.client, chunk)

    def _claim_apply_item(self, tx_id: str, change: Change) -> dict[str, Any]:
        assert change.claim is not None
        new = change.new
        return {
            "Put": {
                "TableName": self.table,
                "Item": items.claim_item(new.tenant, new.type, change.claim.key, new.id),  # the lock goes with it
                "ConditionExpression": "#lk = :tx",
                "ExpressionAttributeNames": {"#lk": items.LOCK},
                "ExpressionAttributeValues": {":tx": {"S": tx_id}},
            }
        }

    def _apply_groups(self, tx_id: str, groups: list[list[tuple[ResourceVersion, str | None, str]]]) -> None:
        request: list[dict[str, Any]] = []
        for group in groups:
            writes = self._apply_items(tx_id, group)
            if request and len(request) + len(writes) > self.batch_items:
                transact_tolerant(self.client, request)
                request = []
            request.extend(writes)  # one resource's writes stay in one TransactWriteItems
        if request:
            transact_tolerant(self.client, request)

    def _apply_items(self, tx_id: str, group: list[tuple[ResourceVersion, str | None, str]]) -> list[dict[str, Any]]:
        writes: list[dict[str, Any]] = []
        for stored, blob, request_id in group:
            version = items.version_item(stored, blob, request_id=request_id, shards=self.store.history_shards)
            writes.append(
                {"Put": {"TableName": self.table, "Item": version, "ConditionExpression": "attribute_not_exists(pk)"}}
            )
            staged_key = items.key(resource_pk(stored), items.staged_sk(tx_id, stored.version))
            writes.append({"Delete": {"TableName": self.table, "Key": staged_key}})
        last, blob, _ = group[-1]
        writes.append(
            {
                "Put": {
                    "TableName": self.table,
                    "Item": items.head_item(last, blob),  # replaces the head: the lock goes with it
                    "ConditionExpression": "#lk = :tx",
                    "ExpressionAttributeNames": {"#lk": items.LOCK},
                    "ExpressionAttributeValues": {":tx": {"S": tx_id}},
                }
            }
        )
        return writes

    # -- 6. finish ----------------------------------------------------------------------------------

    def finish(self, tx_id: str) -> None:
        try:
            self._update_record(
                tx_id,
                "SET #st = :done REMOVE #open",
                "#st IN (:committed, :done)",
                {":done": {"S": DONE}, ":committed": {"S": COMMITTED}},
                {},
                extra_names={"#open": items.TX_OPEN},
            )
        except ConditionsFailed:
            raise TransactionNotCommitted(f"transaction {tx_id} has not committed; it cannot finish") from None
        record = self._record(tx_id)
        self.batches.forget(tx_id, int(record[items.TX_BATCHES]["N"]) if record else 0)

    # -- rollback -------------------------------------------------------------------------------------

    def rollback(self, tx_id: str) -> str:
        """Abort unless the transaction has committed, then undo it. Returns ``aborted`` or ``committed``."""
        record = self._record(tx_id)
        if record is None:
            return "aborted"  # never prepared: nothing to undo
        if self.decide_abort(tx_id) in COMMITTED_STATES:
            return "committed"
        for number in range(int(record[items.TX_BATCHES]["N"])):
            self._undo(tx_id, number)
        self._update_record(
            tx_id, "REMOVE #open", "#st = :aborted", {":aborted": {"S": ABORTED}}, {}, {"#open": items.TX_OPEN}
        )
        self.batches.forget(tx_id, int(record[items.TX_BATCHES]["N"]))
        logger.info("transaction rolled back", extra={"tx": tx_id})
        return "aborted"

    def decide_abort(self, tx_id: str) -> str | None:
        """The single conditional write that aborts a PREPARED transaction; returns the state it is in after."""
        try:
            self._update_record(
                tx_id,
                "SET #st = :aborted, #due = :now",
                "#st = :prepared",
                {":aborted": {"S": ABORTED}, ":prepared": {"S": PREPARED}},
                {":now": {"N": str(self.now_ms())}},
                extra_names={"#due": items.TX_DUE},
            )
        except ConditionsFailed:
            return self.store.transaction_state(tx_id, cached=False)
        return ABORTED

    def _undo(self, tx_id: str, batch: int) -> None:
        staged = self.batches.read(tx_id, batch, missing_ok=True)
        claims = [s for s in staged if s.change.claim is not None]
        transact_tolerant(self.client, self._release_items(tx_id, by_resource(staged)))
        for chunk in chunks(self._release_claims(tx_id, claims), self.batch_items):
            transact_tolerant(self.client, chunk)
        self._delete_staged(tx_id, staged)

    def _release_items(self, tx_id: str, groups: list[list[StagedChange]]) -> list[dict[str, Any]]:
        # The lock step made a pending head exactly where the first change expected no resource.
        return [
            self._release_item(
                tx_id, resource_pk(group[0].change.new), pending=group[0].change.expected_version is None
            )
            for group in groups
        ]

    def _release_claims(self, tx_id: str, claims: list[StagedChange]) -> list[dict[str, Any]]:
        """Undo the claim locks: a claim the transaction created goes, a stale one it was replacing
        keeps its old owner. Only where the lock is still this transaction's."""
        out: list[dict[str, Any]] = []
        for staged in claims:
            new, claim = staged.change.new, staged.change.claim
            assert claim is not None
            out.append(
                self._release_claim_item(
                    tx_id, items.claim_key(new.tenant, new.type, claim.key), pending=claim.replaces is None
                )
            )
        return out

    def _release_claim_item(self, tx_id: str, key: items.Item, *, pending: bool) -> dict[str, Any]:
        common = {
            "TableName": self.table,
            "Key": key,
            "ConditionExpression": "#lk = :tx",
            "ExpressionAttributeValues": {":tx": {"S": tx_id}},
        }
        if pending:
            return {"Delete": {**common, "ExpressionAttributeNames": {"#lk": items.LOCK}}}
        return {
            "Update": {
                **common,
                "UpdateExpression": "REMOVE #lk, #lko",
                "ExpressionAttributeNames": {"#lk": items.LOCK, "#lko": items.LOCK_OWNER},
            }
        }

    def _release_item(self, tx_id: str, pk: str, *, pending: bool) -> dict[str, Any]:
        common = {
            "TableName": self.table,
            "Key": items.key(pk, items.HEAD),
            "ConditionExpression": "#lk = :tx",  # only our own lock, never another's head
            "ExpressionAttributeValues": {":tx": {"S": tx_id}},
        }
        if pending:
            return {"Delete": {**common, "ExpressionAttributeNames": {"#lk": items.LOCK}}}
        return {
            "Update": {
                **common,
                "UpdateExpression": "REMOVE #lk, #lkv",
                "ExpressionAttributeNames": {"#lk": items.LOCK, "#lkv": items.LOCK_VERSION},
            }
        }

    def _delete_staged(self, tx_id: str, staged: list[StagedChange]) -> None:
        keys = [items.key(resource_pk(s.change.new), items.staged_sk(tx_id, s.change.new.version)) for s in staged]
        batch_delete(self.client, self.table, keys)
        self.batches.delete([s.blob for s in staged if s.blob])

    # -- the sweeper ----------------------------------------------------------------------------------

    def due(self, *, now_ms: int | None = None, limit: int = 100) -> list[str]:
        """Unfinished transactions past their due time, oldest first (one Query on the sparse GSI)."""
        now = self.now_ms() if now_ms is None else now_ms
        with clients.translated("The data store"):
            reply = self.client.query(
                TableName=self.table,
                IndexName=items.OPEN_INDEX,
                KeyConditionExpression="#open = :open AND #due <= :now",
                ExpressionAttributeNames={"#open": items.TX_OPEN, "#due": items.TX_DUE},
                ExpressionAttributeValues={":open": {"S": items.OPEN}, ":now": {"N": str(now)}},
                Limit=limit,
            )
        return [items.tx_id_of(item) for item in reply.get("Items", [])]

    def sweep(self, *, now_ms: int | None = None, limit: int = 100) -> list[SweepResult]:
        """Finish or roll back every transaction that is past due; one failing does not stop the rest."""
        results: list[SweepResult] = []
        for tx_id in self.due(now_ms=now_ms, limit=limit):
            try:
                results.append(SweepResult(tx_id, self.resolve(tx_id)))
            except Exception:
                logger.exception("sweeper could not resolve a transaction", extra={"tx": tx_id})
                results.append(SweepResult(tx_id, "failed"))
        return results

    def resolve(self, tx_id: str) -> str:
        """Bring one transaction to its end whatever state it was left in: ``committed`` or ``aborted``."""
        record = self._record(tx_id)
        if record is None:
            return "aborted"
        if record[items.TX_STATE]["S"] in (PREPARED, ABORTED) and self.rollback(tx_id) == "aborted":
            return "aborted"
        for number in range(int(record[items.TX_BATCHES]["N"])):
            self.apply(tx_id, number)
        self.finish(tx_id)
        return "committed"

    # -- writers settle what a decided transaction left on one resource ----------------------------

    def settle(self, head: items.Item) -> bool:
        """Apply (committed) or release (aborted) one locked head; False while the transaction is undecided."""
        lock = items.lock_of(head)
        if lock is None:
            return False
        tx_id, _ = lock
        state = self.store.transaction_state(tx_id, cached=False)
        pk = str(head[items.PK]["S"])
        staged = self._staged_items(pk, tx_id)
        if state in COMMITTED_STATES:
            group = [(*items.decode(item), str(item.get(items.REQUEST_ID, {}).get("S", ""))) for item in staged]
            if not group:
                return False
            transact_tolerant(self.client, self._apply_items(tx_id, group))
            return True
        if state == ABORTED:
            transact_tolerant(self.client, [self._release_item(tx_id, pk, pending=items.is_pending(head))])
            batch_delete(self.client, self.table, [items.key(pk, str(item[items.SK]["S"])) for item in staged])
            return True
        return False

    def settle_claim(self, claim: items.Item) -> bool:
        """Apply (committed) or release (aborted) one locked claim; False while undecided."""
        lock = items.claim_lock_of(claim)
        if lock is None:
            return False
        tx_id, owner = lock
        state = self.store.transaction_state(tx_id, cached=False)
        key = items.key(str(claim[items.PK]["S"]), items.CLAIM_SK)
        if state in COMMITTED_STATES:
            item = {**key, items.TENANT: claim[items.TENANT], items.TYPE: claim[items.TYPE], items.OWNER: {"S": owner}}
            put = {
                "Put": {
                    "TableName": self.table,
                    "Item": item,
                    "ConditionExpression": "#lk = :tx",
                    "ExpressionAttributeNames": {"#lk": items.LOCK},
                    "ExpressionAttributeValues": {":tx": {"S": tx_id}},
                }
            }
            transact_tolerant(self.client, [put])
            return True
        if state == ABORTED:
            release = self._release_claim_item(tx_id, key, pending=items.owner_of(claim) is None)
            transact_tolerant(self.client, [release])
            return True
        return False

    def _staged_items(self, pk: str, tx_id: str) -> list[items.Item]:
        with clients.translated("The data store"):
            reply = self.client.query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :staged)",
                ExpressionAttributeValues={":pk": {"S": pk}, ":staged": {"S": items.staged_prefix(tx_id)}},
                ConsistentRead=True,
            )
        found: list[items.Item] = reply.get("Items", [])
        return found

    # -- the record and TransactWriteItems --------------------------------------------------------------

    def _record(self, tx_id: str) -> items.Item | None:
        with clients.translated("The data store"):
            reply = self.client.get_item(TableName=self.table, Key=items.tx_key(tx_id), ConsistentRead=True)
        record: items.Item | None = reply.get("Item")
        return record

    def _require_prepared(self, tx_id: str) -> None:
        state = self.store.transaction_state(tx_id, cached=False)
        if state != PREPARED:
            raise TransactionAborted(f"transaction {tx_id} is {state}, not PREPARED")

    def _update_record(
        self,
        tx_id: str,
        update: str,
        condition: str,
        states: dict[str, Any],
        values: dict[str, Any],
        extra_names: dict[str, str],
    ) -> None:
        try:
            with clients.translated("The data store"):
                self.client.update_item(
                    TableName=self.table,
                    Key=items.tx_key(tx_id),
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#st": items.TX_STATE, **extra_names},
                    ExpressionAttributeValues={**states, **values},
                )
        except ClientError as exc:
            if clients.error_code(exc) == "ConditionalCheckFailedException":
                raise ConditionsFailed([]) from exc
            raise
