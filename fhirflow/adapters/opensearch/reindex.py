"""``OpenSearchReindexer``: the OpenSearch index's side of a ``$reindex`` job (fhirflow/reindex_ports.py).

The walk reads the index itself: the tenant's live documents of the job's types, in ``key``
(``Type/id``) order with ``search_after`` (no 10,000-hit window, no point in time needed: a
keyset walk meets every document that exists throughout it once). The index keeps each current
body in ``_source.resource``, so nothing is read from DynamoDB, and a page costs one search.
Each page is rebuilt with the tenant's current index registry and written back in one bulk
request at each document's own version with ``version_type=external_gte``: the same version goes
through, while a write that indexed a newer version meanwhile wins (409: "skipped").

Walking DynamoDB instead would need a scan or a query per type and shard of the history GSIs
(which list versions, not current resources); the index already holds exactly the current ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from fhirflow.adapters.opensearch.bulk import IndexWriteFailed
from fhirflow.adapters.opensearch.search import IndexedResource, OpenSearchSearchIndex
from fhirflow.reindex_ports import ReindexBatch


class ReindexCatalog(Protocol):
    def generation(self, tenant: str) -> int: ...

    def mark_searchable(self, tenant: str, types: Sequence[str], url: str | None, since: int) -> tuple[str, ...]: ...


class OpenSearchReindexer:
    def __init__(self, index: OpenSearchSearchIndex, catalog: ReindexCatalog) -> None:
        self.index = index
        self.catalog = catalog

    def catalog_state(self, tenant: str) -> int:
        return self.catalog.generation(tenant)

    @staticmethod
    def _filters(tenant: str, types: Sequence[str]) -> list[dict[str, Any]]:
        filters: list[dict[str, Any]] = [{"term": {"tenant": tenant}}, {"term": {"deleted": False}}]
        if types:
            filters.append({"terms": {"type": list(types)}})
        return filters

    def total(self, tenant: str, types: Sequence[str]) -> int:
        body = {"query": {"bool": {"filter": self._filters(tenant, types)}}, "size": 0, "track_total_hits": True}
        return int(self.index.raw_search(body)["hits"]["total"]["value"])

    def batch(self, tenant: str, types: Sequence[str], after: tuple[str, str] | None, limit: int) -> ReindexBatch:
        body: dict[str, Any] = {
            "query": {"bool": {"filter": self._filters(tenant, types)}},
            "sort": [{"key": {"order": "asc"}}],
            "size": limit,
            "track_total_hits": False,
            "_source": ["type", "id", "version", "lastUpdated", "resource"],
        }
        if after is not None:
            body["search_after"] = [f"{after[0]}/{after[1]}"]
        hits = self.index.raw_search(body)["hits"]["hits"]
        if not hits:
            return ReindexBatch(position=after, processed=0, done=True)
        current: list[IndexedResource] = []
        errors: list[str] = []
        for hit in hits:
            source = hit["_source"]
            if source.get("resource") is None:
                errors.append(f"{source['type']}/{source['id']}: the index holds no body for it")
                continue
            current.append(
                IndexedResource(
                    source["type"], source["id"], int(source["version"]), int(source["lastUpdated"]), source["resource"]
                )
            )
        done = skipped = 0
        for item, result in zip(current, self.index.rewrite(tenant, current), strict=True):
            if isinstance(result, Exception):  # the failure's kind only: a message may quote values
                reason = str(result) if isinstance(result, IndexWriteFailed) else type(result).__name__
                errors.append(f"{item.type}/{item.id}: {reason}")
            elif result:
                done += 1
            else:
                skipped += 1
        last = hits[-1]["_source"]
        return ReindexBatch(
            position=(str(last["type"]), str(last["id"])),
            processed=done,
            skipped=skipped,
            errors=tuple(errors),
            done=len(hits) < limit,
        )

    def finish(self, tenant: str, types: Sequence[str], url: str | None, since: int) -> tuple[str, ...]:
        return self.catalog.mark_searchable(tenant, types, url, since)
