"""The typed AST of a FHIR search (http://hl7.org/fhir/R4/search.html).

A :class:`Query` is an AND of :data:`Criterion` nodes, one per parameter occurrence; each
:class:`Filter` holds OR-ed values typed by the parameter's type. Chains (``subject:Patient.name``)
and reverse chains (``_has:Observation:patient:code``) nest criteria on other resource types.
Values are normalised: ``subject:Patient=1`` becomes ``subject=Patient/1``, ``:recurse`` becomes
``:iterate``, and dates and numbers carry the ranges their precision implies, so backends
compile the AST without re-reading the query text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from fhirflow.errors import Issue
from fhirflow.searchparams.registry import SearchParam

if TYPE_CHECKING:
    from fhirflow.search_ports import AccessRule  # the search port's rule; search_ports imports this module

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
PREFIXES: frozenset[str] = frozenset(("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"))
Modifier = Literal[
    "missing", "exact", "contains", "text", "not", "above", "below", "in", "not-in", "of-type", "identifier"
]
Total = Literal["none", "estimate", "accurate"]
Summary = Literal["true", "text", "data", "count", "false"]
Contained = Literal["true", "false", "both"]
ContainedType = Literal["container", "contained"]


# ---------------------------------------------------------------------------------------------
# Values (one per comma-separated alternative)


@dataclass(frozen=True, slots=True)
class StringQuery:
    """A string value (also the value of token ``:text``); ``normalized`` as in the index."""

    text: str
    normalized: str


@dataclass(frozen=True, slots=True)
class TokenQuery:
    """``code`` (system None: any system), ``|code`` (system "": no system), ``system|`` (code None:
    any code in the system), ``system|code``. Also the value of reference ``:identifier``."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class OfTypeQuery:
    """Token ``:of-type``: ``type-system|type-code|value`` against Identifier.type and .value."""

    type_system: str
    type_code: str
    value: str


@dataclass(frozen=True, slots=True)
class DateQuery:
    """``prefix`` + a date of any precision; [low, high] inclusive epoch milliseconds (UTC)."""

    prefix: Prefix
    text: str
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class NumberQuery:
    """``value`` as written (Decimal keeps its precision) and the range [low, high) it implies."""

    prefix: Prefix
    value: Decimal
    low: Decimal
    high: Decimal


@dataclass(frozen=True, slots=True)
class QuantityQuery:
    """``[prefix]number|system|code``; system/code None when absent (``5.4||mg`` matches code or unit)."""

    prefix: Prefix
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class ReferenceQuery:
    """``id``, ``Type/id``, ``Type/id/_history/v``, an absolute URL (type/id parsed when it ends in
    ``Type/id``) or a canonical ``url|version``."""

    type: str | None
    id: str | None
    version: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class UriQuery:
    """A uri value; also the value set of token ``:in``/``:not-in``."""

    value: str


@dataclass(frozen=True, slots=True)
class MissingQuery:
    missing: bool


@dataclass(frozen=True, slots=True)
class NearQuery:
    """Location ``near=latitude|longitude|distance|units``."""

    latitude: Decimal
    longitude: Decimal
    distance: Decimal | None
    units: str | None


@dataclass(frozen=True, slots=True)
class SpecialQuery:
    """A special parameter's raw value (``_list``)."""

    value: str


@dataclass(frozen=True, slots=True)
class CompositeQuery:
    """One value per component, in the parameter's component order (``$``-separated)."""

    components: tuple[QueryValue, ...]


QueryValue = (
    StringQuery
    | TokenQuery
    | OfTypeQuery
    | DateQuery
    | NumberQuery
    | QuantityQuery
    | ReferenceQuery
    | UriQuery
    | MissingQuery
    | NearQuery
    | SpecialQuery
    | CompositeQuery
)


# ---------------------------------------------------------------------------------------------
# Criteria


@dataclass(frozen=True, slots=True)
class Filter:
    """A parameter tested on the resource at hand: matches if any value matches."""

    param: SearchParam
    modifier: Modifier | None
    values: tuple[QueryValue, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    """``param.criterion``: resources whose ``param`` reference points at a ``target_type``
    resource matching ``criterion`` (search.html#chaining)."""

    param: SearchParam
    target_type: str
    criterion: Criterion
    access: AccessRule | None = None
    """What the ``target_type`` resource must also satisfy: the searcher may read it (None: no
    limit). Set by the search use case, never by the parser; backends render it like the top-level
    access rules, so a chain never looks at a resource the searcher may not read."""


@dataclass(frozen=True, slots=True)
class Has:
    """``_has:source_type:reference:criterion``: resources referenced through ``reference`` by a
    ``source_type`` resource matching ``criterion`` (search.html#has)."""

    source_type: str
    reference: SearchParam
    criterion: Criterion
    access: AccessRule | None = None
    """What the ``source_type`` resource must also satisfy (see :attr:`Chain.access`)."""


Criterion = Filter | Chain | Has


# ---------------------------------------------------------------------------------------------
# Result parameters and the query


@dataclass(frozen=True, slots=True)
class Include:
    """``_include``/``_revinclude`` ``source:param[:target]``; ``param`` None is the ``*`` wildcard
    (``source_type`` None too for a bare ``*``)."""

    source_type: str | None
    param: SearchParam | None
    target_type: str | None = None
    iterate: bool = False


@dataclass(frozen=True, slots=True)
class SortKey:
    param: SearchParam
    descending: bool = False


@dataclass(slots=True)
class Query:
    resource_type: str | None  # None: system search
    types: tuple[str, ...] = ()  # _type (system search)
    criteria: tuple[Criterion, ...] = ()  # AND
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int | None = None
    total: Total | None = None
    summary: Summary | None = None
    elements: tuple[str, ...] = ()
    contained: Contained | None = None
    contained_type: ContainedType | None = None
    ignored: list[Issue] = field(default_factory=list)  # what lenient handling left out

    def to_query_string(self) -> str:
        """The normalised query (without ignored parameters), for the Bundle's ``self`` link."""
        from fhirflow.query.render import query_string  # render imports this module

        return query_string(self)
