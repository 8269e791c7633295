"""``DynamoDbResourceStore``: the system of record in AWS (DESIGN.md §3, docs/dynamodb.md).

A read is one strongly consistent GetItem on the resource's head item. A commit is one
TransactWriteItems: per resource a conditional Put of the head (``v = expected``, or no head
for a create — the same check that implements ``If-Match``) and per change a Put of the new,
immutable version item. Version items are what the stream carries to index-sync. Bodies over
the threshold go to the BlobStore (S3) first; the items then hold the blob's key.

Transactions too large for one TransactWriteItems commit through the multi-batch protocol of
:mod:`fhirflow.adapters.aws.dynamodb_transactions`, which locks heads while it runs. Readers
here follow its rule: a head locked by a committed transaction is read as the version that
transaction brings (roll forward), any other locked head as it stands, and a pending head (a
resource the transaction creates) as absent. A direct commit never overwrites a locked head.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from fhirflow.adapters.aws import clients, items
from fhirflow.adapters.aws.dynamodb_history import HistoryReader
from fhirflow.adapters.aws.dynamodb_transact import first_conflict
from fhirflow.adapters.offload import BODY_CONTENT_TYPE, body_key
from fhirflow.errors import Conflict, PayloadTooLarge, ServiceUnavailable
from fhirflow.ports import BlobStore, Change, ClaimTaken, HistoryPage, HistoryQuery, ResourceVersion, VersionConflict

MAX_TRANSACTION_ITEMS = 100
"""TransactWriteItems' limit per call."""
TRANSACTION_BYTES_BUDGET = 3_500_000
"""Below the 4 MB a transaction may carry in total; bodies are moved to S3 to stay under it."""
DEFAULT_BLOB_THRESHOLD = 64 * 1024
"""Bodies larger than this go to the blob store (an item may be 400 KB, but small items are cheaper)."""
_ITEM_OVERHEAD = 512
_CONFLICT_RETRIES = 4
_THROTTLE_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"})


class TooManyChanges(PayloadTooLarge):
    """More changes than one TransactWriteItems holds: larger FHIR transactions go through the
    multi-batch commit protocol (``DynamoDbTransactions``), which the bundle service chooses."""


class ResourceLocked(Conflict):
    """The resource is locked by a multi-batch transaction that has not decided yet (409, retry)."""


_TX_CACHE_SIZE = 4096
_FINAL_TX_STATES = frozenset({"COMMITTED", "DONE", "ABORTED"})
_COMMITTED_TX_STATES = frozenset({"COMMITTED", "DONE"})


class DynamoDbResourceStore:
    def __init__(
        self,
        table: str,
        *,
        client: Any = None,
        blobs: BlobStore | None = None,
        blob_threshold: int = DEFAULT_BLOB_THRESHOLD,
        history_shards: int = 4,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self.table = table
        self.client = client or clients.lazy_client("dynamodb", endpoint_url=endpoint_url, region=region)
        self.blobs = blobs
        self.blob_threshold = blob_threshold
        self.history_shards = history_shards
        self._history = HistoryReader(self)
        self._tx_states: OrderedDict[str, str] = OrderedDict()
        self._tx_lock = threading.Lock()

    # -- reads -------------------------------------------------------------------------------

    def current(self, tenant: str, type_: str, id_: str) -> ResourceVersion | None:
        pk = items.resource_pk(tenant, type_, id_)
        for _ in range(3):
            head = self._get_item(items.key(pk, items.HEAD))
            if head is None:
                return None
            lock = items.lock_of(head)
            if lock is None:
                return self.with_body(head)
            tx_id, target = lock
            if not self.is_committed(tx_id):
                return None if items.is_pending(head) else self.with_body(head)
            # Roll forward: the version is applied (v#) or still staged (s#); apply moves it from
            # one to the other atomically, so one of the two reads finds it unless a newer write
            # came in between, and then the head is read again.
            new = self._get_item(items.key(pk, items.version_sk(target))) or self._get_item(
                items.key(pk, items.staged_sk(tx_id, target))
            )
            if new is not None:
                return self.with_body(new)
        raise ServiceUnavailable("The resource is changing too fast to read; retry", headers={"Retry-After": "1"})

    def version(self, tenant: str, type_: str, id_: str, version: int) -> ResourceVersion | None:
        if version < 1:
            return None
        pk = items.resource_pk(tenant, type_, id_)
        found = self._get(items.key(pk, items.version_sk(version)))
        if found is not None:
            return found
        # A version a committed transaction brings is readable before the transaction's apply step.
        head = self._get_item(items.key(pk, items.HEAD))
        lock = items.lock_of(head) if head else None
        if lock is None or version > lock[1] or not self.is_committed(lock[0]):
            return None
        return self._get(items.key(pk, items.staged_sk(lock[0], version)))

    def _get(self, key: items.Item) -> ResourceVersion | None:
        item = self._get_item(key)
        return self.with_body(item) if item else None

    def _get_item(self, key: items.Item) -> items.Item | None:
        with clients.translated("The data store"):
            reply = self.client.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        item: items.Item | None = reply.get("Item")
        return item

    def transaction_state(self, tx_id: str, *, cached: bool = True) -> str | None:
        """A multi-batch transaction's state (PREPARED, COMMITTED, DONE, ABORTED) or None.

        Decided states never change back (COMMITTED only moves on to DONE), so readers cache them."""
        if cached:
            with self._tx_lock:
                if tx_id in self._tx_states:
                    self._tx_states.move_to_end(tx_id)
                    return self._tx_states[tx_id]
        record = self._get_item(items.tx_key(tx_id))
        state = str(record[items.TX_STATE]["S"]) if record else None
        if state in _FINAL_TX_STATES:
            with self._tx_lock:
                self._tx_states[tx_id] = state
                while len(self._tx_states) > _TX_CACHE_SIZE:
                    self._tx_states.popitem(last=False)
        return state

    def is_committed(self, tx_id: str) -> bool:
        return self.transaction_state(tx_id) in _COMMITTED_TX_STATES

    def with_body(self, item: items.Item) -> ResourceVersion:
        """Decode an item, fetching its body from the blob store when it lives there."""
        stored, blob = items.decode(item)
        if blob is None:
            return stored
        if self.blobs is None:
            raise RuntimeError("a version's body is in the blob store, but none is configured")
        return replace(stored, body=self.blobs.get(blob))

    def history(self, query: HistoryQuery) -> HistoryPage:
        return self._history.page(query)

    def claim_owner(self, tenant: str, type_: str, key: str) -> str | None:
        """The claim item's owner; a claim locked by a multi-batch transaction reads like a head:
        the owner that transaction brings once it has committed, the one it had until then."""
        item = self._get_item(items.claim_key(tenant, type_, key))
        if item is None:
            return None
        lock = items.claim_lock_of(item)
        if lock is not None and self.is_committed(lock[0]):
            return lock[1]
        return items.owner_of(item)

    # -- commit ------------------------------------------------------------------------------

    def commit(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        groups = _group_by_resource(changes)
        item_count = len(changes) + len(groups) + sum(1 for c in changes if c.claim is not None)
        if item_count > MAX_TRANSACTION_ITEMS:
            raise TooManyChanges(
                f"{len(changes)} changes to {len(groups)} resources need {item_count} transaction items, and one "
                f"DynamoDB transaction holds {MAX_TRANSACTION_ITEMS}; split the transaction into smaller ones"
            )
        offloaded = self._offload(changes, groups)
        try:
            request, owners = self._transaction(changes, groups, offloaded)
            self._write(request, owners, changes)
        except BaseException:
            self._forget_blobs(offloaded.values())
            raise

    def _offload(self, changes: Sequence[Change], groups: dict[tuple[str, str, str], list[int]]) -> dict[int, str]:
        """Move bodies to the blob store: those over the threshold, then the largest until the
        whole transaction fits its size budget (a head repeats its resource's last body)."""
        weight = dict.fromkeys(range(len(changes)), 1)
        for members in groups.values():
            weight[members[-1]] = 2
        inline = {i: len(c.new.body) for i, c in enumerate(changes) if c.new.body is not None}
        chosen = [i for i, size in inline.items() if size > self.blob_threshold]
        for i in chosen:
            del inline[i]
        total = sum(size * weight[i] for i, size in inline.items()) + _ITEM_OVERHEAD * (len(changes) + len(groups))
        for i in sorted(inline, key=lambda i: inline[i] * weight[i], reverse=True):
            if total <= TRANSACTION_BYTES_BUDGET:
                break
            total -= inline[i] * weight[i]
            chosen.append(i)
        if chosen and self.blobs is None:
            raise RuntimeError("a body is too large for a DynamoDB item and no blob store is configured")
        offloaded: dict[int, str] = {}
        try:
            for i in sorted(chosen):
                new = changes[i].new
                assert self.blobs is not None
                assert new.body is not None
                key = body_key(new.tenant, new.type, new.id, new.version)
                self.blobs.put(key, new.body, content_type=BODY_CONTENT_TYPE)
                offloaded[i] = key
        except BaseException:
            self._forget_blobs(offloaded.values())
            raise
        return offloaded

    def _transaction(
        self, changes: Sequence[Change], groups: dict[tuple[str, str, str], list[int]], offloaded: dict[int, str]
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """The TransactItems, and for each the index of the change it belongs to."""
        request: list[dict[str, Any]] = []
        owners: list[int] = []
        for members in groups.values():
            first, last = changes[members[0]], changes[members[-1]]
            put: dict[str, Any] = {
                "TableName": self.table,
                "Item": items.head_item(last.new, offloaded.get(members[-1])),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
            if first.expected_version is None:
                put["ConditionExpression"] = "attribute_not_exists(pk)"  # also fails on a pending head
            else:
                # A head locked by a multi-batch transaction is that transaction's until it finishes.
                put["ConditionExpression"] = "#v = :expected AND attribute_not_exists(#lk)"
                put["ExpressionAttributeNames"] = {"#v": items.VERSION, "#lk": items.LOCK}
                put["ExpressionAttributeValues"] = {":expected": {"N": str(first.expected_version)}}
            request.append({"Put": put})
            owners.append(members[0])
            for i in members:
                change = changes[i]
                item = items.version_item(
                    change.new, offloaded.get(i), request_id=change.request_id, shards=self.history_shards
                )
                request.append(
                    {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}
                )
                owners.append(i)
                if change.claim is not None:
                    request.append({"Put": self._claim_put(change)})
                    owners.append(i)
        return request, owners

    def _claim_put(self, change: Change) -> dict[str, Any]:
        """The uniqueness item of a conditional create, in the create's own TransactWriteItems: a
        new key must not exist; a stale one must still name the owner the writer found stale
        (compare-and-set), and not be locked by a multi-batch transaction."""
        assert change.claim is not None
        new, claim = change.new, change.claim
        put: dict[str, Any] = {
            "TableName": self.table,
            "Item": items.claim_item(new.tenant, new.type, claim.key, new.id),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if claim.replaces is None:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "#o = :previous AND attribute_not_exists(#lk)"
            put["ExpressionAttributeNames"] = {"#o": items.OWNER, "#lk": items.LOCK}
            put["ExpressionAttributeValues"] = {":previous": {"S": claim.replaces}}
        return put

    def _write(self, request: list[dict[str, Any]], owners: list[int], changes: Sequence[Change]) -> None:
        settled = 0
        attempt = 0
        while True:
            # The SDK's own retries (timeouts, 5xx) resend this token: if an attempt had in fact
            # committed, DynamoDB answers success instead of failing the conditions against our
            # own write. A cancelled transaction committed nothing, so our retry takes a new one.
            token = uuid.uuid4().hex
            try:
                with clients.translated("The data store"):
                    self.client.transact_write_items(TransactItems=request, ClientRequestToken=token)
                return
            except ClientError as exc:
                if clients.error_code(exc) != "TransactionCanceledException":
                    raise
                reasons: list[Any] = list(exc.response.get("CancellationReasons") or [])
                codes = {str(r.get("Code")) for r in reasons}
                taken = _claim_conflict(request, reasons, owners)
                if taken is not None:
                    index, old = taken
                    if items.claim_lock_of(old) is not None and settled < _CONFLICT_RETRIES and self._settle_claim(old):
                        settled += 1
                        continue
                    raise ClaimTaken(index, items.owner_of(old)) from exc
                conflict = first_conflict(reasons, owners)
                if conflict is not None:
                    index, current, old = conflict
                    if items.lock_of(old) is not None:
                        # Settle what a decided transaction left (its own apply or rollback, for this
                        # resource), then try the same write again; an undecided one holds the resource.
                        if settled < _CONFLICT_RETRIES and self._settle(old):
                            settled += 1
                            continue
                        raise ResourceLocked(
                            "The resource is part of a transaction in progress; retry shortly",
                            headers={"Retry-After": "1"},
                        ) from exc
                    if current is None:  # a version item's condition failed, or there is no head
                        current = self._current_version(changes[index])
                    raise VersionConflict(index, current) from exc
                if codes & _THROTTLE_REASONS:
                    raise ServiceUnavailable(
                        "The data store is busy (throttled); retry shortly", headers={"Retry-After": "1"}
                    ) from exc
                if "TransactionConflict" not in codes:
                    raise
                if attempt == _CONFLICT_RETRIES:
                    raise ServiceUnavailable(
                        "The resource is being changed by another transaction; retry shortly",
                        headers={"Retry-After": "1"},
                    ) from exc
                # Another transaction holds one of our items for a moment: back off briefly.
                time.sleep(random.uniform(0.005, 0.02) * (2**attempt))  # noqa: S311 (jitter, not crypto)
                attempt += 1

    def _settle(self, head: items.Item) -> bool:
        from fhirflow.adapters.aws.dynamodb_transactions import DynamoDbTransactions

        return DynamoDbTransactions(self).settle(head)

    def _settle_claim(self, claim: items.Item) -> bool:
        from fhirflow.adapters.aws.dynamodb_transactions import DynamoDbTransactions

        return DynamoDbTransactions(self).settle_claim(claim)

    def _current_version(self, change: Change) -> int | None:
        head = self.current(change.new.tenant, change.new.type, change.new.id)
        return head.version if head else None

    def _forget_blobs(self, keys: Any) -> None:
        if self.blobs is None:
            return
        for key in keys:
            try:
                self.blobs.delete(key)
            except Exception:  # noqa: S112 (an orphaned blob is harmless; losing the real error is not)
                continue


def _claim_conflict(
    request: list[dict[str, Any]], reasons: list[dict[str, Any]], owners: list[int]
) -> tuple[int, items.Item] | None:
    """The change whose claim item failed its condition, and the claim as it was; None if none did."""
    for position, reason in enumerate(reasons):
        if reason.get("Code") != "ConditionalCheckFailed" or position >= len(request):
            continue
        put = request[position].get("Put", {})
        if put.get("Item", {}).get(items.SK, {}).get("S") == items.CLAIM_SK:
            return owners[position], reason.get("Item") or {}
    return None


def _group_by_resource(changes: Sequence[Change]) -> dict[tuple[str, str, str], list[int]]:
    """Change indexes per resource, in order. One transaction may write a resource's head once,
    so successive changes of one resource must chain (each expects the previous one's version)."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for index, change in enumerate(changes):
        new = change.new
        members = groups.setdefault((new.tenant, new.type, new.id), [])
        if members:
            previous = changes[members[-1]].new.version
            if change.expected_version != previous:
                raise VersionConflict(index, previous)
        members.append(index)
    return groups
