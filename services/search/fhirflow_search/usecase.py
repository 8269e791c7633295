"""Type, system and compartment search (http://hl7.org/fhir/R4/http.html#search, search.html).

The query is parsed once into the AST (:mod:`fhirflow.query`); token ``:in``/``:not-in``/``:above``/
``:below`` are expanded from the ValueSets and CodeSystems stored in the tenant
(:mod:`fhirflow.query.terminology`). What this server cannot do (a modifier that needs a
terminology service, ``_contained``, sorting on a composite) follows ``Prefer: handling`` —
lenient (the default) leaves it out and says so in an OperationOutcome entry, strict answers
400 naming the parameter. The backend compiles the rest together with the tenant, the
compartment and the access policy's constraint, and pages by signed keyset cursors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from fhirflow.errors import BadRequest, Issue
from fhirflow.http import prefer_handling
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.query.ast import Criterion, Filter, Query, SortKey
from fhirflow.query.parser import parse
from fhirflow.query.render import criterion_name
from fhirflow.query.terminology import (
    Ambiguous,
    CachedTerminology,
    NeedsTerminology,
    Terminology,
    expand,
    uses_terminology,
)
from fhirflow.reindex_ports import SearchParamCatalog
from fhirflow.runtime import Dependencies
from fhirflow.search_access import access_rules, include_admission, limit_chains
from fhirflow.search_ports import Hit, Page, PageRequest, SearchEngine, SearchScope
from fhirflow.searchparams.registry import Registry, default_registry
from fhirflow_search import paging
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
    expanded: Query | None = None
    """What the backend runs when it differs from ``query``: terminology modifiers replaced by
    their codes (``query`` keeps them as written, for the links and the cursors' digest)."""

    @property
    def run_query(self) -> Query:
        return self.expanded or self.query


@dataclass(frozen=True, slots=True)
class Admitted:
    query: Query
    """What will be searched, as written (the links and the cursors' digest use it)."""
    expanded: Query | None
    """The same with terminology modifiers replaced by their codes; None when there were none."""


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
        terminology = CachedTerminology(StoredTerminology(self, request, registry))  # read once for all parameters
        written = self.admit(query, strict=strict, terminology=terminology)
        query, expanded = written.query, written.expanded
        count = self.settings.default_count if query.count is None else min(query.count, self.settings.max_count)
        if query.count is not None:
            query.count = count
            if expanded is not None:
                expanded.count = count
        # Chains and _has look at other resources: only at those this principal may search.
        limited = limit_chains(deps.policy, request, expanded or query)
        if limited is not (expanded or query):
            expanded = limited
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
        return Plan(target, query, scope, count, base_link, digest, position, cursor, expanded)

    def admit(self, query: Query, *, strict: bool, terminology: Terminology | None = None) -> Admitted:
        """``query`` without what this backend cannot do (lenient), or a 400 for it (strict);
        terminology modifiers are expanded from ``terminology`` (:mod:`fhirflow.query.terminology`)
        into the query the backend runs."""
        issues = list(query.ignored)

        def refuse(name: str, reason: str) -> None:
            message = f"{reason} (parameter '{name}')"
            if strict:
                raise BadRequest(message, issues=[Issue("not-supported", message, (name,))])
            issues.append(Issue("not-supported", message, (name,), "warning"))

        criteria: list[Criterion] = []
        run: list[Criterion] = []
        for written in query.criteria:
            criterion = written
            if depth(criterion) > MAX_DEPTH:
                name = criterion_name(criterion)
                message = (
                    f"'{name}' nests chains and _has {depth(criterion)} levels deep; this server allows {MAX_DEPTH}"
                )
                raise BadRequest(message, issues=[Issue("too-costly", message, (name,))])
            if terminology is not None and uses_terminology(criterion):
                try:
                    criterion = expand(criterion, terminology)
                except NeedsTerminology as needs:
                    refuse(criterion_name(written), f"{needs.reason}, which needs a terminology service")
                    continue
            reason = self.engine.unsupported(criterion)
            if reason is None:
                criteria.append(written)
                run.append(criterion)
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
        admitted = dataclasses.replace(
            query, criteria=tuple(criteria), sort=tuple(sort), contained=None, contained_type=None, ignored=issues
        )
        expanded = dataclasses.replace(admitted, criteria=tuple(run)) if run != criteria else None
        return Admitted(admitted, expanded)

    def lookup(
        self, request: FhirRequest, registry: Registry, resource_type: str, params: list[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        """Up to 2 resources of ``resource_type`` in the request's tenant that match ``params``
        (a value set or code system a terminology modifier names). Not the requester's data:
        terminology is read whatever the token's patient or user restriction."""
        query = parse(resource_type, params, strict=True, registry=registry)
        scope = SearchScope(tenant=request.tenant, base_url=request.base_url, types=(resource_type,))
        page = self.engine.page(scope, query, PageRequest(2))
        return [orjson.loads(hit.body) for hit in page.hits]

    # -- running ----------------------------------------------------------------------------

    def run(self, deps: Dependencies, request: FhirRequest, plan: Plan) -> SearchResult:
        query, scope = plan.run_query, plan.scope
        issues = list(query.ignored)
        summary_only = query.summary == "count" or plan.count == 0
        page = Page([], more=False)
        if not summary_only:
            position = plan.position
            after = position.values if position is not None and position.forward else None
            before = position.values if position is not None and not position.forward else None
            page = self.engine.page(scope, query, PageRequest(plan.count, after=after, before=before))
            page = bounded(page, self.settings.page_max_bytes, forward=before is None)
        included: list[Hit] = []
        if page.hits and (query.includes or query.revincludes):
            found = self.engine.include(
                scope,
                page.hits,
                query.includes,
                query.revincludes,
                max_depth=self.settings.include_depth,
                limit=self.settings.max_includes,
                admits=include_admission(deps.policy, request),
            )
            included = found.hits
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


class StoredTerminology:
    """The ValueSets and CodeSystems stored in the request's tenant, found through the search
    backend (:class:`fhirflow.query.terminology.Terminology`)."""

    def __init__(self, service: SearchService, request: FhirRequest, registry: Registry) -> None:
        self.service, self.request, self.registry = service, request, registry

    def value_set(self, reference: str) -> dict[str, Any] | None:
        local = reference.removeprefix(self.request.base_url.rstrip("/") + "/")
        kind, _, id_ = local.partition("/")
        if kind == "ValueSet" and id_ and "/" not in id_:
            return self._one("ValueSet", [("_id", id_)], reference)
        url, _, version = reference.partition("|")
        return self._one("ValueSet", [("url", url)] + ([("version", version)] if version else []), reference)

    def code_system(self, url: str) -> dict[str, Any] | None:
        return self._one("CodeSystem", [("url", url)], url)

    def _one(self, resource_type: str, params: list[tuple[str, str]], named: str) -> dict[str, Any] | None:
        found = self.service.lookup(self.request, self.registry, resource_type, params)
        if len(found) > 1:
            raise Ambiguous(
                f"several {resource_type}s on this server are '{named[:200]}': name one by its version "
                f"(url|version) or as {resource_type}/[id]"
            )
        return found[0] if found else None


def bounded(page: Page, max_bytes: int, *, forward: bool) -> Page:
    """``page`` with no more matches than weigh ``max_bytes`` (at least one), keeping those nearest
    the cursor: the first ones of a forward page, the last ones of a backward one. What is left out
    follows in the paging direction (``more``), so the links lead to it."""
    hits = page.hits if forward else page.hits[::-1]
    kept: list[Hit] = []
    weight = 0
    for hit in hits:
        weight += len(hit.body)
        if kept and weight > max_bytes:
            break
        kept.append(hit)
    if len(kept) == len(hits):
        return page
    return Page(kept if forward else kept[::-1], more=True)
