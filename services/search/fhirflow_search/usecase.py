"""Type, system and compartment search (http://hl7.org/fhir/R4/http.html#search, search.html).

The query is parsed once into the AST (:mod:`fhirflow.query`); what this server cannot do
(terminology modifiers, ``_contained``, sorting on a composite) follows ``Prefer: handling`` —
lenient (the default) leaves it out and says so in an OperationOutcome entry, strict answers
400 naming the parameter. The backend compiles the rest together with the tenant, the
compartment and the access policy's constraint, and pages by signed keyset cursors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import quote

from fhirflow.errors import BadRequest, Issue
from fhirflow.http import prefer_handling
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.query.ast import Criterion, Filter, Query, SortKey
from fhirflow.query.parser import parse
from fhirflow.query.render import criterion_name
from fhirflow.reindex_ports import SearchParamCatalog
from fhirflow.runtime import Dependencies
from fhirflow.search_ports import Hit, Page, PageRequest, SearchEngine, SearchScope
from fhirflow.searchparams.registry import Registry, default_registry
from fhirflow_search import paging
from fhirflow_search.access import access_rules, admitted_includes
from fhirflow_search.bundle import Links, SearchResult, searchset
from fhirflow_search.settings import SearchSettings
from fhirflow_search.target import SearchTarget, search_params, search_target

MAX_DEPTH = 8
"""Levels of chaining and ``_has`` one parameter may nest (each is a join or a subquery)."""


def depth(criterion: Criterion) -> int:
    levels = 0
    while not isinstance(criterion, Filter):
        levels += 1
        criterion = criterion.criterion
    return levels


@dataclass(frozen=True, slots=True)
class Plan:
    """One request's search, ready to run."""

    target: SearchTarget
    query: Query
    scope: SearchScope
    count: int
    base_link: str
    digest: str
    position: paging.Position | None
    cursor: str | None


class SearchService:
    """The search use case; ``service(deps, request)`` like the crud use cases (bundles call it too)."""

    def __init__(
        self,
        engine: SearchEngine,
        settings: SearchSettings,
        registry: Registry | None = None,
        catalog: SearchParamCatalog | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self._registry = registry
        self.catalog = catalog
        """The tenants' runtime search parameters (searchable once reindexed); None: official ones only."""

    @property
    def registry(self) -> Registry:
        return self._registry or default_registry()

    def registry_for(self, tenant: str) -> Registry:
        """What a search of ``tenant`` parses against: one primary-key read when nothing changed."""
        if self.catalog is None or self._registry is not None:
            return self.registry
        return self.catalog.searchable_registry(tenant)

    def __call__(self, deps: Dependencies, request: FhirRequest) -> FhirResponse:
        plan = self.plan(deps, request)
        result = self.run(deps, request, plan)
        bundle = searchset(request.base_url, plan.query, result, deps.clock.now_ms())
        return FhirResponse(status=200, resource=bundle)

    # -- planning ---------------------------------------------------------------------------

    def plan(self, deps: Dependencies, request: FhirRequest) -> Plan:
        registry = self.registry_for(request.tenant)
        target = search_target(request, registry)
        deps.policy.authorize(request, target.interaction, target.resource_type)
        params = search_params(request)
        cursors = [value for name, value in params if name == paging.CURSOR]
        strict = prefer_handling(request) == "strict"
        query = parse(
            target.resource_type, [p for p in params if p[0] != paging.CURSOR], strict=strict, registry=registry
        )
        query = self.admit(query, strict=strict)
        count = self.settings.default_count if query.count is None else min(query.count, self.settings.max_count)
        if query.count is not None:
            query.count = count
        types = (target.resource_type,) if target.resource_type else query.types
        scope = SearchScope(
            tenant=request.tenant,
            base_url=request.base_url,
            types=types,
            compartment=target.compartment,
            access=access_rules(deps.policy, request, types),
        )
        query_string = query.to_query_string()
        base_link = f"{request.base_url}{target.path}" + (f"?{query_string}" if query_string else "")
        digest = paging.digest(request.tenant, target.path, query_string)
        cursor = cursors[-1] if cursors else None
        position = paging.decode(deps.cursors, cursor, digest) if cursor else None
        if position is not None and len(position.values) != len(query.sort) + 2:
            raise BadRequest(f"{paging.CURSOR} is not a valid paging cursor", expression=paging.CURSOR)
        return Plan(target, query, scope, count, base_link, digest, position, cursor)

    def admit(self, query: Query, *, strict: bool) -> Query:
        """``query`` without what this backend cannot do (lenient), or a 400 for it (strict)."""
        issues = list(query.ignored)

        def refuse(name: str, reason: str) -> None:
            message = f"{reason} (parameter '{name}')"
            if strict:
                raise BadRequest(message, expression=name)
            issues.append(Issue("not-supported", message, (name,), "warning"))

        criteria: list[Criterion] = []
        for criterion in query.criteria:
            if depth(criterion) > MAX_DEPTH:
                name = criterion_name(criterion)
                message = (
                    f"'{name}' nests chains and _has {depth(criterion)} levels deep; this server allows {MAX_DEPTH}"
                )
                raise BadRequest(message, issues=[Issue("too-costly", message, (name,))])
            reason = self.engine.unsupported(criterion)
            if reason is None:
                criteria.append(criterion)
            else:
                refuse(criterion_name(criterion), reason)
        sort: list[SortKey] = []
        for key in query.sort:
            if self.engine.sortable(key):
                sort.append(key)
            else:
                refuse("_sort", f"sorting by {key.param.type} parameter '{key.param.code}' is not supported")
        if query.contained not in (None, "false"):
            refuse("_contained", "searching contained resources (_contained) is not supported")
        if query.contained_type is not None:
            refuse("_containedType", "_containedType is not supported")
        return dataclasses.replace(
            query, criteria=tuple(criteria), sort=tuple(sort), contained=None, contained_type=None, ignored=issues
        )

    # -- running ----------------------------------------------------------------------------

    def run(self, deps: Dependencies, request: FhirRequest, plan: Plan) -> SearchResult:
        query, scope = plan.query, plan.scope
        issues = list(query.ignored)
        summary_only = query.summary == "count" or plan.count == 0
        page = Page([], more=False)
        if not summary_only:
            position = plan.position
            after = position.values if position is not None and position.forward else None
            before = position.values if position is not None and not position.forward else None
            page = self.engine.page(scope, query, PageRequest(plan.count, after=after, before=before))
        included: list[Hit] = []
        if page.hits and (query.includes or query.revincludes):
            found = self.engine.include(
                scope,
                page.hits,
                query.includes,
                query.revincludes,
                max_depth=self.settings.include_depth,
                limit=self.settings.max_includes,
            )
            included = admitted_includes(deps.policy, request, found.hits)
            if found.truncated:
                issues.append(
                    Issue(
                        "too-costly",
                        f"_include/_revinclude added the first {self.settings.max_includes} resources only",
                        ("_include",),
                        "warning",
                    )
                )
        mode = "accurate" if query.summary == "count" else query.total or self.settings.default_total
        total = self.engine.count(scope, query) if mode != "none" else None
        links = self.links(deps, plan, page)
        return SearchResult(links, page.hits, included, total, issues)

    def links(self, deps: Dependencies, plan: Plan, page: Page) -> Links:
        base = plan.base_link
        sep = "&" if "?" in base else "?"

        def url(token: str) -> str:
            return f"{base}{sep}{paging.CURSOR}={quote(token, safe='')}"

        links = Links(self=url(plan.cursor) if plan.cursor else base, first=base)
        hits = page.hits
        forward = plan.position is None or plan.position.forward
        if hits and (page.more if forward else True):
            links.next = url(paging.encode(deps.cursors, plan.digest, hits[-1].position, forward=True))
        if hits and (plan.position is not None if forward else page.more):
            links.previous = url(paging.encode(deps.cursors, plan.digest, hits[0].position, forward=False))
        return links
