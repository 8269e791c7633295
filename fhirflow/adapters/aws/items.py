"""How resources are laid out in the DynamoDB table (docs/dynamodb.md), in one place.

Pure functions on low-level AttributeValue dicts (``{"S": ...}``, ``{"N": ...}``, ``{"B": ...}``):
the store writes them, the index-sync service decodes the same items from stream records. No
boto3 here, so the stream consumer can import it cheaply.

Keys (``{tenant}`` has ``%`` and ``#`` escaped so that no tenant can forge another's key):

- head:    ``pk = {tenant}#{Type}#{id}``, ``sk = head`` (current version, its body or blob key)
- version: same ``pk``, ``sk = v#{version:010d}``, plus the history GSI keys
  ``tpk = {tenant}#{Type}#{shard}`` (type history), ``spk = {tenant}#{shard}`` (system history),
  ``gsk = {lastUpdated:013d}#{Type}#{id}#{version:010d}`` (time order, unique)
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

from fhirflow.ports import CommittedChange, Method, ResourceVersion

Item = dict[str, Any]

HEAD = "head"
VERSION_PREFIX = "v#"
TYPE_INDEX = "type-history"
SYSTEM_INDEX = "system-history"

# Attribute names are short: every byte of every item is paid for on write, read and storage.
CREATED = "c"
PK, SK, TENANT, TYPE, ID, VERSION, LAST_UPDATED, DELETED, METHOD, BODY, BLOB, REQUEST_ID = (
    "pk",
    "sk",
    "t",
    "ty",
    "id",
    "v",
    "lu",
    "d",
    "m",
    "b",
    "bk",
    "rq",
)
TYPE_PK, SYSTEM_PK, TIME_SK = "tpk", "spk", "gsk"


def escape_tenant(tenant: str) -> str:
    return tenant.replace("%", "%25").replace("#", "%23")


def resource_pk(tenant: str, type_: str, id_: str) -> str:
    return f"{escape_tenant(tenant)}#{type_}#{id_}"


def version_sk(version: int) -> str:
    return f"{VERSION_PREFIX}{version:010d}"


def shard_of(type_: str, id_: str, shards: int) -> int:
    """Which history partition a resource's versions go to (stable across processes)."""
    return zlib.crc32(f"{type_}/{id_}".encode()) % shards


def type_pk(tenant: str, type_: str, shard: int) -> str:
    return f"{escape_tenant(tenant)}#{type_}#{shard}"


def system_pk(tenant: str, shard: int) -> str:
    return f"{escape_tenant(tenant)}#{shard}"


def time_sk(last_updated: int, type_: str, id_: str, version: int) -> str:
    return f"{last_updated:013d}#{type_}#{id_}#{version:010d}"


def time_bound(ms: int) -> str:
    """A sort-key bound: every ``gsk`` of a version at ``ms`` sorts after it, earlier ones before."""
    return f"{ms:013d}"


def key(pk: str, sk: str) -> Item:
    return {PK: {"S": pk}, SK: {"S": sk}}


def _common(stored: ResourceVersion, blob: str | None) -> Item:
    item: Item = {
        TENANT: {"S": stored.tenant},
        TYPE: {"S": stored.type},
        ID: {"S": stored.id},
        VERSION: {"N": str(stored.version)},
        LAST_UPDATED: {"N": str(stored.last_updated)},
        DELETED: {"BOOL": stored.deleted},
        METHOD: {"S": stored.method},
    }
    if stored.created:
        item[CREATED] = {"BOOL": True}
    if blob is not None:
        item[BLOB] = {"S": blob}
    elif stored.body is not None:
        item[BODY] = {"B": stored.body}
    return item


def head_item(stored: ResourceVersion, blob: str | None) -> Item:
    return {**key(resource_pk(stored.tenant, stored.type, stored.id), HEAD), **_common(stored, blob)}


def version_item(stored: ResourceVersion, blob: str | None, *, request_id: str, shards: int) -> Item:
    shard = shard_of(stored.type, stored.id, shards)
    item = {**key(resource_pk(stored.tenant, stored.type, stored.id), version_sk(stored.version))}
    item.update(_common(stored, blob))
    item[TYPE_PK] = {"S": type_pk(stored.tenant, stored.type, shard)}
    item[SYSTEM_PK] = {"S": system_pk(stored.tenant, shard)}
    item[TIME_SK] = {"S": time_sk(stored.last_updated, stored.type, stored.id, stored.version)}
    if request_id:
        item[REQUEST_ID] = {"S": request_id}
    return item


def is_version_item(item: Item) -> bool:
    return str(item.get(SK, {}).get("S", "")).startswith(VERSION_PREFIX)


def _binary(value: Any) -> bytes:
    # boto3 responses carry bytes; Lambda's stream events carry base64 text.
    return base64.b64decode(value) if isinstance(value, str) else bytes(value)


def decode(item: Item) -> tuple[ResourceVersion, str | None]:
    """An item → (version, blob key); the body is None when it lives in the blob store."""
    raw_body = item.get(BODY)
    method: Method = item[METHOD]["S"]
    stored = ResourceVersion(
        tenant=item[TENANT]["S"],
        type=item[TYPE]["S"],
        id=item[ID]["S"],
        version=int(item[VERSION]["N"]),
        last_updated=int(item[LAST_UPDATED]["N"]),
        deleted=bool(item[DELETED]["BOOL"]),
        method=method,
        body=_binary(raw_body["B"]) if raw_body else None,
        created=bool(item.get(CREATED, {}).get("BOOL", False)),
    )
    blob = item.get(BLOB)
    return stored, (blob["S"] if blob else None)


def decode_change(item: Item) -> tuple[CommittedChange, str | None]:
    """A version item (from a stream record's NEW_IMAGE) → the committed change it records."""
    stored, blob = decode(item)
    request_id = item.get(REQUEST_ID, {}).get("S", "")
    return CommittedChange(stored, request_id), blob


# -- transactions across many batches (docs/dynamodb.md, "Transactions") ------------------------
#
# staged version: pk = the resource's, sk = s#{txId}#{version:010d}; the version's attributes but
#                 no history GSI keys, so neither history, vread nor index-sync ever sees it
# head lock:      lk = txId, lkv = the version the transaction brings the resource to;
#                 pn = true on the pending head a transaction creates for a new resource
# tx record:      pk = tx#{txId}, sk = tx; st = PREPARED|COMMITTED|DONE|ABORTED, and while the
#                 transaction is unfinished ox = "open", ot = when the sweeper may take it over

STAGED_PREFIX = "s#"
LOCK, LOCK_VERSION, PENDING = "lk", "lkv", "pn"
TX_PREFIX, TX_SK = "tx#", "tx"
TX_STATE, TX_OPEN, TX_DUE, TX_BATCHES, TX_STARTED, TX_COMMITTED = "st", "ox", "ot", "nb", "ts", "cm"
OPEN_INDEX = "open-transactions"
OPEN = "open"


def staged_prefix(tx_id: str) -> str:
    return f"{STAGED_PREFIX}{tx_id}#"


def staged_sk(tx_id: str, version: int) -> str:
    return f"{staged_prefix(tx_id)}{version:010d}"


def staged_item(stored: ResourceVersion, blob: str | None, *, tx_id: str, request_id: str) -> Item:
    item = {**key(resource_pk(stored.tenant, stored.type, stored.id), staged_sk(tx_id, stored.version))}
    item.update(_common(stored, blob))
    if request_id:
        item[REQUEST_ID] = {"S": request_id}
    return item


def tx_key(tx_id: str) -> Item:
    return key(f"{TX_PREFIX}{tx_id}", TX_SK)


def tx_id_of(item: Item) -> str:
    return str(item[PK]["S"])[len(TX_PREFIX) :]


def lock_of(item: Item) -> tuple[str, int] | None:
    """The (transaction id, target version) a head is locked for, or None."""
    if LOCK not in item:
        return None
    return str(item[LOCK]["S"]), int(item[LOCK_VERSION]["N"])


def is_pending(item: Item) -> bool:
    """A head a transaction created for a resource that does not exist until it commits."""
    return bool(item.get(PENDING, {}).get("BOOL", False))


# -- uniqueness claims of conditional criteria (fhirflow.conditional, docs/dynamodb.md) ------------
#
# claim:      pk = {tenant}#{Type}#cond#{sha256}, sk = cond; o = the id of the resource that holds it
#             (no GSI keys, not a version item: history and index-sync never see it)
# claim lock: lk = txId, lko = the owner a multi-batch transaction brings; a claim that transaction
#             creates has no o until it is applied (a pending claim)

CLAIM_SK = "cond"
OWNER, LOCK_OWNER = "o", "lko"


def claim_pk(tenant: str, type_: str, digest: str) -> str:
    # Resource ids cannot contain '#', so no resource's pk can look like this.
    return f"{escape_tenant(tenant)}#{type_}#cond#{digest}"


def claim_key(tenant: str, type_: str, digest: str) -> Item:
    return key(claim_pk(tenant, type_, digest), CLAIM_SK)


def claim_item(tenant: str, type_: str, digest: str, owner: str) -> Item:
    return {
        **claim_key(tenant, type_, digest),
        TENANT: {"S": tenant},
        TYPE: {"S": type_},
        OWNER: {"S": owner},
    }


def owner_of(item: Item) -> str | None:
    """The owner a claim item names as it stands (None for a pending claim)."""
    owner = item.get(OWNER)
    return str(owner["S"]) if owner else None


def claim_lock_of(item: Item) -> tuple[str, str] | None:
    """The (transaction id, owner it brings) a claim is locked for, or None."""
    if LOCK not in item or LOCK_OWNER not in item:
        return None
    return str(item[LOCK]["S"]), str(item[LOCK_OWNER]["S"])
