"""A multi-batch transaction's prepared batches, kept in the blob store between its steps.

The bundle service prepares a transaction once; every later step (in AWS, each its own Lambda
and possibly its own container) reads the one batch it works on. Batches travel by reference
(transaction id and batch number), never through the workflow's state, whose payloads are
limited (Step Functions: 256 KB). Bodies over the threshold are written as blobs of their own,
under keys unique to the transaction, so a retried step rewrites the same blob and a rollback
finds it again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from fhirflow.adapters.aws import items
from fhirflow.adapters.offload import BODY_CONTENT_TYPE
from fhirflow.ports import BlobNotFound, BlobStore, Change, Claim, Method, ResourceVersion

if TYPE_CHECKING:
    from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore

BATCH_BYTES_BUDGET = 1_500_000
"""Inline bodies per batch: twice this (apply writes each body into the version item and the
head) stays under the 4 MB a TransactWriteItems may carry."""
_CACHE_SIZE = 512


@dataclass(frozen=True, slots=True)
class StagedChange:
    index: int
    """The change's position in the transaction (what a conflict names)."""
    change: Change
    blob: str | None
    """The blob key of the body when it does not travel inline."""


def batch_key(tx_id: str, batch: int) -> str:
    return f"transactions/{tx_id}/batch-{batch:05d}.json"


def staged_body_key(stored: ResourceVersion, tx_id: str) -> str:
    """Like :func:`fhirflow.adapters.offload.body_key`, but unique per transaction rather than random."""
    return f"resources/{quote(stored.tenant, safe='')}/{stored.type}/{stored.id}/{stored.version}-{tx_id}.json"


def resource_pk(stored: ResourceVersion) -> str:
    return items.resource_pk(stored.tenant, stored.type, stored.id)


def pack(groups: list[list[int]], capacity: int, *, extra: frozenset[int] = frozenset()) -> list[list[int]]:
    """Whole resources (their changes' indexes) into batches of at most ``capacity`` versions;
    a change in ``extra`` counts twice (its uniqueness claim is one more item of the lock step)."""
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for members in groups:
        weight = len(members) + sum(1 for i in members if i in extra)
        if current and size + weight > capacity:
            batches.append(current)
            current, size = [], 0
        current.extend(members)
        size += weight
    if current:
        batches.append(current)
    return batches


def to_offload(batch: Sequence[Change], threshold: int) -> set[int]:
    """Positions of the bodies that go to the blob store: those over the threshold, then the
    largest until the batch's inline bodies fit :data:`BATCH_BYTES_BUDGET`."""
    sizes = {i: len(c.new.body) for i, c in enumerate(batch) if c.new.body is not None}
    chosen = {i for i, size in sizes.items() if size > threshold}
    total = sum(size for i, size in sizes.items() if i not in chosen)
    for i in sorted(sizes, key=lambda i: sizes[i], reverse=True):
        if total <= BATCH_BYTES_BUDGET:
            break
        if i not in chosen:
            chosen.add(i)
            total -= sizes[i]
    return chosen


def by_resource(staged: list[StagedChange]) -> list[list[StagedChange]]:
    """Consecutive changes of one resource (prepare keeps each resource's changes together)."""
    groups: list[list[StagedChange]] = []
    for change in staged:
        if groups and resource_pk(groups[-1][0].change.new) == resource_pk(change.change.new):
            groups[-1].append(change)
        else:
            groups.append([change])
    return groups


class PreparedBatches:
    """The batches in the store's blob store, with a small in-process cache (the embedded mode
    runs every step in the process that prepared them)."""

    def __init__(self, store: DynamoDbResourceStore) -> None:
        self.store = store
        self._cache: OrderedDict[tuple[str, int], list[StagedChange]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def blobs(self) -> BlobStore:
        if self.store.blobs is None:
            raise RuntimeError("multi-batch transactions keep their batches in the blob store; none is configured")
        return self.store.blobs

    def stage_body(self, tx_id: str, index: int, change: Change, *, offload: bool) -> StagedChange:
        """The change as a batch holds it, its body written as a blob first when ``offload``."""
        new = change.new
        if new.body is None or not offload:
            return StagedChange(index, change, None)
        key = staged_body_key(new, tx_id)
        self.blobs.put(key, new.body, content_type=BODY_CONTENT_TYPE)
        return StagedChange(index, change, key)

    def write(self, tx_id: str, batch: int, staged: list[StagedChange]) -> None:
        self.blobs.put(batch_key(tx_id, batch), encode_batch(staged), content_type="application/json")
        self._remember(tx_id, batch, staged)

    def read(self, tx_id: str, batch: int, *, missing_ok: bool = False) -> list[StagedChange]:
        with self._lock:
            if (tx_id, batch) in self._cache:
                return self._cache[(tx_id, batch)]
        try:
            raw = self.blobs.get(batch_key(tx_id, batch))
        except BlobNotFound:
            if missing_ok:
                return []  # finished (or never written): nothing of it is left to do
            raise
        decoded = decode_batch(raw)
        self._remember(tx_id, batch, decoded)
        return decoded

    def forget(self, tx_id: str, count: int) -> None:
        """Delete the batches of a transaction that has ended."""
        self.delete([batch_key(tx_id, n) for n in range(count)])
        with self._lock:
            for n in range(count):
                self._cache.pop((tx_id, n), None)

    def delete(self, keys: Sequence[str]) -> None:
        """Best effort: an orphaned blob is harmless (a lifecycle rule expires them)."""
        blobs = self.store.blobs
        if blobs is None:
            return
        for key in keys:
            try:
                blobs.delete(key)
            except Exception:  # noqa: S112 (an orphaned blob is harmless; the transaction's outcome is not)
                continue

    def _remember(self, tx_id: str, batch: int, staged: list[StagedChange]) -> None:
        with self._lock:
            self._cache[(tx_id, batch)] = staged
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)


# -- the codec: JSON, bodies as text (they are FHIR JSON) ---------------------------------------------


def encode_batch(batch: list[StagedChange]) -> bytes:
    rows = []
    for staged in batch:
        new = staged.change.new
        row: dict[str, Any] = {
            "i": staged.index,
            "x": staged.change.expected_version,
            "rq": staged.change.request_id,
            "t": new.tenant,
            "ty": new.type,
            "id": new.id,
            "v": new.version,
            "lu": new.last_updated,
            "d": new.deleted,
            "m": new.method,
            "c": new.created,
        }
        if staged.blob is not None:
            row["bk"] = staged.blob
        elif new.body is not None:
            row["b"] = new.body.decode("utf-8")
        if staged.change.claim is not None:
            row["ck"] = staged.change.claim.key
            row["cr"] = staged.change.claim.replaces
        rows.append(row)
    return orjson.dumps({"changes": rows})


def decode_batch(raw: bytes) -> list[StagedChange]:
    out: list[StagedChange] = []
    for row in orjson.loads(raw)["changes"]:
        method: Method = row["m"]
        body = row.get("b")
        new = ResourceVersion(
            tenant=row["t"],
            type=row["ty"],
            id=row["id"],
            version=int(row["v"]),
            last_updated=int(row["lu"]),
            deleted=bool(row["d"]),
            method=method,
            body=body.encode("utf-8") if body is not None else None,
            created=bool(row["c"]),
        )
        claim = Claim(row["ck"], row.get("cr")) if "ck" in row else None
        out.append(StagedChange(int(row["i"]), Change(new, row["x"], row["rq"], claim), row.get("bk")))
    return out
