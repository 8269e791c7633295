"""The search port: what a search backend answers (DESIGN.md §4).

Backends compile the query AST (:mod:`fhirflow.query.ast`) themselves; the use case hands them
the AST with a :class:`SearchScope` — tenant, types, compartment and the access policy's
constraint, all of which are part of the query so that totals and paging are exact.

A module of its own beside :mod:`fhirflow.ports` because it needs the query AST, which every
other port (and so every handler's cold start) can do without.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fhirflow.query.ast import Criterion, Include, Query, SortKey

SortValue = Any
"""One key of a keyset position: a string, a number or None (JSON-representable)."""

Admits = Callable[[dict[str, Any]], bool]
"""Whether the principal may read one resource (the access policy's ``admits_resource``)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """One way a principal may see resources: in a compartment (None: any) and matching criteria."""

    compartment: tuple[str, str] | None
    criteria: tuple[Criterion, ...] = ()


@dataclass(frozen=True, slots=True)
class AccessRule:
    """What resources of ``resource_type`` (None: of every type) must satisfy to be returned:
    one of ``admissions``, and, when ``patients`` is set, be in no Patient compartment or in the
    compartment of one of those patients."""

    resource_type: str | None
    admissions: tuple[Admission, ...]
    patients: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class SearchScope:
    tenant: str
    base_url: str
    """This server's base: absolute references under it count as local ones."""
    types: tuple[str, ...]
    """The searched types; empty for a system search over every type."""
    compartment: tuple[str, str] | None = None
    """``/Patient/123/Observation``: only members of that compartment (compartmentdefinition.html)."""
    access: tuple[AccessRule, ...] | None = None
    """None: no constraint. Otherwise a resource must satisfy the rule for its type."""


@dataclass(frozen=True, slots=True)
class PageRequest:
    """``count`` matches after (or before) a keyset position, in the query's sort order."""

    count: int
    after: tuple[SortValue, ...] | None = None
    before: tuple[SortValue, ...] | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """One resource of a result: a match or an included resource."""

    type: str
    id: str
    body: bytes
    position: tuple[SortValue, ...] = ()
    """The keyset position of a match (its sort keys, then type and id)."""


@dataclass(frozen=True, slots=True)
class Page:
    hits: list[Hit]
    more: bool
    """Whether more matches follow in the direction of the request."""


@dataclass(frozen=True, slots=True)
class Included:
    hits: list[Hit]
    truncated: bool
    """True when the include limit cut the list short."""


class SearchEngine(Protocol):
    """A backend that answers FHIR searches (http.html#search, search.html)."""

    def unsupported(self, criterion: Criterion) -> str | None:
        """Why this backend cannot evaluate ``criterion`` (None: it can)."""
        ...

    def sortable(self, key: SortKey) -> bool:
        """Whether this backend can sort by ``key``'s parameter."""
        ...

    def page(self, scope: SearchScope, query: Query, request: PageRequest) -> Page:
        """One page of matches in the query's ``_sort`` order (then type and id)."""
        ...

    def count(self, scope: SearchScope, query: Query) -> int:
        """How many resources match (``_total=accurate``)."""
        ...

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
        """``_include``/``_revinclude`` (``:iterate`` up to ``max_depth`` rounds) of a page of
        matches: the resources they add, without duplicates and without the matches.

        With ``admits``, only resources it admits are added, and only they are walked from: each
        ``:iterate`` round starts from what the principal may read, so which resources appear never
        depends on a link through one it may not (search.html#revinclude; DESIGN.md §5). Resources
        it refuses do not count towards ``limit``."""
        ...


class ResourceMatcher(Protocol):
    """Whether one given resource matches search criteria, without the index (DESIGN.md §3).

    A conditional create checks with it that the owner of a uniqueness key still matches its
    criteria. The search index cannot answer that where it is eventually consistent (DynamoDB's
    stream feeds it): a resource created a moment ago may not be indexed yet, and a "no" from a
    lagging index would let a second create through."""

    def matches(self, scope: SearchScope, query: Query, resource: dict[str, Any], *, last_updated: int) -> bool | None:
        """True or False; None when ``query`` needs other resources (chains, ``_has``) to decide.
        ``last_updated`` (ms) is the resource's, for ``_lastUpdated``."""
        ...
