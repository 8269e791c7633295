"""``DynamoDbSearchParamCatalog``: each tenant's runtime search parameters, in the resource table.

The AWS counterpart of :class:`fhirflow.adapters.sqlite.searchparams.SqliteSearchParamCatalog`
(same semantics; docs/dynamodb.md, "Search parameters"). One partition per tenant,
``pk = sp#{tenant}``:

- ``sk = gen``: ``g``, the tenant's generation, bumped by every change to the items below;
- ``sk = def#{id}``: the SearchParameter ``id`` as index-sync last recorded it: ``v`` its version,
  ``dg`` the digest of its definition, ``sn`` the generation that definition began at, ``b`` its
  JSON; or, once deleted, a tombstone (``v``, ``del``) so that a replayed older version cannot
  bring it back;
- ``sk = mark#{id}#{since:010d}#{base}``: a reindex covered that definition on that base.

Every change is one TransactWriteItems guarded by the generation it read (``g = :read``) and the
definition's version (``v = :read``), retried on a lost race; a version not newer than the stored
one changes nothing, so replayed and reordered stream batches are idempotent.

Reads are cheap: the tenant's registries are cached per process with their generation, and each
use costs one strongly consistent GetItem of the generation item (the partition is queried again
only when it moved), so a search sees a reindex's marks on its next request, as in SQLite.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.exceptions import ClientError

from fhirflow.adapters.aws import clients
from fhirflow.adapters.aws.items import escape_tenant
from fhirflow.errors import ServiceUnavailable
from fhirflow.reindex_ports import CustomParam
from fhirflow.searchparams.registry import Registry
from fhirflow.searchparams.tenant import TenantParams, official, tenant_params, to_mark

PREFIX = "sp#"
GEN_SK = "gen"
DEF_PREFIX = "def#"
MARK_PREFIX = "mark#"
GENERATION, VERSION, DIGEST, SINCE, BODY, DELETED = "g", "v", "dg", "sn", "b", "del"
_ATTEMPTS = 8
_MAX_MARKS_PER_CALL = 99
"""A TransactWriteItems holds 100 items: the generation and up to 99 marks."""


def partition(tenant: str) -> str:
    # Resource pks start with the (escaped) tenant, which has no '#', and export jobs with "xj#":
    # none is "sp#" followed by a tenant.
    return f"{PREFIX}{escape_tenant(tenant)}"


def _mark_sk(id_: str, since: int, base: str) -> str:
    return f"{MARK_PREFIX}{id_}#{since:010d}#{base}"


@dataclass(frozen=True, slots=True)
class _Definition:
    version: int
    digest: str | None
    since: int
    body: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Partition:
    generation: int
    has_generation: bool
    definitions: dict[str, _Definition]
    marks: dict[tuple[str, int, str], str]
    """(id, since, base) → the mark's sort key."""


class DynamoDbSearchParamCatalog:
    """The :class:`fhirflow.reindex_ports.SearchParamCatalog` of the AWS mode."""

    def __init__(
        self, table: str, *, client: Any = None, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.table = table
        self.client = client or clients.lazy_client("dynamodb", endpoint_url=endpoint_url, region=region)
        self._cache: dict[str, TenantParams] = {}
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------------

    def generation(self, tenant: str) -> int:
        with clients.translated("The search parameter catalog"):
            reply = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": partition(tenant)}, "sk": {"S": GEN_SK}},
                ConsistentRead=True,
                ProjectionExpression="#g",
                ExpressionAttributeNames={"#g": GENERATION},
            )
        item = reply.get("Item")
        return int(item[GENERATION]["N"]) if item else 0

    def params(self, tenant: str) -> TenantParams:
        """The tenant's parameters now: one GetItem when the cached ones are current."""
        generation = self.generation(tenant)
        with self._lock:
            cached = self._cache.get(tenant)
        if cached is not None and cached.generation == generation:
            return cached
        # Read after the generation: if the partition moved meanwhile, the cache holds newer data
        # under an older generation, and the next call rebuilds (never the reverse).
        built = official() if generation == 0 else self._state(generation, self._read(tenant))
        with self._lock:
            self._cache[tenant] = built
        return built

    @staticmethod
    def _state(generation: int, read: _Partition) -> TenantParams:
        definitions = {
            id_: (d.since, d.body) for id_, d in read.definitions.items() if d.body is not None and d.digest is not None
        }
        return tenant_params(generation, definitions, set(read.marks))

    def index_registry(self, tenant: str) -> Registry:
        return self.params(tenant).index

    def searchable_registry(self, tenant: str) -> Registry:
        return self.params(tenant).search

    def custom_params(self, tenant: str) -> tuple[CustomParam, ...]:
        return self.params(tenant).custom

    def _read(self, tenant: str) -> _Partition:
        """The tenant's whole partition (strongly consistent; small: one item per SearchParameter)."""
        generation, has_generation = 0, False
        definitions: dict[str, _Definition] = {}
        marks: dict[tuple[str, int, str], str] = {}
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": partition(tenant)}},
            "ConsistentRead": True,
        }
        while True:
            with clients.translated("The search parameter catalog"):
                reply = self.client.query(**request)
            for item in reply.get("Items", []):
                sk = item["sk"]["S"]
                if sk == GEN_SK:
                    generation, has_generation = int(item[GENERATION]["N"]), True
                elif sk.startswith(DEF_PREFIX):
                    body = item.get(BODY)
                    definitions[sk[len(DEF_PREFIX) :]] = _Definition(
                        version=int(item[VERSION]["N"]),
                        digest=item[DIGEST]["S"] if DIGEST in item else None,
                        since=int(item[SINCE]["N"]) if SINCE in item else 0,
                        body=orjson.loads(body["S"]) if body is not None else None,
                    )
                elif sk.startswith(MARK_PREFIX):
                    id_, since, base = sk[len(MARK_PREFIX) :].split("#")
                    marks[(id_, int(since), base)] = sk
            last = reply.get("LastEvaluatedKey")
            if not last:
                return _Partition(generation, has_generation, definitions, marks)
            request["ExclusiveStartKey"] = last

    # -- writing --------------------------------------------------------------------------------

    def record(self, tenant: str, id_: str, version: int, resource: dict[str, Any] | None) -> bool:
        """The index took version ``version`` of SearchParameter ``id_`` (None: deleted). False when
        the catalog already holds that version or a newer one (a replay: nothing changes)."""
        from fhirflow.searchparams.custom import definition_digest

        pk = partition(tenant)
        for _ in range(_ATTEMPTS):
            read = self._read(tenant)
            old = read.definitions.get(id_)
            if old is not None and old.version >= version:
                return False
            generation = read.generation + 1
            item: dict[str, Any] = {"pk": {"S": pk}, "sk": {"S": f"{DEF_PREFIX}{id_}"}, VERSION: {"N": str(version)}}
            since: int | None = None
            if resource is None:
                item[DELETED] = {"BOOL": True}
            else:
                digest = definition_digest(resource)
                since = old.since if old is not None and old.digest == digest else generation
                item[DIGEST] = {"S": digest}
                item[SINCE] = {"N": str(since)}
                item[BODY] = {"S": orjson.dumps(resource).decode()}
            definition = {"Put": {"TableName": self.table, "Item": item, **_version_guard(old)}}
            stale = [sk for (mark_id, at, _), sk in read.marks.items() if mark_id == id_ and at != since]
            deletes = [{"Delete": {"TableName": self.table, "Key": {"pk": {"S": pk}, "sk": {"S": sk}}}} for sk in stale]
            if self._transact([self._bump(pk, read), definition, *deletes[: _MAX_MARKS_PER_CALL - 1]]):
                return True
        raise ServiceUnavailable("The search parameter catalog is busy; retry shortly", headers={"Retry-After": "1"})

    def mark_searchable(self, tenant: str, types: Sequence[str], url: str | None, since: int) -> tuple[str, ...]:
        """Mark the parameters a reindex of ``types`` that started at generation ``since`` covered;
        ``Base.code`` of each one that is searchable now."""
        pk = partition(tenant)
        for _ in range(_ATTEMPTS):
            read = self._read(tenant)
            state = self._state(read.generation, read)
            chosen = to_mark(state, types, url, since)
            fresh = [(p, at) for p, at in chosen if (p.id, at, p.base) not in read.marks][:_MAX_MARKS_PER_CALL]
            if not fresh:
                return tuple(f"{p.base}.{p.code}" for p, _ in chosen)
            puts = [
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {"pk": {"S": pk}, "sk": {"S": _mark_sk(p.id, at, p.base)}},
                    }
                }
                for p, at in fresh
            ]
            # Guarded by the generation read: no definition changed between the read and the marks.
            self._transact([self._bump(pk, read), *puts])
        raise ServiceUnavailable("The search parameter catalog is busy; retry shortly", headers={"Retry-After": "1"})

    def _bump(self, pk: str, read: _Partition) -> dict[str, Any]:
        guard: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        if read.has_generation:
            guard = {
                "ConditionExpression": "#g = :g",
                "ExpressionAttributeNames": {"#g": GENERATION},
                "ExpressionAttributeValues": {":g": {"N": str(read.generation)}},
            }
        item = {"pk": {"S": pk}, "sk": {"S": GEN_SK}, GENERATION: {"N": str(read.generation + 1)}}
        return {"Put": {"TableName": self.table, "Item": item, **guard}}

    def _transact(self, operations: list[dict[str, Any]]) -> bool:
        """True when committed; False when a guard failed (another writer came first: read again)."""
        try:
            with clients.translated("The search parameter catalog"):
                self.client.transact_write_items(TransactItems=operations)
        except ClientError as exc:
            if clients.error_code(exc) == "TransactionCanceledException":
                return False
            raise
        return True


def _version_guard(old: _Definition | None) -> dict[str, Any]:
    if old is None:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    return {
        "ConditionExpression": "#v = :v",
        "ExpressionAttributeNames": {"#v": VERSION},
        "ExpressionAttributeValues": {":v": {"N": str(old.version)}},
    }
