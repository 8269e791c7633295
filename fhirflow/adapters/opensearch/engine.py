"""``OpenSearchSearchEngine``: the search service's SearchEngine port (:mod:`fhirflow.search_ports`)
on the OpenSearch index.

The use case (``services/search``) hands over the parsed query and a :class:`SearchScope`; this
adapter compiles them (``compiler.py``: the tenant, the compartment and the access policy's rules
become filters of every request, so totals and paging are exact) and runs the plan through
:class:`~fhirflow.adapters.opensearch.search.OpenSearchSearchIndex`.

**Keyset positions.** A page is sorted by the ``_sort`` keys, then ``key`` (``Type/id``, unique
per tenant). A hit's position is its sort values with ``key`` split into type and id: the
``len(_sort) + 2`` values the use case signs into its cursors. ``search_after`` takes them back.
A previous page is the same request with every order reversed (and missing values first instead
of last), searched after the first hit of the current page, its hits reversed again.

Full-text matches (``_text``, ``_content``) are not ranked by relevance here, because a position
holds only the ``_sort`` keys: without ``_sort`` they come in ``key`` order, as on SQLite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from fhirflow.adapters.opensearch.compiler import TERMINOLOGY_MODIFIERS, Compiler, compile_query
from fhirflow.adapters.opensearch.mappings import MAX_COMPONENTS
from fhirflow.adapters.opensearch.plan import CompileOptions, SearchPlan
from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
from fhirflow.errors import BadRequest
from fhirflow.query.ast import Criterion, Filter, Include, Query, SortKey
from fhirflow.search_ports import Admits, Hit, Included, Page, PageRequest, SearchScope, SortValue

Clock = Callable[[], int]


def search_after(position: Sequence[SortValue]) -> list[object]:
    """A keyset position (sort values, type, id) as the ``search_after`` of the page's sort."""
    *values, type_, id_ = position
    return [*values, f"{type_}/{id_}"]


def reversed_sort(sort: list[Any]) -> list[Any]:
    """The sort that walks the same order backwards: each order flipped, missing values first
    where they were last (each key keeps its field and ``mode``, so a resource's value is the same)."""
    out: list[Any] = []
    for item in sort:
        [(field, spec)] = item.items()
        flipped = dict(spec, order="asc" if spec.get("order") == "desc" else "desc")
        if "missing" in spec:
            flipped["missing"] = "_first" if spec["missing"] == "_last" else "_last"
        out.append({field: flipped})
    return out


class OpenSearchSearchEngine:
    def __init__(self, index: OpenSearchSearchIndex, *, clock: Clock | None = None) -> None:
        self.index = index
        self.clock = clock

    def options(self, scope: SearchScope) -> CompileOptions:
        now = self.clock() if self.clock is not None else self.index.options.now
        return dataclasses.replace(self.index.options, base_url=scope.base_url, now=now, relevance_sort=False)

    # -- what this backend can do -----------------------------------------------------------

    def unsupported(self, criterion: Criterion) -> str | None:
        """What ``compiler.py`` refuses, so that lenient handling can leave it out beforehand."""
        while not isinstance(criterion, Filter):
            criterion = criterion.criterion
        param, modifier = criterion.param, criterion.modifier
        if param.type == "token" and modifier in TERMINOLOGY_MODIFIERS:
            return f"':{modifier}' on token parameters needs a terminology service, which this server does not have"
        if param.type == "special" and param.code not in ("near", "_list"):
            return f"the special parameter '{param.code}' is not supported"
        if param.code == "_list" and any(getattr(v, "value", "").startswith("$") for v in criterion.values):
            return "functional lists ($current-...) are not supported"
        if param.type == "composite" and len(param.components) > MAX_COMPONENTS:
            return f"composites of more than {MAX_COMPONENTS} components are not indexed"
        if param.code == "_id" and modifier not in (None, "not", "missing"):
            return f"':{modifier}' is not supported on _id"
        return None

    def sortable(self, key: SortKey) -> bool:
        try:
            Compiler.sort_key(key)
        except BadRequest:
            return False
        return True

    # -- the port ---------------------------------------------------------------------------

    def page(self, scope: SearchScope, query: Query, request: PageRequest) -> Page:
        forward = request.before is None
        position = request.after if forward else request.before
        # Totals come from count(), includes from include(): the page request needs neither.
        paged = dataclasses.replace(query, total="none", includes=(), revincludes=())
        after = search_after(position) if position is not None else None
        plan = self._compile(scope, paged, page_size=request.count, after=after)
        if not forward:
            plan = dataclasses.replace(plan, body=dict(plan.body, sort=reversed_sort(plan.body["sort"])))
        hits = self.index.execute(plan)["hits"]["hits"]
        more = len(hits) > request.count
        hits = hits[: request.count]
        if not forward:
            hits.reverse()
        return Page([_page_hit(hit) for hit in hits if hit["_source"].get("resource") is not None], more)

    def count(self, scope: SearchScope, query: Query) -> int:
        counted = dataclasses.replace(query, total=None, includes=(), revincludes=(), sort=())
        plan = self._compile(scope, counted, page_size=0, after=None)
        total = self.index.execute(plan)["hits"]["total"]
        return int(total["value"])

    def include(
        self,
        scope: SearchScope,
        matches: Sequence[Hit],
        includes: Sequence[Include],
        revincludes: Sequence[Include],
        *,
        max_depth: int,
        limit: int,
        admits: Admits | None = None,
    ) -> Included:
        if not matches or not (includes or revincludes):
            return Included([], truncated=False)
        options = dataclasses.replace(self.options(scope), include_limit=limit, iterate_rounds=max_depth)
        stub = Query(resource_type=None, includes=tuple(includes), revincludes=tuple(revincludes))
        plan = compile_query(stub, tenant=scope.tenant, page_size=len(matches), search_after=None, options=options)
        frontier = self.index.references_of(scope.tenant, [f"{hit.type}/{hit.id}" for hit in matches])
        found, truncated = self.index.includes(plan, frontier, admits)
        hits = [Hit(r.type, r.id, orjson.dumps(r.resource)) for r in found if r.resource is not None]
        return Included(hits, truncated)

    # -- helpers ----------------------------------------------------------------------------

    def _compile(self, scope: SearchScope, query: Query, *, page_size: int, after: list[object] | None) -> SearchPlan:
        return compile_query(
            query,
            tenant=scope.tenant,
            compartment=scope.compartment,
            page_size=page_size,
            search_after=after,
            options=self.options(scope),
            access=scope.access,
        )


def _page_hit(hit: dict[str, Any]) -> Hit:
    source = hit["_source"]
    *values, _key = hit["sort"]
    return Hit(source["type"], source["id"], orjson.dumps(source["resource"]), (*values, source["type"], source["id"]))
