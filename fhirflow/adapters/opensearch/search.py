"""``OpenSearchSearchIndex``: the search index on Amazon OpenSearch (DESIGN.md §4).

Implements the SearchIndex port (``apply``/``apply_batch``/``indexed_version``, the write side
index-sync uses: one bulk request per batch, see ``bulk.py``) and runs search plans
(``compiler.py``, ``plan.py``): lookups for chains and ``_has``, the page, then includes; the
search service reaches those through ``engine.py``. opensearch-py is imported only when a client
is first needed, and a client can be passed in (``client=``) or built lazily (``client_factory=``,
see ``client.py``). With ``create_missing`` the first write creates the index with the search
mapping when it does not exist yet (index-sync's role may, the search service's may not).

Paging uses ``search_after`` on the page's sort values, whose last member is the unique
``key``; the caller signs the returned cursor (``fhirflow.cursor``). Without a point in time,
a later page sees the index as it is then: a resource changed between pages may move, but no
resource is returned twice for an unchanged sort value, and there is no 10,000-hit window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fhirflow.adapters.opensearch.bulk import DEFAULT_MAX_BYTES, RESPONSE_FILTER, action_lines, chunks, item_results
from fhirflow.adapters.opensearch.compiler import REFERENCE_FIELDS, compile_query
from fhirflow.adapters.opensearch.documents import build_document, document_id, tombstone
from fhirflow.adapters.opensearch.mappings import DEFAULT_INDEX, index_body, index_mapping
from fhirflow.adapters.opensearch.plan import INCLUDE_KEYS, CompileOptions, IncludeStep, Lookup, SearchPlan, substitute
from fhirflow.errors import BadRequest, Issue, ServiceUnavailable
from fhirflow.ports import IndexWrite, IndexWriteSkipped
from fhirflow.query.ast import Query
from fhirflow.search_ports import Admits
from fhirflow.searchparams.registry import Registry


class IndexCatalog(Protocol):
    """What the index needs of a tenant's runtime search parameters (fhirflow/reindex_ports.py):
    the registry documents are built with, and where a SearchParameter it takes is recorded."""

    def index_registry(self, tenant: str) -> Registry: ...

    def record(self, tenant: str, id_: str, version: int, resource: dict[str, Any] | None) -> bool: ...


@dataclass(frozen=True, slots=True)
class IndexedResource:
    """One search hit: the resource as indexed and the references it holds (for includes)."""

    type: str
    id: str
    version: int
    last_updated: int
    resource: dict[str, Any] | None
    references: tuple[tuple[str, str], ...] = ()  # (parameter code, "Type/id")

    @property
    def key(self) -> str:
        return f"{self.type}/{self.id}"


@dataclass(frozen=True, slots=True)
class SearchResult:
    matches: list[IndexedResource]
    includes: list[IndexedResource] = field(default_factory=list)
    total: int | None = None
    next_cursor: list[object] | None = None  # search_after values of the page's last hit
    includes_truncated: bool = False  # include_limit stopped the includes short


INDEX_NOT_FOUND = "index_not_found_exception"
"""OpenSearch's error type for a request naming an index that does not exist."""


def too_costly(parameter: str, limit: int) -> BadRequest:
    message = (
        f"'{parameter}' matches more than {limit} resources; this server runs chained and reverse-chained "
        "parameters as a separate search and cannot use that many: narrow the criterion"
    )
    return BadRequest(message, expression=parameter, issues=[Issue("too-costly", message, (parameter,))])


def _hit(hit: dict[str, Any]) -> IndexedResource:
    source = hit.get("_source") or {}
    references = tuple(
        (ref["p"], ref["ref"]) for ref in source.get("references", ()) if isinstance(ref, dict) and "ref" in ref
    )
    return IndexedResource(
        type=source["type"],
        id=source["id"],
        version=int(source["version"]),
        last_updated=int(source["lastUpdated"]),
        resource=source.get("resource"),
        references=references,
    )


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class OpenSearchSearchIndex:
    def __init__(
        self,
        *,
        client: Any | None = None,
        client_factory: Callable[[], Any] | None = None,
        index: str = DEFAULT_INDEX,
        refresh: bool | str = False,
        registry: Registry | None = None,
        base_url: str | None = None,
        options: CompileOptions | None = None,
        create_missing: bool = False,
        max_bulk_bytes: int = DEFAULT_MAX_BYTES,
        catalog: IndexCatalog | None = None,
    ) -> None:
        self._client = client
        self._client_factory = client_factory
        self.index = index
        self.refresh = refresh  # "wait_for" in tests that search right after writing
        self.registry = registry
        self.base_url = base_url
        self.options = options or CompileOptions(base_url=base_url)
        self.create_missing = create_missing
        self.max_bulk_bytes = max_bulk_bytes
        self._index_ready = not create_missing
        self.catalog = catalog
        """The tenants' runtime search parameters: documents are built with the tenant's registry,
        and SearchParameter writes are recorded there; None: the official parameters only."""

    @property
    def client(self) -> Any:
        if self._client is None:
            if self._client_factory is None:
                raise RuntimeError("OpenSearchSearchIndex needs client= or client_factory=")
            self._client = self._client_factory()
        return self._client

    def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        """One client call, with the transient failures turned into a retryable 503."""
        from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
        from opensearchpy.exceptions import TransportError

        try:
            return method(**kwargs)
        except OpenSearchConnectionError as exc:
            raise ServiceUnavailable("The search index is unreachable; retry later") from exc
        except TransportError as exc:
            if exc.status_code in (429, 502, 503, 504):
                raise ServiceUnavailable("The search index is busy; retry later") from exc
            raise

    def create_index(self, *, shards: int = 3, replicas: int = 1) -> None:
        """Create the index with the search mapping (``mappings.py``)."""
        self._call(self.client.indices.create, index=self.index, body=index_body(shards=shards, replicas=replicas))

    def ensure_index(self) -> None:
        """Create the index unless it (or an alias by its name) exists; a concurrent creator wins
        harmlessly. Without the mapping, the first bulk would auto-create a dynamically mapped index."""
        from opensearchpy.exceptions import RequestError

        if self._call(self.client.indices.exists, index=self.index):
            return
        try:
            self.create_index()
        except RequestError as exc:
            if exc.error != "resource_already_exists_exception":
                raise

    def provision(self, *, update_mapping: bool) -> bool:
        """The index at deploy (the stack's custom resource, ``fhirflow_index_sync.provision``):
        create it with the mapping unless it exists (True when this call created it). An existing
        index keeps its documents; with ``update_mapping`` it gets the current mapping put on it,
        which OpenSearch accepts only when compatible (new fields; a changed field type is
        refused, and the deploy with it)."""
        from opensearchpy.exceptions import RequestError

        if not self._call(self.client.indices.exists, index=self.index):
            try:
                self.create_index()
            except RequestError as exc:
                if exc.error != "resource_already_exists_exception":
                    raise
            else:
                return True
        if update_mapping:
            self._call(self.client.indices.put_mapping, index=self.index, body=index_mapping())
        return False

    # -- the SearchIndex port (write side) ----------------------------------------------------

    def apply(
        self, tenant: str, type_: str, id_: str, version: int, last_updated: int, resource: dict[str, Any] | None
    ) -> bool:
        """Index ``version`` with external versioning: OpenSearch keeps a newer version and
        answers 409, which is "nothing changed" (False)."""
        [result] = self.apply_batch([IndexWrite(tenant, type_, id_, version, last_updated, resource)])
        if isinstance(result, Exception):
            raise result
        return result

    def apply_batch(self, writes: Sequence[IndexWrite]) -> list[bool | Exception]:
        """All ``writes`` in bulk requests of at most ``max_bulk_bytes`` (usually one), each item
        versioned (``bulk.py``). A write whose document cannot be built fails alone; a request that
        fails as a whole fails its writes, and the writes of later requests are skipped."""
        results: list[bool | Exception | None] = [None] * len(writes)
        writes = self._record_search_parameters(writes, results)
        registries: dict[str, Registry | None] = {}
        lines: list[bytes] = []
        positions: list[int] = []  # the write each entry of ``lines`` belongs to
        for position, write in enumerate(writes):
            try:
                if write.tenant not in registries:
                    registries[write.tenant] = self._registry(write.tenant)
                document = self._document(write, registries[write.tenant])
                lines.append(action_lines(document_id(write.tenant, write.type, write.id), write.version, document))
            except Exception as exc:  # extraction failed for this resource only
                results[position] = exc
                continue
            positions.append(position)
        failed: Exception | None = None
        for start, end, body in chunks(lines, self.max_bulk_bytes):
            batch = positions[start:end]
            if failed is not None:
                for position in batch:
                    results[position] = IndexWriteSkipped()
                continue
            try:
                if not self._index_ready:
                    self.ensure_index()
                    self._index_ready = True
                response = self._call(
                    self.client.bulk, body=body, index=self.index, refresh=self.refresh, filter_path=RESPONSE_FILTER
                )
                outcomes = item_results(response, len(batch))
            except Exception as exc:  # the request as a whole: every write in it failed
                failed = exc
                outcomes = [exc] * len(batch)
            for position, outcome in zip(batch, outcomes, strict=True):
                results[position] = outcome
        return [IndexWriteSkipped() if result is None else result for result in results]

    def _record_search_parameters(
        self, writes: Sequence[IndexWrite], results: list[bool | Exception | None]
    ) -> Sequence[IndexWrite]:
        """Record the batch's SearchParameter writes in the catalog before any document is built,
        so that the batch's resources are indexed with them. Recording is version-guarded, so it is
        done whether or not the index takes the write (a retry after a failed bulk records again,
        harmlessly). After a write that cannot be recorded nothing is attempted (kept in order for
        the retry): the writes to go on with."""
        if self.catalog is None:
            return writes
        for position, write in enumerate(writes):
            if write.type != "SearchParameter":
                continue
            try:
                self.catalog.record(write.tenant, write.id, write.version, write.resource)
            except Exception as exc:
                results[position] = exc
                for later in range(position + 1, len(writes)):
                    results[later] = IndexWriteSkipped()
                return writes[:position]
        return writes

    def _registry(self, tenant: str) -> Registry | None:
        if self.registry is not None or self.catalog is None:
            return self.registry
        return self.catalog.index_registry(tenant)

    def rewrite(self, tenant: str, current: Sequence[IndexedResource]) -> list[bool | Exception]:
        """Rebuild the documents of ``current`` (live resources as indexed) with the tenant's
        registry now, at their own version (``version_type=external_gte``: the same version goes
        through, an older one still cannot replace a newer). False: the resource moved on meanwhile
        (its write indexed it with the current parameters)."""
        registry = self._registry(tenant)
        results: list[bool | Exception | None] = [None] * len(current)
        lines: list[bytes] = []
        positions: list[int] = []
        for position, item in enumerate(current):
            write = IndexWrite(tenant, item.type, item.id, item.version, item.last_updated, item.resource)
            try:
                document = self._document(write, registry)
            except Exception as exc:
                results[position] = exc
                continue
            doc_id = document_id(tenant, item.type, item.id)
            lines.append(action_lines(doc_id, item.version, document, version_type="external_gte"))
            positions.append(position)
        for start, end, body in chunks(lines, self.max_bulk_bytes):
            batch = positions[start:end]
            response = self._call(
                self.client.bulk, body=body, index=self.index, refresh=self.refresh, filter_path=RESPONSE_FILTER
            )
            for position, outcome in zip(batch, item_results(response, len(batch)), strict=True):
                results[position] = outcome
        return [IndexWriteSkipped() if result is None else result for result in results]

    def _document(self, write: IndexWrite, registry: Registry | None = None) -> dict[str, Any]:
        if write.resource is None:
            return tombstone(
                tenant=write.tenant,
                type_=write.type,
                id_=write.id,
                version=write.version,
                last_updated=write.last_updated,
            )
        from fhirflow.searchparams.extract import index_document

        doc = index_document(write.resource, registry=registry or self.registry, base_url=self.base_url)
        return build_document(
            doc,
            tenant=write.tenant,
            version=write.version,
            last_updated=write.last_updated,
            resource=write.resource,
            base_url=self.base_url,
        )

    def indexed_version(self, tenant: str, type_: str, id_: str) -> int | None:
        from opensearchpy.exceptions import NotFoundError

        try:
            found = self._call(self.client.get, index=self.index, id=document_id(tenant, type_, id_), _source=False)
        except NotFoundError:
            return None
        return int(found["_version"]) if found.get("found") else None

    # -- the query side -------------------------------------------------------------------

    def search(
        self,
        query: Query,
        *,
        tenant: str,
        compartment: tuple[str, str] | None = None,
        page_size: int,
        cursor: list[object] | None = None,
    ) -> SearchResult:
        """One page of ``query`` (search.html) for ``tenant``, after ``cursor`` when given."""
        options = self.options
        plan = compile_query(
            query, tenant=tenant, compartment=compartment, page_size=page_size, search_after=cursor, options=options
        )
        return self.run(plan)

    def run(self, plan: SearchPlan) -> SearchResult:
        response = self.execute(plan)
        total = self._total(response, plan)
        if plan.count_only:
            return SearchResult([], total=total)
        hits = response["hits"]["hits"]
        page = [_hit(hit) for hit in hits[: plan.page_size]]
        cursor = list(hits[plan.page_size - 1]["sort"]) if len(hits) > plan.page_size else None
        included, truncated = self.includes(plan, page)
        return SearchResult(page, included, total, cursor, truncated)

    def execute(self, plan: SearchPlan) -> dict[str, Any]:
        """The plan's lookups, then its main request; OpenSearch's answer to the latter."""
        keys: dict[str, list[str]] = {}
        for lookup in plan.lookups:
            keys[lookup.name] = self._lookup(lookup, keys)
        return self._search(substitute(plan.body, keys))

    def references_of(self, tenant: str, keys: Sequence[str]) -> list[IndexedResource]:
        """The live resources with these keys (``Type/id``) and the references they hold (what
        ``_include`` follows), without their bodies."""
        if not keys:
            return []
        filters = [{"term": {"tenant": tenant}}, {"term": {"deleted": False}}, {"terms": {"key": list(keys)}}]
        body = {
            "query": {"bool": {"filter": filters}},
            "sort": [{"key": {"order": "asc"}}],
            "size": len(keys),
            "track_total_hits": False,
            "_source": ["type", "id", "version", "lastUpdated", *REFERENCE_FIELDS],
        }
        return [_hit(hit) for hit in self._search(body)["hits"]["hits"]]

    def raw_search(self, body: dict[str, Any]) -> dict[str, Any]:
        """One search request as given (the reindex walk's pages and counts)."""
        return self._search(body)

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        """One ``POST /<index>/_search``. Before index-sync's first write has created the index
        (a fresh stack), there is nothing to find: the answer is an empty one, not an error."""
        from opensearchpy.exceptions import NotFoundError

        try:
            response: dict[str, Any] = self._call(self.client.search, index=self.index, body=body)
        except NotFoundError as exc:
            if exc.error != INDEX_NOT_FOUND:
                raise
            return {"hits": {"total": {"value": 0, "relation": "eq"}, "hits": []}}
        return response

    def _lookup(self, lookup: Lookup, keys: dict[str, list[str]]) -> list[str]:
        """Phase 1 of a chain or ``_has``: the keys (or references) it matches, bounded."""
        hits = self._search(substitute(lookup.body, keys))["hits"]["hits"]
        if len(hits) > lookup.limit:
            raise too_costly(lookup.parameter, lookup.limit)
        if lookup.collect == "key":
            return sorted({hit["_source"]["key"] for hit in hits})
        prefixes = tuple(f"{t}/" for t in lookup.target_types)
        found = {
            ref
            for hit in hits
            for code, ref in _hit_references(hit)
            if code == lookup.reference and ref.startswith(prefixes)
        }
        if len(found) > lookup.limit:
            raise too_costly(lookup.parameter, lookup.limit)
        return sorted(found)

    @staticmethod
    def _total(response: dict[str, Any], plan: SearchPlan) -> int | None:
        """Bundle.total: exact counts, and lower bounds only when ``_total=estimate`` asked."""
        total = response.get("hits", {}).get("total")
        if not isinstance(total, dict) or plan.total == "none":
            return None
        if total.get("relation") == "eq" or plan.total == "estimate":
            return int(total["value"])
        return None

    # -- includes ---------------------------------------------------------------------------

    def includes(
        self, plan: SearchPlan, page: list[IndexedResource], admits: Admits | None = None
    ) -> tuple[list[IndexedResource], bool]:
        """``_include``/``_revinclude`` on the page, then ``:iterate`` rules on what they
        added, round after round (search.html#revinclude). With ``admits``, only resources the
        principal may read are added and walked from (SearchEngine.include)."""
        seen = {hit.key for hit in page}
        included: list[IndexedResource] = []
        frontier = page
        for round_ in range(1 + plan.iterate_rounds):
            steps = [s for s in plan.includes if round_ == 0 or s.iterate]
            if not steps or not frontier:
                break
            found: dict[str, IndexedResource] = {}
            for step in steps:
                for hit in self._include(step, frontier, seen, plan.include_limit):
                    found.setdefault(hit.key, hit)
            seen.update(found)
            new = [hit for hit in found.values() if admits is None or _readable(hit, admits)]
            room = plan.include_limit - len(included)
            if len(new) > room:
                return included + new[:room], True
            included.extend(new)
            frontier = new
        return included, False

    def _include(
        self, step: IncludeStep, frontier: list[IndexedResource], seen: set[str], limit: int
    ) -> list[IndexedResource]:
        if step.reverse:
            keys = [hit.key for hit in frontier if step.target_type is None or hit.type == step.target_type]
        else:
            keys = _unique(
                ref
                for hit in frontier
                if step.source_type is None or hit.type == step.source_type
                for code, ref in hit.references
                if (step.param is None or code == step.param)
                and (step.target_type is None or ref.startswith(f"{step.target_type}/"))
                and ref not in seen
            )[: limit + 1]
        if not keys:
            return []
        hits = self._search(substitute(step.body, {INCLUDE_KEYS: keys}))["hits"]["hits"]
        return [hit for hit in map(_hit, hits) if hit.key not in seen]


def _readable(hit: IndexedResource, admits: Admits) -> bool:
    return hit.resource is not None and admits(hit.resource)


def _hit_references(hit: dict[str, Any]) -> list[tuple[str, str]]:
    refs = (hit.get("_source") or {}).get("references", ())
    return [(ref["p"], ref["ref"]) for ref in refs if isinstance(ref, dict) and "ref" in ref and "p" in ref]
