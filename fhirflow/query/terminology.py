"""Token ``:in``, ``:not-in``, ``:above`` and ``:below`` from the terminology this server holds
(http://hl7.org/fhir/R4/search.html#token).

The query is rewritten before a backend compiles it, so every backend answers these modifiers
with the token matching it already has:

- ``code:in=<value set>`` becomes the OR of the value set's codes, ``code:not-in`` the same codes
  under ``:not`` (resources with no coding in the set). The value set is a ValueSet stored on
  this server, named literally (``ValueSet/123``, or an absolute URL under this server's base)
  or by its canonical ``url`` (with an optional ``|version``). Its codes are its ``expansion``
  when it has one, else its ``compose``: listed concepts, whole code systems (``system|``) and
  other value sets it includes, less the listed concepts it excludes.
- ``code:below=system|code`` becomes the code and its descendants, ``code:above`` the code and
  its ancestors, from the nested concepts of the CodeSystem with that ``url`` stored on this
  server (a code that CodeSystem does not list subsumes only itself).

What needs a real terminology service — a value set that selects codes by ``filter``, an
exclusion from a whole code system, a value set or code system this server does not hold — is
:class:`NeedsTerminology`, which the search service treats as an unsupported parameter
(``Prefer: handling``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from fhirflow import budget
from fhirflow.errors import BadRequest, Issue
from fhirflow.query.ast import Criterion, Filter, Query, QueryValue, TokenQuery, UriQuery

MODIFIERS = frozenset(("in", "not-in", "above", "below"))
MAX_CODES = 1000
"""Codes one parameter may expand to; past that the search is refused as too costly."""
MAX_VALUE_SETS = 64
"""Value sets one parameter may read (nested includes counted once each)."""
_MAX_NESTING = 16


class Terminology(Protocol):
    """Where the value sets and code systems come from (the search backend, in the service)."""

    def value_set(self, reference: str) -> dict[str, Any] | None:
        """The ValueSet a ``:in`` value names (literal reference or canonical url[|version])."""
        ...

    def code_system(self, url: str) -> dict[str, Any] | None:
        """The CodeSystem whose ``url`` is ``url``."""
        ...


class Ambiguous(Exception):
    """Several stored resources answer to the reference a modifier gave (a :class:`Terminology`
    raises it; the search answers 400 naming the parameter)."""


class NeedsTerminology(Exception):
    """The modifier's answer needs a terminology service: ``name`` is the parameter, as written."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def uses_terminology(criterion: Criterion) -> bool:
    while not isinstance(criterion, Filter):
        criterion = criterion.criterion
    return criterion.param.type == "token" and criterion.modifier in MODIFIERS


def expand(criterion: Criterion, terminology: Terminology) -> Criterion:
    """``criterion`` with its terminology modifier (if any, also at the end of a chain or
    ``_has``) replaced by the codes it stands for; raises :class:`NeedsTerminology`."""
    if not isinstance(criterion, Filter):
        return dataclasses.replace(criterion, criterion=expand(criterion.criterion, cached(terminology)))
    if not uses_terminology(criterion):
        return criterion
    name = f"{criterion.param.code}:{criterion.modifier}"
    shared = cached(terminology)
    expansion = _Expansion(shared, name)
    systems = Counter(v.system for v in criterion.values if isinstance(v, TokenQuery) and v.system)
    expansion.repeated = frozenset(system for system, count in systems.items() if count > 1)
    codes: dict[tuple[str | None, str | None], None] = {}  # ordered, without repeats
    for value in criterion.values:
        try:
            found = expansion.codes(criterion.modifier, value)
        except Ambiguous as ambiguous:
            raise BadRequest(f"'{name}': {ambiguous}", expression=name) from ambiguous
        for code in found:
            codes[(code.system, code.code)] = None
            expansion.limit(len(codes))
    shared.spend(len(codes), name)
    values: tuple[QueryValue, ...] = tuple(TokenQuery(system, code) for system, code in codes)
    return Filter(criterion.param, "not" if criterion.modifier == "not-in" else None, values)


def expand_query(query: Query, terminology: Terminology) -> Query:
    """Every criterion of ``query`` through :func:`expand` (see there)."""
    if not any(uses_terminology(c) for c in query.criteria):
        return query
    shared = cached(terminology)
    return dataclasses.replace(query, criteria=tuple(expand(c, shared) for c in query.criteria))


class CachedTerminology:
    """One request's :class:`Terminology`, read once: each value set and code system however
    many values or parameters name it, and each code system's hierarchy built at most once
    (``code:below`` with 900 leaf codes of a 60,000-concept code system read and walked it 900
    times, ten seconds of work for a small answer). Wrap the request's terminology in one and
    pass it to every :func:`expand`; :func:`expand` wraps a bare one itself.

    It also bounds the codes the request's parameters stand for together (:meth:`spend`): each
    becomes a condition the backend evaluates, and SQLite took 4 s to prepare six ``:in``
    parameters of 999 codes each (3 s more per parameter, with no progress handler to stop it)."""

    def __init__(self, terminology: Terminology) -> None:
        self.terminology = terminology
        self._value_sets: dict[str, dict[str, Any] | None] = {}
        self._code_systems: dict[str, dict[str, Any] | None] = {}
        self._maps: dict[tuple[str, bool], dict[str, list[str]]] = {}
        self._walked: set[str] = set()
        self._spent = 0

    def spend(self, codes: int, name: str) -> None:
        """Count the ``codes`` parameter ``name`` expanded to against the request's
        :data:`MAX_CODES`: past it, a 400 ``too-costly`` naming the parameter that crossed it."""
        self._spent += codes
        if self._spent > MAX_CODES:
            message = (
                f"The terminology parameters of this search stand for more than {MAX_CODES} codes together "
                f"('{name}' passes the limit); split it into several searches"
            )
            raise BadRequest(message, issues=[Issue("too-costly", message, (name,))])

    def value_set(self, reference: str) -> dict[str, Any] | None:
        if reference not in self._value_sets:
            self._value_sets[reference] = self.terminology.value_set(reference)
        return self._value_sets[reference]

    def code_system(self, url: str) -> dict[str, Any] | None:
        if url not in self._code_systems:
            self._code_systems[url] = self.terminology.code_system(url)
        return self._code_systems[url]

    def related(
        self, url: str, code: str, *, above: bool, limit: Callable[[int], None], again: bool = False
    ) -> list[str]:
        """``code`` and its descendants (or, ``above``, ancestors) in the code system ``url``
        (read before, by :meth:`code_system`). The first ``:below`` makes one pass that can stop
        at the limit (:func:`_below`); a second code of the same code system (or a first one
        that says others follow: ``again``) builds its hierarchy once for every further one."""
        concepts = (self._code_systems.get(url) or {}).get("concept")
        key = (url, above)
        if key not in self._maps:
            if not above and not again and url not in self._walked:
                self._walked.add(url)
                return _below(concepts, code, limit=limit)
            self._maps[key] = _hierarchy(concepts, above=above)
        return _walk(self._maps[key], code, limit)


def cached(terminology: Terminology) -> CachedTerminology:
    return terminology if isinstance(terminology, CachedTerminology) else CachedTerminology(terminology)


class _Expansion:
    """One parameter's expansion, with its cost bounded before the work is done: each value set
    is expanded once however often it is included (a diamond of nested value sets would
    otherwise double the work at every level), a cycle is refused, at most
    :data:`MAX_VALUE_SETS` value sets are read, and no list of codes grows past
    :data:`MAX_CODES` (the walk stops there instead of finishing and then refusing)."""

    def __init__(self, terminology: CachedTerminology, name: str) -> None:
        self.terminology = terminology
        self.name = name
        self._expanded: dict[str, list[TokenQuery]] = {}
        self._open: set[str] = set()
        self._read = 0
        self.repeated: frozenset[str] = frozenset()  # code systems several values of the parameter name

    def limit(self, count: int) -> None:
        if count > MAX_CODES:
            message = f"'{self.name}' stands for more than {MAX_CODES} codes; search with fewer"
            raise BadRequest(message, issues=[Issue("too-costly", message, (self.name,))])

    def codes(self, modifier: str | None, value: QueryValue) -> list[TokenQuery]:
        name = self.name
        if modifier in ("in", "not-in"):
            reference = value.value if isinstance(value, UriQuery) else None
            if not reference:
                raise BadRequest(f"'{name}' takes a value set: its url, or ValueSet/[id]", expression=name)
            return self._value_set(reference, depth=0)
        if not isinstance(value, TokenQuery) or not value.system or not value.code:
            raise BadRequest(f"'{name}' takes a coding: system|code", expression=name)
        code_system = self.terminology.code_system(value.system)
        if code_system is None:
            raise NeedsTerminology(name, f"the code system '{value.system[:200]}' is not on this server")
        above, again = modifier == "above", value.system in self.repeated
        related = self.terminology.related(value.system, value.code, above=above, limit=self.limit, again=again)
        return [TokenQuery(value.system, code) for code in related]

    def _value_set(self, reference: str, depth: int) -> list[TokenQuery]:
        if reference in self._expanded:
            return self._expanded[reference]
        if reference in self._open:
            raise BadRequest(f"'{self.name}': the value set '{reference[:200]}' includes itself", expression=self.name)
        if depth > _MAX_NESTING:
            raise NeedsTerminology(self.name, "the value set includes other value sets too deeply")
        self._read += 1
        if self._read > MAX_VALUE_SETS:
            message = f"'{self.name}' needs more than {MAX_VALUE_SETS} value sets; search with fewer"
            raise BadRequest(message, issues=[Issue("too-costly", message, (self.name,))])
        budget.check()
        value_set = self.terminology.value_set(reference)
        if value_set is None:  # another server's value set, which a terminology service would know
            raise NeedsTerminology(self.name, f"the value set '{reference[:200]}' is not on this server")
        self._open.add(reference)
        try:
            codes = self._value_set_codes(value_set, depth)
        finally:
            self._open.discard(reference)
        self._expanded[reference] = codes
        return codes

    def _value_set_codes(self, value_set: dict[str, Any], depth: int) -> list[TokenQuery]:
        label = str(value_set.get("url") or f"ValueSet/{value_set.get('id')}")[:200]
        expansion = value_set.get("expansion")
        if isinstance(expansion, dict) and expansion.get("contains"):
            listed: list[TokenQuery] = []
            for code in _contained(expansion["contains"]):
                listed.append(code)
                self.limit(len(listed))
            return listed
        compose = value_set.get("compose")
        if not isinstance(compose, dict):
            return []
        codes: dict[tuple[str, str | None], None] = {}
        for include in _list(compose.get("include")):
            for code in self._set_codes(include, depth, label):
                codes[(code.system or "", code.code)] = None
            self.limit(len(codes))
        for exclude in _list(compose.get("exclude")):
            for code in self._set_codes(exclude, depth, label):
                if code.code is None or (code.system or "", None) in codes:
                    raise NeedsTerminology(
                        self.name, f"the value set '{label}' excludes codes from a whole code system"
                    )
                codes.pop((code.system or "", code.code), None)
        return [TokenQuery(system, code) for system, code in codes]

    def _set_codes(self, part: dict[str, Any], depth: int, label: str) -> list[TokenQuery]:
        """The codes of one ``compose.include`` or ``compose.exclude``."""
        name = self.name
        if part.get("filter"):
            raise NeedsTerminology(name, f"the value set '{label}' selects codes by filter")
        system, concepts, others = part.get("system"), _list(part.get("concept")), _list(part.get("valueSet"))
        if others and system:
            raise NeedsTerminology(name, f"the value set '{label}' intersects a code system with value sets")
        if others:
            found: list[TokenQuery] = []
            for index, reference in enumerate(others):
                codes = self._value_set(str(reference), depth + 1)
                if index == 0:
                    found = codes
                else:  # several: the intersection
                    kept = set(codes)
                    found = [c for c in found if c in kept]
            return found
        if not isinstance(system, str):
            return []
        if not concepts:
            return [TokenQuery(system, None)]  # every code of the system
        self.limit(len(concepts))  # before building the list, not after
        return [TokenQuery(system, str(c["code"])) for c in concepts if isinstance(c, dict) and c.get("code")]


def _contained(items: Any) -> Iterator[TokenQuery]:
    """The codes of an expansion (``contains`` nests; abstract entries only group)."""
    for item in _list(items):
        if not isinstance(item, dict):
            continue
        if item.get("code") and not item.get("abstract"):
            yield TokenQuery(item.get("system"), str(item["code"]))
        yield from _contained(item.get("contains"))


def _below(concepts: Any, code: str, *, limit: Callable[[int], None]) -> list[str]:
    """``code`` and its descendants, found in one pass over the nested ``concept`` lists that
    stops as soon as ``limit`` refuses: a code with too many descendants is refused after reading
    those past the limit, not the whole code system (60,000 children: the first 1,001).

    Every code the pass adds is a true descendant, so its count can refuse early. The pass is the
    whole answer unless a code turned out to be a descendant only after one of its other
    occurrences, with children, had been passed (a code under several parents, listed before its
    place under ``code``); then the whole hierarchy is built (:func:`_hierarchy`), still linear."""
    found: dict[str, None] = {code: None}  # ordered: in the code system's order
    passed: set[str] = set()  # codes met with children while not (yet) known descendants
    stack: list[tuple[bool, Iterator[Any]]] = [(False, iter(_list(concepts)))]
    steps = 0
    while stack:
        under, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        if not isinstance(item, dict) or not item.get("code"):
            continue
        steps += 1
        if steps % 10_000 == 0:
            budget.check()
        current = str(item["code"])
        if under and current not in found:
            found[current] = None
            limit(len(found))
        children = _list(item.get("concept"))
        if children:
            inside = current in found
            if not inside:
                passed.add(current)
            stack.append((inside, iter(children)))
    if passed.isdisjoint(found):
        return list(found)
    return _walk(_hierarchy(concepts, above=False), code, limit)


def _walk(related: dict[str, list[str]], code: str, limit: Callable[[int], None]) -> list[str]:
    """``code`` and the codes ``related`` leads to from it, transitively (its descendants or
    ancestors: a code may sit under several parents); ``limit`` sees the count as it grows, so
    a large answer is refused before it is all built."""
    found: dict[str, None] = {code: None}  # ordered: breadth first
    queue = [code]
    for current in queue:  # the queue grows as it is walked
        for other in related.get(current, ()):
            if other not in found:
                found[other] = None
                queue.append(other)
        limit(len(found))
    return list(found)


def _hierarchy(concepts: Any, *, above: bool) -> dict[str, list[str]]:
    """code → its parents (``above``) or its children, from nested ``concept`` lists: one map,
    not both, and only concepts with children are revisited."""
    related: dict[str, list[str]] = {}
    stack: list[tuple[str | None, Any]] = [(None, concepts)]
    steps = 0
    while stack:
        parent, items = stack.pop()
        for item in _list(items):
            if not isinstance(item, dict) or not item.get("code"):
                continue
            steps += 1
            if steps % 10_000 == 0:
                budget.check()
            code = str(item["code"])
            if parent is not None:
                if above:
                    related.setdefault(code, []).append(parent)
                else:
                    related.setdefault(parent, []).append(code)
            if item.get("concept"):
                stack.append((code, item["concept"]))
    return related


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
