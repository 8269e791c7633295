"""Subscription criteria: a FHIR search compiled once into a test of one resource.

``Subscription.criteria`` (R4, subscription.html) and the Backport IG's filter criteria are search
strings. They are parsed with the search grammar (:mod:`fhirflow.query`) against the registry the
tenant's searches use, so a criterion the search service would refuse is refused here too, and
each filter becomes a Python test over the index values that :mod:`fhirflow.searchparams`
extracts for the search index. A resource matches exactly when the same search, restricted to
that resource, would return it (``tests/search/test_subscription_matching.py`` checks this over
the whole search conformance table).

The comparison rules mirror the SQLite compiler (``fhirflow/adapters/sqlite/search/conditions.py``
and ``criteria.py``) over the same values; they live here, beside the matcher, until the search
backends' rules are unified in :mod:`fhirflow.query` (branch ``search-semantics``), at which point
both should read one definition.

Refused with a 400 naming the parameter (``expression`` is the element the criteria came from):
result parameters (``_include``, ``_sort``, ``_count``, ``_summary``...), which shape a result set,
not a match; terminology modifiers (``:in``, ``:not-in``, ``:above``, ``:below``) unless a
:class:`~fhirflow.query.terminology.Terminology` is given, in which case they are expanded once,
at compile time; chains, ``_has`` and ``_list`` (membership in a List) unless the caller compiles
with ``chains=True``, promising a :class:`Resolver` at match time. A chain is then evaluated on the
referenced resources' current versions, ``_has`` on the resources that refer to the changed one
and ``_list`` on the List, as the search would at that moment; a change to those other resources
does not by itself notify (it is not a change of the subscribed type).
"""

from __future__ import annotations

import math
import operator
import re
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

from fhirflow.errors import BadRequest, FhirError, Issue
from fhirflow.query import prefixes
from fhirflow.query.ast import (
    Chain,
    CompositeQuery,
    Criterion,
    DateQuery,
    Filter,
    Has,
    MissingQuery,
    NearQuery,
    NumberQuery,
    OfTypeQuery,
    QuantityQuery,
    QueryValue,
    ReferenceQuery,
    SpecialQuery,
    StringQuery,
    TokenQuery,
    UriQuery,
)
from fhirflow.query.parser import parse
from fhirflow.query.terminology import NeedsTerminology, Terminology, expand, uses_terminology
from fhirflow.query.uris import uri_ancestors
from fhirflow.searchparams.dates import date_range
from fhirflow.searchparams.extract import extractor_for, narrative_text
from fhirflow.searchparams.registry import Registry, SearchParam, default_registry
from fhirflow.searchparams.values import (
    CompositeValue,
    DateValue,
    IndexValue,
    NumberValue,
    PositionValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    normalize_string,
)

if TYPE_CHECKING:
    from fhirflow.reindex_ports import SearchParamCatalog

RESULT_PARAMETERS = frozenset(
    (
        *("_include", "_revinclude", "_sort", "_count", "_summary", "_elements", "_total"),
        *("_contained", "_containedType", "_type", "_format", "_pretty", "_query", "_filter"),
    )
)
"""search.html#return and the system-search/format parameters: they shape a response, not a match."""
TERMINOLOGY_MODIFIERS = frozenset(("in", "not-in", "above", "below"))
_TYPE = re.compile(r"[A-Z][A-Za-z]+")
_RELATIVE = re.compile(r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})")
_WORD = re.compile(r"[^\W_]+")
_KM_PER_DEGREE_LAT = 110.574
_KM_PER_DEGREE_LON = 111.320
_DEFAULT_NEAR_KM = 50.0
_UNITS_KM = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344, "[mi_us]": 1.609347, "mi": 1.609344}

MAX_DEPTH = 8
"""Levels of chaining and ``_has`` one parameter may nest (as in search)."""
Key = tuple[str, str, str]
"""A discriminator: (parameter code, kind, value) — ``("code", "t", "8867-4")``, ``("subject", "r", "123")``."""


# ---------------------------------------------------------------------------------------------
# What a resource offers the tests: its index values, extracted once per change


class Resolver(Protocol):
    """Other resources of the change's tenant, for chains and ``_has`` (the current versions)."""

    def read(self, resource_type: str, id_: str) -> Mapping[str, Any] | None:
        """The current version of ``resource_type/id_``, None when there is none (or it is deleted)."""
        ...

    def referencing(
        self, source_type: str, param: str, target_type: str, target_id: str
    ) -> Iterable[Mapping[str, Any]]:
        """The ``source_type`` resources whose reference parameter ``param`` points at
        ``target_type/target_id`` on this server: what ``GET /{source_type}?{param}={target_type}/{target_id}``
        returns."""
        ...


class Facts:
    """One resource version as the tests see it: the index values of the parameters asked for,
    extracted on first use with the search index's own extractor, and shared by every criterion
    evaluated against this version (the matcher builds one per change and registry)."""

    __slots__ = (
        "_content",
        "_fetched",
        "_last_updated",
        "_narrative",
        "_values",
        "extractor",
        "memo",
        "now_ms",
        "registry",
        "resolver",
        "resource",
    )

    def __init__(
        self,
        resource: Mapping[str, Any],
        registry: Registry,
        *,
        codes: frozenset[str] = frozenset(),
        now_ms: int | None = None,
        last_updated: int | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.resource: dict[str, Any] = resource if isinstance(resource, dict) else dict(resource)
        self.registry = registry
        self.resolver = resolver
        self.extractor = extractor_for(registry)
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self._last_updated: list[int | None] = [] if last_updated is None else [last_updated]
        self._values: dict[str, list[IndexValue]] = {}
        self.memo: dict[Test, bool] = {}
        """Test → its outcome on this version (tests are deterministic for one Facts)."""
        self._fetched: set[frozenset[str]] = set()
        self._narrative: list[str | None] = []
        self._content: list[str] = []
        if codes:
            self.prefetch(codes)

    def other(self, resource: Mapping[str, Any]) -> Facts:
        """Another resource (a chain's target, a ``_has`` source), judged at the same moment."""
        return Facts(resource, self.registry, now_ms=self.now_ms, resolver=self.resolver)

    def needs_resolver(self) -> Resolver:
        if self.resolver is None:
            raise ValueError("criteria with chains or _has need a resolver to match")
        return self.resolver

    def prefetch(self, codes: frozenset[str]) -> None:
        """Extract the values of ``codes`` not yet extracted, in one pass."""
        if codes in self._fetched:  # every candidate asks; a frozenset caches its hash
            return
        self._fetched.add(codes)
        wanted = tuple(c for c in codes if c not in self._values)
        if not wanted:
            return
        found = self.extractor.values(self.resource, codes=wanted)
        for code in wanted:
            self._values[code] = found.get(code, [])

    def values(self, code: str) -> list[IndexValue]:
        found = self._values.get(code)
        if found is None:  # only what a test reaches: most candidates fail on their first filter
            found = self._values[code] = self.extractor.values_of(self.resource, code)
        return found

    @property
    def last_updated(self) -> int | None:
        """``meta.lastUpdated`` in epoch ms, parsed only when a ``_lastUpdated`` test asks."""
        if not self._last_updated:
            meta = self.resource.get("meta")
            stamp = meta.get("lastUpdated") if isinstance(meta, dict) else None
            found = date_range(stamp) if isinstance(stamp, str) else None
            self._last_updated.append(found[0] if found else None)
        return self._last_updated[0]

    @property
    def narrative(self) -> str | None:
        if not self._narrative:
            self._narrative.append(narrative_text(self.resource))
        return self._narrative[0]

    @property
    def content(self) -> str:
        if not self._content:
            # what the embedded index stores for _content (one definition of "the resource's words")
            from fhirflow.searchparams.content import content_text

            self._content.append(content_text(self.resource))
        return self._content[0]


Test = Callable[[Facts], bool]
_SHARED_TESTS: weakref.WeakValueDictionary[tuple[Any, ...], Test] = weakref.WeakValueDictionary()
"""(registry, type, parameter, value, n, base) → its compiled test, while some criteria hold it:
subscriptions that share a filter (``subject=Patient/1``, ``category=vital-signs``) share one test,
which :meth:`CompiledCriteria.evaluate` runs once per change (:attr:`Facts.memo`)."""


# ---------------------------------------------------------------------------------------------
# The compiled criteria


@dataclass(frozen=True, eq=False)
class CompiledCriteria:
    """A search on ``resource_type`` compiled into tests of one resource (ANDed)."""

    resource_type: str
    query: str
    """The normalised query string (for display and ``$status``)."""
    codes: frozenset[str] = field(default=frozenset(), repr=False)
    """The parameters whose values the tests read (what a matcher extracts once per change)."""
    keys: frozenset[Key] | None = field(default=None, repr=False)
    """Discriminator: a matching resource has at least one of these keys (None: no such filter)."""
    registry: Registry = field(default_factory=default_registry, repr=False)
    tests: tuple[Test, ...] = field(default=(), repr=False)
    needs_resolver: bool = False
    """It has chains or ``_has``: matching needs a :class:`Resolver`."""

    def matches(
        self, resource: Mapping[str, Any], *, now_ms: int | None = None, resolver: Resolver | None = None
    ) -> bool:
        """Does ``resource`` (a version of ``resource_type``) meet every criterion? ``now_ms`` is
        "now" for the ``ap`` prefix on dates (default: the clock); ``resolver`` reads the other
        resources chains and ``_has`` look at."""
        if resource.get("resourceType") != self.resource_type:
            return False
        return self.evaluate(Facts(resource, self.registry, codes=self.codes, now_ms=now_ms, resolver=resolver))

    def evaluate(self, facts: Facts) -> bool:
        memo = facts.memo  # a test shared with another candidate ran once for this change
        for test in self.tests:
            passed = memo.get(test)
            if passed is None:
                passed = memo[test] = test(facts)
            if not passed:
                return False
        return True


def _refuse(expression: str, name: str, reason: str, code: str = "invalid") -> BadRequest:
    message = reason if f"'{name}'" in reason else f"{reason} (criteria parameter '{name}')"
    return BadRequest(message, issues=[Issue(code, message, (expression,))])


def parse_r4_criteria(criteria: str, *, expression: str = "Subscription.criteria") -> tuple[str, str]:
    """``Observation?code=x`` → ``("Observation", "code=x")``; a bare type matches every resource
    of it. R4 Subscription.criteria is a search "without the [base]" (subscription.html), so a
    leading ``/``, a base URL, an instance path or an unknown type is a 400."""
    text = criteria.strip()
    rtype, _, query = text.partition("?")
    if not text:
        raise BadRequest("Subscription criteria is empty", expression=expression)
    if not _TYPE.fullmatch(rtype):
        raise BadRequest(
            f"Subscription criteria must be 'Type' or 'Type?query' without a base URL or leading '/', got "
            f"'{criteria[:100]}'",
            expression=expression,
        )
    if not default_registry().is_resource_type(rtype):
        raise BadRequest(f"Subscription criteria names an unknown resource type '{rtype}'", expression=expression)
    return rtype, query


def compile_criteria(
    resource_type: str,
    query: str,
    *,
    tenant: str = "default",
    expression: str = "Subscription.criteria",
    registry: Registry | None = None,
    catalog: SearchParamCatalog | None = None,
    terminology: Terminology | None = None,
    base_url: str = "",
    chains: bool = False,
) -> CompiledCriteria:
    """Compile ``query`` (a search's query string, URL-encoded) on ``resource_type``.

    The registry is ``registry``, else the tenant's searchable registry from ``catalog`` (its runtime
    SearchParameters included), else the official one. ``base_url``: this server's FHIR base, so
    absolute references to it count as local ones, as in search. Any parameter the search would
    ignore or refuse, and any that cannot be decided from one resource, is a 400 whose expression
    is ``expression`` and whose diagnostics name the parameter. ``chains``: accept chains and
    ``_has`` (the matcher then passes a :class:`Resolver`)."""
    if registry is None:
        registry = catalog.searchable_registry(tenant) if catalog is not None else default_registry()
    if not registry.is_resource_type(resource_type):
        raise BadRequest(f"Unknown resource type '{resource_type}' in criteria", expression=expression)
    pairs = parse_qsl(query, keep_blank_values=True)
    tests: list[Test] = []
    codes: set[str] = set()
    best: tuple[int, int, frozenset[Key]] | None = None
    for name, value in pairs:
        base = name.partition(":")[0]
        if base in RESULT_PARAMETERS:
            raise _refuse(expression, name, f"'{base}' shapes a search result and cannot be used in criteria")
        if not chains and (name.startswith("_has:") or "." in name or base == "_list"):
            raise _refuse(
                expression,
                name,
                "chained parameters, _has and _list depend on other resources and are not supported in criteria",
                "not-supported",
            )
        if value == "":
            raise _refuse(expression, name, "the parameter has no value")
        try:
            parsed = parse(resource_type, [(name, value)], strict=True, registry=registry)
        except FhirError as error:
            raise _refuse(expression, name, error.diagnostics) from error
        if parsed.ignored:
            raise _refuse(expression, name, parsed.ignored[0].diagnostics)
        for n, written in enumerate(parsed.criteria):
            if uses_terminology(written):  # an expansion is of its moment: never shared
                criterion = _expand(written, terminology, expression, name)
                tests.append(_compile_criterion(criterion, base_url, expression, name))
            else:
                criterion = written
                shared = (registry, resource_type, name, value, n, base_url)
                test = _SHARED_TESTS.get(shared)
                if test is None:
                    test = _SHARED_TESTS[shared] = _compile_criterion(criterion, base_url, expression, name)
                tests.append(test)
            if isinstance(criterion, Chain):
                codes.add(criterion.param.code)
            if not isinstance(criterion, Filter):
                continue
            flt = criterion
            if flt.param.code not in ("_id", "_lastUpdated", "_text", "_content"):
                codes.add(flt.param.code)
            keys = _keys(flt, base_url)
            if keys is not None:
                rank = (0 if flt.param.code == "_id" else 1 if flt.param.type == "reference" else 2, len(keys))
                if best is None or rank < best[:2]:
                    best = (*rank, keys)
    whole = parse(resource_type, pairs, strict=True, registry=registry) if pairs else None
    return CompiledCriteria(
        resource_type=resource_type,
        query=whole.to_query_string() if whole is not None else "",
        codes=frozenset(codes),
        keys=best[2] if best is not None else None,
        registry=registry,
        tests=tuple(tests),
        needs_resolver=whole is not None
        and any(not isinstance(c, Filter) or c.param.code == "_list" for c in whole.criteria),
    )


def _expand(criterion: Criterion, terminology: Terminology | None, expression: str, name: str) -> Criterion:
    if terminology is None:
        raise _refuse(
            expression,
            name,
            "token :in, :not-in, :above and :below need a terminology service, which is not available here",
            "not-supported",
        )
    try:
        return expand(criterion, terminology)
    except NeedsTerminology as needs:
        raise _refuse(expression, name, f"{needs.reason}, which needs a terminology service", "not-supported") from None
    except FhirError as error:
        raise _refuse(expression, name, error.diagnostics) from error


# ---------------------------------------------------------------------------------------------
# Chains and _has (search.html#chaining, #has), through the resolver


def _depth(criterion: Criterion) -> int:
    levels = 0
    while not isinstance(criterion, Filter):
        levels += 1
        criterion = criterion.criterion
    return levels


def _list_test(flt: Filter, base_url: str, expression: str, name: str) -> Test:
    """``_list=id``: the List ``id`` has this resource as an ``entry.item`` (search.html#list)."""
    if flt.modifier is not None:
        raise _refuse(expression, name, f"':{flt.modifier}' is not supported on _list", "not-supported")
    ids = [v.value for v in flt.values if isinstance(v, SpecialQuery)]
    if any(i.startswith("$") for i in ids):
        raise _refuse(expression, name, "functional lists ($current-...) are not supported", "not-supported")

    def test(f: Facts) -> bool:
        rtype, rid = f.resource.get("resourceType"), f.resource.get("id")
        for list_id in ids:
            found = f.needs_resolver().read("List", list_id)
            if found is None:
                continue
            for value in f.other(found).values("item"):
                row = _reference_row(value) if isinstance(value, ReferenceValue) else None
                if (
                    row is not None
                    and row[0] == rtype
                    and row[1] == rid
                    and (row[3] is None or _is_ours(row[3], base_url))
                ):
                    return True
        return False

    return test


def _compile_criterion(criterion: Criterion, base_url: str, expression: str, name: str) -> Test:
    if _depth(criterion) > MAX_DEPTH:
        raise _refuse(expression, name, f"chains and _has may nest {MAX_DEPTH} levels deep", "too-costly")
    if isinstance(criterion, Filter):
        return _compile_filter(criterion, base_url, expression, name)
    inner = _compile_criterion(criterion.criterion, base_url, expression, name)
    if isinstance(criterion, Chain):
        return _chain_test(criterion, inner, base_url)
    return _has_test(criterion, inner)


def _chain_test(chain: Chain, inner: Test, base_url: str) -> Test:
    """A local reference of ``chain.param`` to a ``target_type`` resource that meets ``inner``."""
    code, target_type = chain.param.code, chain.target_type

    def test(f: Facts) -> bool:
        for value in f.values(code):
            row = _reference_row(value) if isinstance(value, ReferenceValue) else None
            if row is None:
                continue
            rtype, rid, _, url = row
            if rtype != target_type or rid is None or not (url is None or _is_ours(url, base_url)):
                continue
            target = f.needs_resolver().read(target_type, rid)
            if target is not None and inner(f.other(target)):
                return True
        return False

    return test


def _has_test(has: Has, inner: Test) -> Test:
    """A ``source_type`` resource that refers to this one through ``reference`` and meets ``inner``."""
    source_type, code = has.source_type, has.reference.code

    def test(f: Facts) -> bool:
        rtype, rid = f.resource.get("resourceType"), f.resource.get("id")
        if not isinstance(rtype, str) or not isinstance(rid, str):
            return False
        sources = f.needs_resolver().referencing(source_type, code, rtype, rid)
        return any(inner(f.other(source)) for source in sources)

    return test


# ---------------------------------------------------------------------------------------------
# Discriminators (the index's buckets)


def _keys(flt: Filter, base_url: str) -> frozenset[Key] | None:
    """Keys one of which every resource matching ``flt`` has (:func:`resource_keys`); None when
    ``flt`` does not narrow that way (a negation, a range, a modifier...)."""
    param, code = flt.param, flt.param.code
    if flt.modifier is not None:
        return None
    if code == "_id":
        ids = [v.code for v in flt.values if isinstance(v, TokenQuery) and v.code is not None]
        return frozenset(("_id", "i", i) for i in ids) if len(ids) == len(flt.values) else None
    if param.type == "token" and code not in ("_text", "_content"):
        found = [v.code for v in flt.values if isinstance(v, TokenQuery) and v.code is not None]
        return frozenset((code, "t", c) for c in found) if len(found) == len(flt.values) else None
    if param.type == "reference":
        ids = [
            v.id
            for v in flt.values
            if isinstance(v, ReferenceQuery) and v.id is not None and (v.url is None or _is_ours(v.url, base_url))
        ]
        return frozenset((code, "r", i) for i in ids) if len(ids) == len(flt.values) else None
    return None


def resource_keys(facts: Facts, kinds: Iterable[tuple[str, str]]) -> set[Key]:
    """The discriminator keys a resource has, for the (parameter code, kind) pairs ``kinds``."""
    out: set[Key] = set()
    for code, kind in kinds:
        if kind == "i":
            id_ = facts.resource.get("id")
            if isinstance(id_, str):
                out.add(("_id", "i", id_))
        elif kind == "t":
            for value in facts.values(code):
                if isinstance(value, TokenValue) and value.code is not None:
                    out.add((code, "t", value.code))
        else:
            for value in facts.values(code):
                if isinstance(value, ReferenceValue):
                    row = _reference_row(value)
                    if row is not None and row[1] is not None:
                        out.add((code, "r", row[1]))
    return out


# ---------------------------------------------------------------------------------------------
# Filters → tests (the comparison rules of search.html, as the SQLite backend applies them)


def _compile_filter(flt: Filter, base_url: str, expression: str, name: str) -> Test:
    param, modifier, code = flt.param, flt.modifier, flt.param.code
    if code == "_id":
        return _id_test(flt, expression, name)
    if code == "_lastUpdated":
        return _last_updated_test(flt)
    if code in ("_text", "_content"):
        return _text_test(flt)
    if code == "_list":
        return _list_test(flt, base_url, expression, name)
    if param.type == "special" and code != "near":
        raise _refuse(expression, name, f"the special parameter '{code}' is not supported", "not-supported")
    if modifier == "missing":
        missing = isinstance(flt.values[0], MissingQuery) and flt.values[0].missing
        present = _presence(param)
        return (lambda f: not present(f)) if missing else present
    if param.type == "composite":
        return _composite_test(flt, base_url, expression, name)
    if code == "near":
        checks = [_near_check(v, expression, name) for v in flt.values if isinstance(v, NearQuery)]
        return lambda f: any(check(v) for v in f.values(code) if isinstance(v, PositionValue) for check in checks)
    if modifier == "identifier":
        tokens = [v for v in flt.values if isinstance(v, TokenQuery)]
        return lambda f: any(
            _token_match(q, v.identifier_system, v.identifier_value)
            for v in f.values(code)
            if isinstance(v, ReferenceValue) and (v.identifier_system is not None or v.identifier_value is not None)
            for q in tokens
        )
    if modifier == "of-type":
        of_types = [v for v in flt.values if isinstance(v, OfTypeQuery)]
        return lambda f: any(
            ts == q.type_system and tc == q.type_code and v.code == q.value
            for v in f.values(code)
            if isinstance(v, TokenValue)
            for ts, tc in v.of_type
            for q in of_types
        )
    positive = None if modifier == "not" else modifier
    check = _any_value(param.type, positive, flt.values, base_url)

    def found(f: Facts) -> bool:  # loops, not any(genexpr): this runs for every candidate
        now = f.now_ms
        for value in f.values(code):  # noqa: SIM110
            if check(value, now):
                return True
        return False

    if modifier == "not":
        return lambda f: not found(f)
    return found


def _presence(param: SearchParam) -> Test:
    """search.html#missing: a resource has the parameter when it has an indexed value of it (a
    Reference with only an identifier names no resource and counts as absent, as in the index)."""
    code = param.code
    if param.type == "reference":
        return lambda f: any(isinstance(v, ReferenceValue) and _reference_row(v) is not None for v in f.values(code))
    return lambda f: bool(f.values(code))


def _id_test(flt: Filter, expression: str, name: str) -> Test:
    if flt.modifier == "missing":
        missing = isinstance(flt.values[0], MissingQuery) and flt.values[0].missing
        return lambda f: not missing
    if flt.modifier not in (None, "not"):
        raise _refuse(expression, name, f"':{flt.modifier}' is not supported on _id", "not-supported")
    ids = frozenset(v.code for v in flt.values if isinstance(v, TokenQuery) and v.code is not None)
    if flt.modifier == "not":
        return lambda f: f.resource.get("id") not in ids
    return lambda f: f.resource.get("id") in ids


def _last_updated_test(flt: Filter) -> Test:
    """``_lastUpdated`` compares the version's lastUpdated instant (a point, as the index stores it)."""
    if flt.modifier == "missing":
        missing = isinstance(flt.values[0], MissingQuery) and flt.values[0].missing
        return lambda f: not missing
    dates = [v for v in flt.values if isinstance(v, DateQuery)]

    def test(f: Facts) -> bool:
        stamp = f.last_updated
        return stamp is not None and any(_date_match(q, stamp, stamp, f.now_ms) for q in dates)

    return test


def _words(text: str) -> list[str]:
    return _WORD.findall(normalize_string(text))


def _text_test(flt: Filter) -> Test:
    """``_text`` (narrative) and ``_content`` (narrative and the resource's words), as the index's
    full-text search: each word of a value starts a word of the text (``:exact``: is one); commas OR."""
    narrative_only = flt.param.code == "_text"
    if flt.modifier == "missing":
        missing = isinstance(flt.values[0], MissingQuery) and flt.values[0].missing

        def present(f: Facts) -> bool:
            if narrative_only:
                return f.narrative is not None
            return bool(f.narrative or f.content)

        return (lambda f: not present(f)) if missing else present
    exact = flt.modifier == "exact"
    alternatives = [w for w in (_words(v.text) for v in flt.values if isinstance(v, StringQuery)) if w]

    def test(f: Facts) -> bool:
        if not alternatives:
            return False
        texts = [f.narrative or ""] if narrative_only else [f.narrative or "", f.content]
        words = {w for text in texts for w in _words(text)}
        for wanted in alternatives:
            if exact and all(w in words for w in wanted):
                return True
            if not exact and all(any(t.startswith(w) for t in words) for w in wanted):
                return True
        return False

    return test


ValueCheck = Callable[[Any, int], bool]
"""Does one index value match? (the second argument is "now" in epoch ms, for ``ap`` on dates)"""


def _any_value(ptype: str, modifier: str | None, values: tuple[QueryValue, ...], base_url: str) -> ValueCheck:
    """A check of one index value: does it match any of ``values`` (OR)?"""
    checks = [_value_check(ptype, modifier, q, base_url) for q in values]
    if len(checks) == 1:
        return checks[0]

    def any_of(value: Any, now: int) -> bool:
        for check in checks:  # noqa: SIM110 - a loop, not any(genexpr): it runs for every value
            if check(value, now):
                return True
        return False

    return any_of


def _value_check(ptype: str, modifier: str | None, q: QueryValue, base_url: str) -> ValueCheck:
    if isinstance(q, TokenQuery):
        return lambda v, now: isinstance(v, TokenValue) and _token_match(q, v.system, v.code)
    if isinstance(q, StringQuery):
        if ptype == "token":
            return lambda v, now: isinstance(v, TokenValue) and _token_text_match(q, v.text)
        return lambda v, now: isinstance(v, StringValue) and _string_match(q, v, modifier)
    if isinstance(q, DateQuery):
        if q.prefix == "ap":  # its margin depends on "now"
            return lambda v, now: isinstance(v, DateValue) and _date_match(q, v.low, v.high, now)
        holds = _range_check(prefixes.date_condition(q, 0))  # every other prefix ignores "now"
        return lambda v, now: isinstance(v, DateValue) and holds(v.low, v.high)
    if isinstance(q, NumberQuery):
        number_holds = _range_check(prefixes.number_condition(q))
        return lambda v, now: isinstance(v, NumberValue) and number_holds(*_bounds(v.value, v.low, v.high))
    if isinstance(q, QuantityQuery):
        return lambda v, now: isinstance(v, QuantityValue) and _quantity_match(q, v)
    if isinstance(q, ReferenceQuery):
        return lambda v, now: isinstance(v, ReferenceValue) and _reference_match(q, v, base_url)
    if isinstance(q, UriQuery):
        return lambda v, now: isinstance(v, UriValue) and _uri_match(q, v.value, modifier)
    raise BadRequest(f"Search values of this kind ({type(q).__name__}) are not supported in criteria")


def _token_match(q: TokenQuery, system: str | None, code: str | None) -> bool:
    """search.html#token: ``code``, ``|code`` (no system), ``system|`` (any code), ``system|code``."""
    if q.system is None:
        return code is not None and code == q.code
    if q.system == "":
        return code is not None and code == q.code and system is None
    if q.code is None:
        return system == q.system
    return code == q.code and system == q.system


def _token_text_match(q: StringQuery, text: str | None) -> bool:
    """Token ``:text``: a word of the display or concept text starts with the value."""
    if text is None:
        return False
    if not q.normalized:
        return True
    return text.startswith(q.normalized) or f" {q.normalized}" in text


def _string_match(q: StringQuery, v: StringValue, modifier: str | None) -> bool:
    """search.html#string: starts-with on the normalised form; ``:exact`` the text as written;
    ``:contains`` anywhere in the normalised form."""
    if modifier == "exact":
        return v.exact == q.text and v.normalized == normalize_string(q.text)
    if modifier == "contains":
        return q.normalized in v.normalized
    return v.normalized.startswith(q.normalized)


def _uri_match(q: UriQuery, stored: str, modifier: str | None) -> bool:
    if modifier == "below":
        return stored.startswith(q.value)
    if modifier == "above":  # an ancestor path, as both search backends define it (fhirflow.query.uris)
        return stored in uri_ancestors(q.value)
    return stored == q.value


def _date_match(q: DateQuery, low: int, high: int, now_ms: int) -> bool:
    """search.html#prefix on ranges: the one definition both search backends render
    (fhirflow.query.prefixes), evaluated on the value's [low, high]."""
    return prefixes.holds(prefixes.date_condition(q, now_ms), low, high)


RangeCheck = Callable[[Any, Any], bool]
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def _range_check(condition: prefixes.Condition) -> RangeCheck:
    """``prefixes.holds(condition, low, high)`` compiled once into closures: the same
    definition, without re-deriving the condition and walking it for every value of every change."""
    if isinstance(condition, prefixes.AllOf):
        parts = tuple(_range_check(p) for p in condition.parts)
        return lambda low, high: all(part(low, high) for part in parts)
    if isinstance(condition, prefixes.AnyOf):
        parts = tuple(_range_check(p) for p in condition.parts)
        return lambda low, high: any(part(low, high) for part in parts)
    op, bound = _OPS[condition.op], condition.bound
    if condition.side == "low":
        return lambda low, high: op(low, bound)
    return lambda low, high: op(high, bound)


def _bounds(value: Decimal | None, low: Decimal, high: Decimal) -> tuple[Decimal, Decimal]:
    """The stored number as the index holds it: a point, a Range's bounds, or the open side of a
    comparator (``<5`` is (-inf, 5])."""
    if value is None:
        return low, high
    if low.is_infinite():
        return Decimal("-Infinity"), value
    if high.is_infinite():
        return value, Decimal("Infinity")
    return value, value


def _number_match(q: NumberQuery | QuantityQuery, v: NumberValue | QuantityValue) -> bool:
    """search.html#number and #quantity prefixes: the one definition both search backends render
    (fhirflow.query.prefixes), evaluated on the stored value's range."""
    low, high = _bounds(v.value, v.low, v.high)
    return prefixes.holds(prefixes.number_condition(q), low, high)


def _quantity_match(q: QuantityQuery, v: QuantityValue) -> bool:
    """search.html#quantity: ``n|system|code`` system and code; ``n||code`` the code or the unit as
    written; ``n`` any unit. No UCUM conversion (as in search)."""
    if not _number_match(q, v):
        return False
    if q.system is not None and q.code is not None:
        return v.system == q.system and v.code == q.code
    if q.code is not None:
        return q.code in (v.code, v.unit)
    if q.system is not None:
        return v.system == q.system
    return True


def _reference_row(v: ReferenceValue) -> tuple[str | None, str | None, str | None, str | None] | None:
    """(type, id, version, url) as the index keeps a reference: a canonical written as a relative
    reference names a local resource; a reference with neither id nor url names none."""
    if v.id is None and v.url is not None:
        relative = _RELATIVE.fullmatch(v.url)
        if relative is not None:
            return relative["type"], relative["id"], v.version, None
    if v.id is not None or v.url is not None:
        return v.type, v.id, v.version, v.url
    return None


def _is_ours(url: str, base_url: str) -> bool:
    return bool(base_url) and url.startswith(base_url.rstrip("/") + "/")


def _reference_match(q: ReferenceQuery, v: ReferenceValue, base_url: str) -> bool:
    """search.html#reference: ``id``, ``Type/id``, an absolute URL (this server's base counts as
    ``Type/id``), a canonical ``url|version``; a version narrows to references that name it."""
    row = _reference_row(v)
    if row is None:
        return False
    rtype, rid, version, url = row
    if q.version and version != q.version:
        return False
    if q.id is not None and (q.url is None or _is_ours(q.url, base_url)):
        if rid != q.id or (q.type is not None and rtype != q.type):
            return False
        return url is None or _is_ours(url, base_url)
    return url is not None and url == q.url


def _near_check(q: NearQuery, expression: str, name: str) -> Callable[[PositionValue], bool]:
    """Location ``near``: within the distance (km unless ``units`` says otherwise), on the same
    equirectangular approximation the search uses."""
    units = q.units or "km"
    if units not in _UNITS_KM:
        raise _refuse(expression, name, f"near: unknown distance unit '{units}' (use km, m or [mi_i])")
    distance = float(q.distance) * _UNITS_KM[units] if q.distance is not None else _DEFAULT_NEAR_KM
    lat, lon = float(q.latitude), float(q.longitude)
    dlat = distance / _KM_PER_DEGREE_LAT
    dlon = distance / max(_KM_PER_DEGREE_LON * math.cos(math.radians(lat)), 1e-6)

    def check(v: PositionValue) -> bool:
        plat, plon = float(v.latitude), float(v.longitude)
        if not (lat - dlat <= plat <= lat + dlat and lon - dlon <= plon <= lon + dlon):
            return False
        dy = (plat - lat) * _KM_PER_DEGREE_LAT
        dx = (plon - lon) * _KM_PER_DEGREE_LON * math.cos(math.radians((plat + lat) / 2))
        return dy * dy + dx * dx <= distance * distance

    return check


def _composite_test(flt: Filter, base_url: str, expression: str, name: str) -> Test:
    """search.html#composite: one value of the composite (a tuple of component values taken from
    one element) matches every component of one query value."""
    param, code = flt.param, flt.param.code
    alternatives: list[list[ValueCheck]] = []
    for q in flt.values:
        if not isinstance(q, CompositeQuery):
            raise _refuse(expression, name, f"'{code}' takes composite values")
        alternatives.append(
            [
                _value_check(component.type, None, cq, base_url)
                for component, cq in zip(param.components, q.components, strict=True)
            ]
        )

    def test(f: Facts) -> bool:
        for v in f.values(code):
            if not isinstance(v, CompositeValue):
                continue
            for checks in alternatives:
                if all(check(c, f.now_ms) for check, c in zip(checks, v.components, strict=True)):
                    return True
        return False

    return test
