"""History at instance, type and system level on DynamoDB (http://hl7.org/fhir/R4/http.html#history).

- Instance: one Query on the resource's partition, ``sk`` from ``v#...`` downwards.
- Type and system: the ``type-history`` / ``system-history`` GSIs, keyed by tenant (and type)
  plus a shard number, sorted by ``gsk = {lastUpdated}#{Type}#{id}#{version}``. Each shard is
  queried newest first and the shards are merged; since ``gsk`` is unique and totally ordered,
  one ``gsk`` is a complete cursor for all shards. The GSIs carry no bodies: they are fetched
  by key for the versions on the page only.

``_since`` and ``_at``'s upper bound are key conditions. ``_at``'s lower bound needs the next
version's lastUpdated (a version counts when it was still current at ``low``); those are read in
one BatchGetItem per chunk of candidates. No operation scans the table.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from dataclasses import replace
from itertools import islice
from typing import TYPE_CHECKING, Any

from fhirflow.adapters.aws import clients, items
from fhirflow.errors import ServiceUnavailable
from fhirflow.ports import HistoryPage, HistoryQuery, ResourceVersion

if TYPE_CHECKING:
    from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore

_BATCH_GET_LIMIT = 100
_QUERY_LIMIT_CAP = 500


class HistoryReader:
    def __init__(self, store: DynamoDbResourceStore) -> None:
        self.store = store

    def page(self, query: HistoryQuery) -> HistoryPage:
        if query.count <= 0:
            return HistoryPage([], None)
        wanted = query.count + 1  # one more than the page tells whether there is a next page
        limit = min(wanted, _QUERY_LIMIT_CAP)
        instance = query.type is not None and query.id is not None
        rows = self._instance_rows(query, limit) if instance else self._index_rows(query, limit)
        position = items.SK if instance else items.TIME_SK
        picked: list[items.Item] = []
        while len(picked) < wanted:
            chunk = list(islice(rows, wanted - len(picked)))
            if not chunk:
                break
            picked.extend(self._current_at(chunk, query.at[0]) if query.at else chunk)
        page = picked[: query.count]
        following = page[-1][position]["S"] if len(picked) > query.count else None
        return HistoryPage(self._versions(page, with_bodies=instance), following)

    # -- candidate rows, newest first --------------------------------------------------------

    def _instance_rows(self, query: HistoryQuery, limit: int) -> Iterator[items.Item]:
        assert query.type is not None
        assert query.id is not None
        values: dict[str, Any] = {":pk": {"S": items.resource_pk(query.tenant, query.type, query.id)}}
        if query.after is not None:
            condition = "pk = :pk AND sk BETWEEN :low AND :high"
            values[":low"] = {"S": items.VERSION_PREFIX}
            values[":high"] = {"S": query.after}
        else:
            condition = "pk = :pk AND begins_with(sk, :low)"
            values[":low"] = {"S": items.VERSION_PREFIX}
        filters = []
        if query.since is not None:
            filters.append("lu >= :since")
            values[":since"] = {"N": str(query.since)}
        if query.at is not None:
            filters.append("lu < :at_high")
            values[":at_high"] = {"N": str(query.at[1])}
        request: dict[str, Any] = {
            "TableName": self.store.table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "ConsistentRead": True,
            "Limit": limit,
        }
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
        for row in self._query(request):
            if row[items.SK]["S"] != query.after:
                yield row

    def _index_rows(self, query: HistoryQuery, limit: int) -> Iterator[items.Item]:
        low = items.time_bound(query.since) if query.since is not None else None
        highs = [h for h in (query.after, items.time_bound(query.at[1]) if query.at else None) if h is not None]
        high = min(highs) if highs else None
        if low is not None and high is not None and low > high:
            return iter(())
        shards = range(self.store.history_shards)
        if query.type is not None:
            index, attribute = items.TYPE_INDEX, items.TYPE_PK
            partitions = [items.type_pk(query.tenant, query.type, shard) for shard in shards]
        else:
            index, attribute = items.SYSTEM_INDEX, items.SYSTEM_PK
            partitions = [items.system_pk(query.tenant, shard) for shard in shards]
        streams = [self._partition(index, attribute, p, low, high, limit, query.after) for p in partitions]
        return heapq.merge(*streams, key=lambda row: str(row[items.TIME_SK]["S"]), reverse=True)

    def _partition(
        self,
        index: str,
        attribute: str,
        partition: str,
        low: str | None,
        high: str | None,
        limit: int,
        after: str | None,
    ) -> Iterator[items.Item]:
        values: dict[str, Any] = {":p": {"S": partition}}
        condition = f"{attribute} = :p"
        if low is not None and high is not None:
            condition += f" AND {items.TIME_SK} BETWEEN :low AND :high"
            values[":low"], values[":high"] = {"S": low}, {"S": high}
        elif high is not None:
            condition += f" AND {items.TIME_SK} <= :high"
            values[":high"] = {"S": high}
        elif low is not None:
            condition += f" AND {items.TIME_SK} >= :low"
            values[":low"] = {"S": low}
        request = {
            "TableName": self.store.table,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": limit,
        }
        # Bounds are inclusive; the only row that can sit exactly on one is the cursor's own.
        for row in self._query(request):
            if row[items.TIME_SK]["S"] != after:
                yield row

    def _query(self, request: dict[str, Any]) -> Iterator[items.Item]:
        """All rows of a Query, fetched page by page only as the caller consumes them."""
        while True:
            with clients.translated("The data store"):
                reply = self.store.client.query(**request)
            yield from reply.get("Items", [])
            start = reply.get("LastEvaluatedKey")
            if not start:
                return
            request = {**request, "ExclusiveStartKey": start}

    # -- _at: still current at the interval's start ------------------------------------------

    def _current_at(self, rows: list[items.Item], low: int) -> list[items.Item]:
        """Keep the versions not superseded at or before ``low`` (their successor, if any, came later)."""
        successors = [items.key(r[items.PK]["S"], items.version_sk(int(r[items.VERSION]["N"]) + 1)) for r in rows]
        found = self._batch_get(successors, projection="pk, sk, lu")
        kept = []
        for row, successor in zip(rows, successors, strict=True):
            later = found.get((successor[items.PK]["S"], successor[items.SK]["S"]))
            if later is None or int(later[items.LAST_UPDATED]["N"]) > low:
                kept.append(row)
        return kept

    # -- bodies ------------------------------------------------------------------------------

    def _versions(self, rows: list[items.Item], *, with_bodies: bool) -> list[ResourceVersion]:
        if with_bodies:
            return [self.store.with_body(row) for row in rows]
        live = [items.key(r[items.PK]["S"], r[items.SK]["S"]) for r in rows if not r[items.DELETED]["BOOL"]]
        full = self._batch_get(live, projection=None)
        versions = []
        for row in rows:
            stored, _ = items.decode(row)
            if not stored.deleted:
                item = full.get((row[items.PK]["S"], row[items.SK]["S"]))
                if item is None:
                    raise RuntimeError(f"history: version item {row[items.SK]['S']} listed by the index is missing")
                stored = replace(stored, body=self.store.with_body(item).body)
            versions.append(stored)
        return versions

    def _batch_get(self, keys: list[items.Item], *, projection: str | None) -> dict[tuple[str, str], items.Item]:
        """Items by key (at most 100 per call; unprocessed keys are retried with backoff)."""
        found: dict[tuple[str, str], items.Item] = {}
        for start in range(0, len(keys), _BATCH_GET_LIMIT):
            request: dict[str, Any] = {"Keys": keys[start : start + _BATCH_GET_LIMIT], "ConsistentRead": True}
            if projection:
                request["ProjectionExpression"] = projection
            pending: dict[str, Any] | None = {self.store.table: request}
            attempt = 0
            while pending:
                with clients.translated("The data store"):
                    reply = self.store.client.batch_get_item(RequestItems=pending)
                for item in reply.get("Responses", {}).get(self.store.table, []):
                    found[(item[items.PK]["S"], item[items.SK]["S"])] = item
                pending = reply.get("UnprocessedKeys") or None
                if pending:
                    attempt += 1
                    if attempt > 8:
                        raise ServiceUnavailable("The data store is busy; retry shortly", headers={"Retry-After": "1"})
                    time.sleep(min(0.05 * 2**attempt, 1.0))
        return found
