"""FHIR search AST (:mod:`fhirflow.query`) → an OpenSearch :class:`SearchPlan` (DESIGN.md §4).

``compile_query`` turns a parsed :class:`Query` into the requests that answer it; the
executor (``search.py``) runs them. Every request of the plan filters on the tenant and skips
tombstones; criteria are ``filter`` clauses (cached, unscored) except ``_text``/``_content``,
which score. How each value type and prefix is matched is documented in ``clauses.py``; how
chains, ``_has`` and includes run without joins in ``plan.py``.

Refused with a 400 naming the parameter (``not-supported``), because answering would need
what this backend does not have: token ``:above``/``:below``/``:in``/``:not-in`` (a
terminology server: subsumption and value set expansion), functional lists (``_list=$current-…``),
``_contained=true|both`` (contained resources are not indexed), and ``_sort`` on composite or
special parameters (no single value to order by). ``_list=id`` is a lookup of List/id's items.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fhirflow.adapters.opensearch.clauses import (
    MAX_CLAUSES,
    MAX_PATTERN,
    Clause,
    PatternTooLong,
    all_of,
    any_of,
    date_clause,
    exists,
    identifier_clause,
    leaf_count,
    near_clause,
    nested,
    none_of,
    number_clause,
    prefix,
    quantity_clause,
    reference_clause,
    string_clause,
    term,
    terms,
    token_clause,
    token_text_clause,
    uri_clause,
)
from fhirflow.adapters.opensearch.mappings import MAX_COMPONENTS, PATHS
from fhirflow.adapters.opensearch.plan import (
    INCLUDE_KEYS,
    PLACEHOLDER,
    Collect,
    CompileOptions,
    IncludeStep,
    Lookup,
    SearchPlan,
    TotalMode,
)
from fhirflow.errors import BadRequest, Issue
from fhirflow.query.ast import (
    Chain,
    CompositeQuery,
    Criterion,
    DateQuery,
    Filter,
    Has,
    Include,
    MissingQuery,
    NearQuery,
    NumberQuery,
    OfTypeQuery,
    QuantityQuery,
    Query,
    QueryValue,
    ReferenceQuery,
    SortKey,
    SpecialQuery,
    StringQuery,
    TokenQuery,
    UriQuery,
)
from fhirflow.search_ports import AccessRule, Admission
from fhirflow.searchparams.content import query_words
from fhirflow.searchparams.registry import default_registry

# What a page (and an include) returns of each document
SOURCE_FIELDS = ["type", "id", "version", "lastUpdated", "resource"]
REFERENCE_FIELDS = ["references.p", "references.ref"]
TEXT_FIELDS = {"_text": "narrative", "_content": "content"}
TERMINOLOGY_MODIFIERS = frozenset(("above", "below", "in", "not-in"))
REFERENCES = PATHS["reference"]
MATCH_ALL: Clause = {"match_all": {}}
MATCH_NONE: Clause = {"match_none": {}}


def not_supported(message: str, name: str) -> BadRequest:
    return BadRequest(message, expression=name, issues=[Issue("not-supported", message, (name,))])


def too_complex(message: str, name: str) -> BadRequest:
    return BadRequest(message, expression=name, issues=[Issue("too-costly", message, (name,))])


def check_size(query: Clause, sizes: dict[str, int]) -> None:
    """Refuse a request the search index would refuse (more than MAX_CLAUSES leaf queries), naming
    the parameter that brings the most of them (``sizes``: clauses per parameter)."""
    total = leaf_count(query)
    if total <= MAX_CLAUSES:
        return
    name = max(sizes, key=lambda n: sizes[n]) if sizes else "_query"
    message = (
        f"This search needs {total} conditions in the search index, which takes at most {MAX_CLAUSES} per "
        f"query ('{name}' brings {sizes.get(name, 0)}): use fewer values or words"
    )
    raise too_complex(message, name)


def describe(criterion: Criterion) -> str:
    """The parameter name as the client wrote it (normalised), for error messages."""
    if isinstance(criterion, Filter):
        return criterion.param.code + (f":{criterion.modifier}" if criterion.modifier else "")
    if isinstance(criterion, Chain):
        return f"{criterion.param.code}:{criterion.target_type}.{describe(criterion.criterion)}"
    return f"_has:{criterion.source_type}:{criterion.reference.code}:{describe(criterion.criterion)}"


def compile_query(
    query: Query,
    *,
    tenant: str,
    compartment: tuple[str, str] | None = None,
    page_size: int,
    search_after: list[object] | None,
    options: CompileOptions | None = None,
    access: Sequence[AccessRule] | None = None,
) -> SearchPlan:
    """The plan answering ``query`` for ``tenant``, restricted to ``compartment`` (type, id)
    when given and to what the access policy's ``access`` rules admit; one page of ``page_size``
    after the ``search_after`` sort values of the last hit of the previous page (None: the first)."""
    compiler = Compiler(tenant, options or CompileOptions())
    return compiler.compile(query, compartment, page_size, search_after, access)


class Compiler:
    def __init__(self, tenant: str, options: CompileOptions) -> None:
        self.tenant = tenant
        self.options = options
        self.now = options.now if options.now is not None else int(time.time() * 1000)
        self.lookups: list[Lookup] = []
        self.current = ""  # the top-level parameter being compiled: what a too-costly lookup names
        self.sizes: dict[str, int] = {}  # leaf clauses of the page query per parameter (check_size)

    # -- the plan ----------------------------------------------------------------------------

    def compile(
        self,
        query: Query,
        compartment: tuple[str, str] | None,
        page_size: int,
        search_after: list[object] | None,
        access: Sequence[AccessRule] | None = None,
    ) -> SearchPlan:
        if query.contained in ("true", "both"):
            raise not_supported("_contained: contained resources are not searchable on this server", "_contained")
        types = (query.resource_type,) if query.resource_type is not None else query.types
        filters = self.base_filters(types)
        if compartment is not None:
            filters.append(term("compartments", f"{compartment[0]}/{compartment[1]}"))
        if access is not None:
            filters.append(self.access(access))
        scored: list[Clause] = []
        for criterion in query.criteria:
            self.current = describe(criterion)
            clause, is_scored = self.criterion(criterion, types)
            (scored if is_scored else filters).append(clause)
            self.sizes[self.current] = self.sizes.get(self.current, 0) + leaf_count(clause)
        count_only = query.summary == "count" or page_size == 0
        total = self.total_mode(query, count_only=count_only)
        body = self.page_body(query, filters, scored, count_only, page_size, search_after, total)
        check_size(body["query"], self.sizes)
        includes = () if count_only else self.include_steps(query)
        return SearchPlan(
            resource_types=types,
            body=body,
            page_size=0 if count_only else page_size,
            total=total,
            count_only=count_only,
            lookups=tuple(self.lookups),
            includes=includes,
            include_limit=self.options.include_limit if includes else 0,
            iterate_rounds=self.options.iterate_rounds if any(i.iterate for i in includes) else 0,
        )

    def base_filters(self, types: tuple[str, ...]) -> list[Clause]:
        """What every request carries: the tenant, no tombstones, and the resource types."""
        filters = [term("tenant", self.tenant), term("deleted", False)]
        if len(types) == 1:
            filters.append(term("type", types[0]))
        elif types:
            filters.append(terms("type", list(types)))
        return filters

    @staticmethod
    def total_mode(query: Query, *, count_only: bool) -> TotalMode:
        """``_total`` (search.html#total); a count (``_summary=count``, ``_count=0``) is exact
        unless the client asked for less."""
        if query.summary == "count" or (count_only and query.total is None):
            return "accurate"
        return query.total or "default"

    def page_body(
        self,
        query: Query,
        filters: list[Clause],
        scored: list[Clause],
        count_only: bool,
        page_size: int,
        search_after: list[object] | None,
        total: TotalMode,
    ) -> dict[str, Any]:
        boolean: dict[str, Any] = {"filter": filters}
        if scored:
            boolean["must"] = scored
        body: dict[str, Any] = {"query": {"bool": boolean}}
        hits: bool | int = {"none": False, "accurate": True}.get(total, self.options.estimate_hits)
        if count_only:
            body.update(size=0, track_total_hits=hits)
            return body
        body["sort"] = self.sort(query.sort, scored=bool(scored))
        body["size"] = page_size + 1  # one more: tells whether there is a next page
        body["track_total_hits"] = hits
        body["_source"] = SOURCE_FIELDS + (REFERENCE_FIELDS if query.includes else [])
        if search_after is not None:
            body["search_after"] = list(search_after)
        return body

    def access(self, rules: Sequence[AccessRule]) -> Clause:
        """The access policy's constraint (DESIGN.md §5), as part of the query so that totals and
        paging are exact: a resource must satisfy the rule for its type (or the rule for every
        type): one of its admissions (a compartment and granular criteria), and, when the rule
        names patients, be in no Patient compartment or in one of theirs."""
        alternatives: list[Clause] = []
        for rule in rules:
            types = (rule.resource_type,) if rule.resource_type else ()
            admitted = [self.admission(admission, types) for admission in rule.admissions]
            parts = [term("type", rule.resource_type)] if rule.resource_type else []
            parts.append(any_of(*admitted) if admitted else MATCH_NONE)
            if rule.patients is not None:
                members = [f"Patient/{patient}" for patient in sorted(rule.patients)]
                outside = none_of(prefix("compartments", "Patient/"))
                parts.append(any_of(outside, terms("compartments", members)) if members else outside)
            alternatives.append(all_of(*parts))
        return any_of(*alternatives) if alternatives else MATCH_NONE

    def admission(self, admission: Admission, types: tuple[str, ...]) -> Clause:
        parts: list[Clause] = []
        if admission.compartment is not None:
            parts.append(term("compartments", f"{admission.compartment[0]}/{admission.compartment[1]}"))
        for criterion in admission.criteria:
            self.current = describe(criterion)
            parts.append(self.criterion(criterion, types)[0])
        return all_of(*parts) if parts else MATCH_ALL

    # -- criteria ----------------------------------------------------------------------------

    def criterion(self, criterion: Criterion, types: tuple[str, ...]) -> tuple[Clause, bool]:
        """A criterion's clause, and whether it scores (full-text ``_text``/``_content``)."""
        if isinstance(criterion, Chain):
            return self.chain(criterion), False
        if isinstance(criterion, Has):
            return self.has(criterion, types), False
        if criterion.param.code in TEXT_FIELDS:
            return self.text(criterion), criterion.modifier != "missing"
        if criterion.param.code == "_list":
            return self.list_members(criterion, types), False
        return self.filter(criterion), False

    def filter(self, criterion: Filter) -> Clause:
        try:
            return self._filter(criterion)
        except PatternTooLong as long:
            name = describe(criterion)
            message = f"'{name}': a value of {long.args[0]} characters is too long here (at most {MAX_PATTERN})"
            raise too_complex(message, name) from long

    def _filter(self, criterion: Filter) -> Clause:
        param, modifier, name = criterion.param, criterion.modifier, describe(criterion)
        if param.type == "token" and modifier in TERMINOLOGY_MODIFIERS:
            message = f"'{name}': :{modifier} needs a terminology service, which this server does not have"
            raise not_supported(message, name)
        if param.type == "composite" and len(param.components) > MAX_COMPONENTS:
            raise not_supported(f"'{name}': composites of more than {MAX_COMPONENTS} components are not indexed", name)
        if param.code == "_id" and modifier is None:
            ids = [v.code for v in criterion.values if isinstance(v, TokenQuery) and v.system is None]
            if len(ids) == len(criterion.values):
                return term("id", ids[0]) if len(ids) == 1 else terms("id", ids)
        path = PATHS[param.type]
        has_value = term(f"{path}.p", param.code)
        if modifier == "missing":
            [missing] = criterion.values
            assert isinstance(missing, MissingQuery)
            return none_of(nested(path, has_value)) if missing.missing else nested(path, has_value)
        clauses = [self.value(param.type, modifier, value, path, name, param.components) for value in criterion.values]
        # No values: a value set with no codes (token :in after expansion) matches nothing.
        match = nested(path, has_value, any_of(*clauses)) if clauses else MATCH_NONE
        return none_of(match) if modifier == "not" else match

    def value(
        self, ptype: str, modifier: str | None, value: QueryValue, at: str, name: str, components: tuple[Any, ...] = ()
    ) -> Clause:
        """The clause for one OR-ed value, on the fields under ``at``."""
        if isinstance(value, StringQuery):
            if ptype == "token":  # :text (search.html#token): a word of the display text
                return token_text_clause(value, at)
            return string_clause(value, modifier, at)
        if isinstance(value, TokenQuery):
            return identifier_clause(value, at) if ptype == "reference" else token_clause(value, at)
        if isinstance(value, OfTypeQuery):  # search.html#token :of-type: Identifier.type and value
            of_type = f"{value.type_system}|{value.type_code}"
            return all_of(term(f"{at}.code", value.value), term(f"{at}.of_type", of_type))
        if isinstance(value, DateQuery):
            return date_clause(value, at, self.now)
        if isinstance(value, QuantityQuery):
            return quantity_clause(value, at)
        if isinstance(value, NumberQuery):
            return number_clause(value, at)
        if isinstance(value, ReferenceQuery):
            return reference_clause(value, at, self.options.base_url)
        if isinstance(value, UriQuery):
            return uri_clause(value, modifier, at)
        if isinstance(value, NearQuery):
            return near_clause(value, at, self.options.near_distance_km, name)
        if isinstance(value, CompositeQuery):  # one clause per component, on the same tuple
            return all_of(
                *(
                    self.value(component.type, None, part, f"{at}.c{index}", name)
                    for index, (component, part) in enumerate(zip(components, value.components, strict=True))
                )
            )
        raise not_supported(f"'{name}': this kind of value is not supported", name)

    def text(self, criterion: Filter) -> Clause:
        """``_text`` (narrative) and ``_content`` (narrative and the resource's words), as
        ``searchparams/content.py`` defines them for both backends: every word of a value starts
        a word of the text (``prefix`` on the analysed field's terms; ``:exact``: is one, ``term``),
        commas are alternatives. The words are folded in Python as the field's analyzer folds
        the text, because ``prefix`` and ``term`` queries are not analysed."""
        field = TEXT_FIELDS[criterion.param.code]
        if criterion.modifier == "missing":
            [missing] = criterion.values
            assert isinstance(missing, MissingQuery)
            return none_of(exists(field)) if missing.missing else exists(field)
        word = term if criterion.modifier == "exact" else prefix
        clauses: list[Clause] = []
        for value in criterion.values:
            assert isinstance(value, StringQuery)
            words = query_words(value.text)
            if words:
                clauses.append(all_of(*(word(field, w) for w in words)))
        return any_of(*clauses) if clauses else MATCH_NONE

    # -- chains and reverse chains (two-phase, see plan.py) -------------------------------------

    def chain(self, chain: Chain) -> Clause:
        """``param.criterion``: references through ``param`` to the keys the lookup collects."""
        name = self.lookup(chain.target_type, chain.criterion, collect="key", access=chain.access)
        return nested(
            REFERENCES, term(f"{REFERENCES}.p", chain.param.code), terms(f"{REFERENCES}.ref", {PLACEHOLDER: name})
        )

    def has(self, has: Has, types: tuple[str, ...]) -> Clause:
        """``_has:T:ref:criterion``: our keys among the ``ref`` references of matching ``T``."""
        reference = has.reference.code
        name = self.lookup(
            has.source_type, has.criterion, collect="reference", reference=reference, to=types, access=has.access
        )
        return terms("key", {PLACEHOLDER: name})

    def list_members(self, criterion: Filter, types: tuple[str, ...]) -> Clause:
        """``_list=id`` (search.html#list): our keys among the ``entry.item`` references (List's
        ``item`` parameter) of List/id, i.e. ``_has:List:item:_id=id``, as SQLite's list_condition."""
        ids = [v.value for v in criterion.values if isinstance(v, SpecialQuery)]
        if any(i.startswith("$") for i in ids):
            raise BadRequest("_list: functional lists ($current-...) are not supported", expression="_list")
        id_param = default_registry().common("_id")
        assert id_param is not None, "_id is a parameter of every resource"
        lists = Filter(id_param, None, tuple(TokenQuery(None, i) for i in ids))
        name = self.lookup("List", lists, collect="reference", reference="item", to=types)
        return terms("key", {PLACEHOLDER: name})

    def lookup(
        self,
        resource_type: str,
        criterion: Criterion,
        *,
        collect: Collect,
        reference: str | None = None,
        to: tuple[str, ...] = (),
        access: AccessRule | None = None,
    ) -> str:
        """Add the lookup for ``criterion`` on ``resource_type`` (after those it needs), limited by
        ``access`` to the resources the searcher may see."""
        clause, _ = self.criterion(criterion, (resource_type,))  # scoring is irrelevant here
        filters = [*self.base_filters((resource_type,)), clause]
        if access is not None:
            parameter = self.current
            filters.append(self.access((access,)))
            self.current = parameter  # the lookup is named after the parameter, not the rule's criteria
        if reference is not None:  # only resources that reference the searched types that way
            targets = any_of(*(prefix(f"{REFERENCES}.ref", f"{t}/") for t in to))
            filters.append(nested(REFERENCES, term(f"{REFERENCES}.p", reference), targets))
        limit = self.options.lookup_limit
        query: Clause = {"bool": {"filter": filters}}
        check_size(query, {self.current: leaf_count(clause)})
        body = {
            "query": query,
            "sort": ["_doc"],
            "size": limit + 1,
            "track_total_hits": False,
            "_source": ["key"] if collect == "key" else REFERENCE_FIELDS,
        }
        name = f"lookup-{len(self.lookups)}"
        self.lookups.append(Lookup(name, self.current, resource_type, body, collect, limit, reference, to))
        return name

    # -- sort and includes -------------------------------------------------------------------

    def sort(self, keys: tuple[SortKey, ...], *, scored: bool) -> list[Any]:
        """``_sort`` (search.html#sort): several values sort by the lowest ascending and the
        highest descending; resources without a value come last; ``key`` breaks ties."""
        by_score = scored and not keys and self.options.relevance_sort
        out: list[Any] = [{"_score": {"order": "desc"}}] if by_score else []
        out.extend(self.sort_key(key) for key in keys)
        out.append({"key": {"order": "asc"}})
        return out

    @staticmethod
    def sort_key(key: SortKey) -> dict[str, Any]:
        order = "desc" if key.descending else "asc"
        code, ptype = key.param.code, key.param.type
        if code == "_id":
            return {"id": {"order": order}}
        if code == "_lastUpdated":
            return {"lastUpdated": {"order": order}}
        fields = {
            "string": ("norm", "norm"),
            "token": ("code", "code"),
            "date": ("start", "end"),
            "number": ("low", "high"),
            "quantity": ("low", "high"),
            "reference": ("ref", "ref"),
            "uri": ("uri", "uri"),
        }
        if ptype not in fields or code in TEXT_FIELDS:
            raise not_supported(f"_sort: cannot sort by {ptype} parameter '{code}'", "_sort")
        path = PATHS[ptype]
        field = fields[ptype][1 if key.descending else 0]
        return {
            f"{path}.{field}": {
                "order": order,
                "mode": "max" if key.descending else "min",
                "missing": "_last",
                "nested": {"path": path, "filter": term(f"{path}.p", code)},
            }
        }

    def include_steps(self, query: Query) -> tuple[IncludeStep, ...]:
        source = SOURCE_FIELDS + (REFERENCE_FIELDS if query.includes else [])
        steps = [self.include_step(include, False, source) for include in query.includes]
        steps += [self.include_step(include, True, source) for include in query.revincludes]
        return tuple(steps)

    def include_step(self, include: Include, reverse: bool, source: list[str]) -> IncludeStep:
        code = include.param.code if include.param else None
        keys = {PLACEHOLDER: INCLUDE_KEYS}
        if reverse:  # resources of source_type whose `code` references one of the keys
            types = (include.source_type,) if include.source_type else ()
            refs = [term(f"{REFERENCES}.p", code)] if code else []
            filters = [*self.base_filters(types), nested(REFERENCES, *refs, terms(f"{REFERENCES}.ref", keys))]
        else:  # the referenced resources themselves (the executor collects their keys)
            filters = [*self.base_filters(()), terms("key", keys)]
        body = {
            "query": {"bool": {"filter": filters}},
            "sort": [{"key": {"order": "asc"}}],
            "size": self.options.include_limit + 1,
            "track_total_hits": False,
            "_source": source,
        }
        return IncludeStep(reverse, include.iterate, include.source_type, code, include.target_type, body)
