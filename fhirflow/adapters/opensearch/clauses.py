"""Query DSL clauses for one search value, per parameter type (search.html#ptypes).

Every function builds the condition one value of the index must meet, on the fields under
``prefix`` (a nested path such as ``dates``, or a composite component such as
``composites.c1``); the caller wraps it in the ``nested`` query that ties it to one value.

Prefixes on ranges (search.html#prefix) are not interpreted here: :mod:`fhirflow.query.prefixes`
defines each as a condition on the two ends of the resource's value, the same for SQLite, and
:func:`render` turns it into ``range`` clauses on ``start``/``end`` (dates) or ``low``/``high``
(numbers and quantities, see ``documents.py``). A multi-valued element matches when any one value
does, ``ne`` included.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhirflow.errors import BadRequest
from fhirflow.query import prefixes
from fhirflow.query.ast import (
    DateQuery,
    NearQuery,
    NumberQuery,
    QuantityQuery,
    ReferenceQuery,
    StringQuery,
    TokenQuery,
    UriQuery,
)
from fhirflow.query.uris import uri_ancestors

Clause = dict[str, Any]

MAX_CLAUSES = 1024
"""Leaf queries one request may hold: OpenSearch's ``indices.query.bool.max_clause_count`` default,
which Lucene 9 applies to the leaves of the whole query tree (nested queries included). A request
past it is refused by the cluster, so the compiler refuses the search first (:func:`leaf_count`)."""
MAX_PATTERN = 256
"""Characters of a ``:contains`` or token ``:text`` value: each becomes a ``wildcard`` pattern, which
Lucene builds into an automaton whose cost grows with the pattern (and past a size is refused as
too complex to determinize). Longer values are refused before anything is sent."""

# UCUM distance units `near` accepts (search.html#special) → OpenSearch distance units
_DISTANCE_UNITS = {"km": "km", "m": "m", "[mi_i]": "mi", "mi": "mi", "[nmi_i]": "nmi", "cm": "cm"}


# ---------------------------------------------------------------------------------------------
# Query DSL building blocks


def term(field: str, value: object) -> Clause:
    return {"term": {field: value}}


def terms(field: str, values: object) -> Clause:
    return {"terms": {field: values}}


def prefix(field: str, value: str) -> Clause:
    return {"prefix": {field: value}}


def exists(field: str) -> Clause:
    return {"exists": {"field": field}}


def range_(field: str, **bounds: object) -> Clause:
    return {"range": {field: bounds}}


def all_of(*clauses: Clause) -> Clause:
    return clauses[0] if len(clauses) == 1 else {"bool": {"filter": list(clauses)}}


def any_of(*clauses: Clause) -> Clause:
    return clauses[0] if len(clauses) == 1 else {"bool": {"should": list(clauses), "minimum_should_match": 1}}


def none_of(*clauses: Clause) -> Clause:
    return {"bool": {"must_not": list(clauses)}}


def nested(path: str, *clauses: Clause) -> Clause:
    return {"nested": {"path": path, "query": all_of(*clauses)}}


def number(value: Decimal) -> float:
    return float(value)


# ---------------------------------------------------------------------------------------------
# Strings and tokens


def leaf_count(clause: Clause) -> int:
    """The leaf queries of ``clause`` as ``max_clause_count`` counts them: a ``bool`` and a
    ``nested`` count what they hold; ``terms`` is one query whatever its number of values."""
    [(kind, spec)] = clause.items()
    if kind == "bool":
        return sum(leaf_count(c) for key in ("filter", "must", "should", "must_not") for c in spec.get(key, ()))
    if kind == "nested":
        return leaf_count(spec["query"])
    return 1


def escape_wildcard(text: str) -> str:
    return "".join("\\" + ch if ch in "*?\\" else ch for ch in text)


def string_clause(value: StringQuery, modifier: str | None, at: str) -> Clause:
    """search.html#string: starts-with on the normalised form; ``:exact`` whole and
    case-sensitive; ``:contains`` anywhere (normalised)."""
    if modifier == "exact":
        return term(f"{at}.exact", value.text)
    if modifier == "contains":
        return {"wildcard": {f"{at}.norm": {"value": f"*{escape_wildcard(_pattern(value))}*"}}}
    return prefix(f"{at}.norm", value.normalized)


def token_text_clause(value: StringQuery, at: str) -> Clause:
    """Token ``:text`` (search.html#token): a word of the coding's display or the concept's text
    starts with the value, on the normalised text, as on SQLite (``token_text_condition``):
    the text starts with it, or holds it right after a space."""
    if not value.normalized:
        return exists(f"{at}.text")
    inner = {"wildcard": {f"{at}.text": {"value": f"* {escape_wildcard(_pattern(value))}*"}}}
    return any_of(prefix(f"{at}.text", value.normalized), inner)


class PatternTooLong(ValueError):
    """A value too long for a ``wildcard`` pattern (:data:`MAX_PATTERN`); the compiler names the parameter."""


def _pattern(value: StringQuery) -> str:
    if len(value.normalized) > MAX_PATTERN:
        raise PatternTooLong(len(value.normalized))
    return value.normalized


def token_clause(value: TokenQuery, at: str) -> Clause:
    """search.html#token: ``code``, ``system|code``, ``|code`` (no system), ``system|``."""
    if value.system is None:
        return term(f"{at}.code", value.code)
    if value.system == "":
        return all_of(term(f"{at}.code", value.code), none_of(exists(f"{at}.system")))
    if value.code is None:
        return term(f"{at}.system", value.system)
    return term(f"{at}.sc", f"{value.system}|{value.code}")


def identifier_clause(value: TokenQuery, at: str) -> Clause:
    """Reference ``:identifier`` (search.html#reference): Reference.identifier as a token."""
    if value.system is None:
        return term(f"{at}.ival", value.code)
    if value.system == "":
        return all_of(term(f"{at}.ival", value.code), none_of(exists(f"{at}.isys")))
    if value.code is None:
        return term(f"{at}.isys", value.system)
    return all_of(term(f"{at}.isys", value.system), term(f"{at}.ival", value.code))


# ---------------------------------------------------------------------------------------------
# Dates, numbers, quantities


_RANGE_OPS = {"gt": "gt", "ge": "gte", "lt": "lt", "le": "lte"}


def render(condition: prefixes.Condition, lo: str, hi: str) -> Clause:
    """A prefix condition (:mod:`fhirflow.query.prefixes`) on the fields ``lo``/``hi`` of one
    nested value: AND as ``bool.filter``, OR as ``bool.should``."""
    if isinstance(condition, prefixes.AllOf):
        return all_of(*(render(part, lo, hi) for part in condition.parts))
    if isinstance(condition, prefixes.AnyOf):
        return any_of(*(render(part, lo, hi) for part in condition.parts))
    field = lo if condition.side == "low" else hi
    bound = number(condition.bound) if isinstance(condition.bound, Decimal) else condition.bound
    return range_(field, **{_RANGE_OPS[condition.op]: bound})


def date_clause(value: DateQuery, at: str, now: int) -> Clause:
    return render(prefixes.date_condition(value, now), f"{at}.start", f"{at}.end")


def number_clause(value: NumberQuery | QuantityQuery, at: str) -> Clause:
    return render(prefixes.number_condition(value), f"{at}.low", f"{at}.high")


def quantity_clause(value: QuantityQuery, at: str) -> Clause:
    """search.html#quantity: the number, and the unit as ``system|code``, or ``||code``
    against code or unit. Units are compared as written (no UCUM conversion)."""
    clauses = [number_clause(value, at)]
    if value.system is not None:
        clauses.append(term(f"{at}.system", value.system))
    if value.code is not None:
        unit = term(f"{at}.code", value.code)
        clauses.append(unit if value.system is not None else any_of(unit, term(f"{at}.unit", value.code)))
    return all_of(*clauses)


# ---------------------------------------------------------------------------------------------
# References, uris, positions


def _under(url: str, base_url: str | None) -> bool:
    return base_url is not None and url.startswith(base_url.rstrip("/") + "/")


def reference_clause(value: ReferenceQuery, at: str, base_url: str | None) -> Clause:
    """search.html#reference: ``id`` (any type), ``Type/id``, ``Type/id/_history/v``, an
    absolute URL (this server's are local references) or a canonical ``url|version``."""
    clauses: list[Clause]
    if value.url is not None and not (value.type and value.id and _under(value.url, base_url)):
        clauses = [term(f"{at}.url", value.url)]
    elif value.type is not None and value.id is not None:
        clauses = [term(f"{at}.ref", f"{value.type}/{value.id}")]
    else:
        clauses = [term(f"{at}.id", value.id)]
    if value.version is not None:
        clauses.append(term(f"{at}.version", value.version))
    return all_of(*clauses)


def uri_clause(value: UriQuery, modifier: str | None, at: str) -> Clause:
    """search.html#uri: exact; ``:below`` starts with; ``:above`` is an ancestor of."""
    if modifier == "below":
        return prefix(f"{at}.uri", value.value)
    if modifier == "above":
        return terms(f"{at}.uri", uri_ancestors(value.value))
    return term(f"{at}.uri", value.value)


def near_clause(value: NearQuery, at: str, default_km: int, name: str) -> Clause:
    """Location ``near`` (search.html#special): within a distance of a point, km by default."""
    units = value.units or "km"
    if units not in _DISTANCE_UNITS:
        raise BadRequest(f"'{name}': unsupported distance unit '{units}'", expression=name)
    distance = f"{value.distance}{_DISTANCE_UNITS[units]}" if value.distance is not None else f"{default_km}km"
    point = {"lat": number(value.latitude), "lon": number(value.longitude)}
    return {"geo_distance": {"distance": distance, f"{at}.point": point}}
