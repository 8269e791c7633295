"""Query DSL clauses for one search value, per parameter type (search.html#ptypes).

Every function builds the condition one value of the index must meet, on the fields under
``prefix`` (a nested path such as ``dates``, or a composite component such as
``composites.c1``); the caller wraps it in the ``nested`` query that ties it to one value.

Prefixes on ranges (search.html#prefix). A resource value is a closed interval [lo, hi]: a date
covers its precision (``dates.start``/``dates.end``), a number or quantity is its stated value
or the interval of a Range or comparator (``low``/``high``, see ``documents.py``). The search
value is the interval its precision implies: inclusive [sl, sh] for dates, half-open [sl, sh)
for numbers around the written value v.

==== =============================================== ================================
     dates (ranges on both sides)                    numbers and quantities
==== =============================================== ================================
eq   sl <= lo and hi <= sh (search contains value)    sl <= lo and hi < sh
ne   not eq                                           not eq
gt   hi > sh (part of the value after the search)     hi > v (greater than exactly v)
lt   lo < sl                                          lo < v
ge   gt or eq                                         hi >= v
le   lt or eq                                         lo <= v
sa   lo > sh (starts after the search range)          lo >= sh
eb   hi < sl (ends before the search range)           hi < sl
ap   overlaps [sl - d, sh + d], d = 10% of the        overlaps [v - d, v + d],
     distance from now to the search range            d = max(10% of |v|, half the precision)
==== =============================================== ================================

For numbers gt/lt/ge/le compare with the exact value, as the spec's number table says
(``lt100``: "less than exactly 100"); eq/ne use the precision (``100`` is [99.5, 100.5)).
A multi-valued element matches when any one value does, ``ne`` included.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhirflow.errors import BadRequest
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

Clause = dict[str, Any]

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


def escape_wildcard(text: str) -> str:
    return "".join("\\" + ch if ch in "*?\\" else ch for ch in text)


def string_clause(value: StringQuery, modifier: str | None, at: str) -> Clause:
    """search.html#string: starts-with on the normalised form; ``:exact`` whole and
    case-sensitive; ``:contains`` anywhere (normalised)."""
    if modifier == "exact":
        return term(f"{at}.exact", value.text)
    if modifier == "contains":
        return {"wildcard": {f"{at}.norm": {"value": f"*{escape_wildcard(value.normalized)}*"}}}
    return prefix(f"{at}.norm", value.normalized)


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


def _date_gap(value: DateQuery, now: int) -> int:
    if now < value.low:
        return value.low - now
    return max(0, now - value.high)


def date_clause(value: DateQuery, at: str, now: int) -> Clause:
    lo, hi = f"{at}.start", f"{at}.end"
    sl, sh = value.low, value.high
    contained = all_of(range_(lo, gte=sl), range_(hi, lte=sh))
    match value.prefix:
        case "eq":
            return contained
        case "ne":
            return none_of(contained)
        case "gt":
            return range_(hi, gt=sh)
        case "lt":
            return range_(lo, lt=sl)
        case "ge":
            return any_of(range_(hi, gt=sh), contained)
        case "le":
            return any_of(range_(lo, lt=sl), contained)
        case "sa":
            return range_(lo, gt=sh)
        case "eb":
            return range_(hi, lt=sl)
        case _:  # ap
            slack = _date_gap(value, now) // 10
            return all_of(range_(lo, lte=sh + slack), range_(hi, gte=sl - slack))


def number_clause(value: NumberQuery | QuantityQuery, at: str) -> Clause:
    lo, hi = f"{at}.low", f"{at}.high"
    v, sl, sh = value.value, value.low, value.high
    equal = all_of(range_(lo, gte=number(sl)), range_(hi, lt=number(sh)))
    match value.prefix:
        case "eq":
            return equal
        case "ne":
            return none_of(equal)
        case "gt":
            return range_(hi, gt=number(v))
        case "lt":
            return range_(lo, lt=number(v))
        case "ge":
            return range_(hi, gte=number(v))
        case "le":
            return range_(lo, lte=number(v))
        case "sa":
            return range_(lo, gte=number(sh))
        case "eb":
            return range_(hi, lt=number(sl))
        case _:  # ap
            slack = max(abs(v) / 10, (sh - sl) / 2)
            return all_of(range_(lo, lte=number(v + slack)), range_(hi, gte=number(v - slack)))


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


def uri_ancestors(uri: str) -> list[str]:
    """``uri`` and every ancestor path of it (with and without the trailing ``/``), for
    ``:above``: ``http://a.org/fhir/ValueSet/1`` is below ``http://a.org/fhir``."""
    start = uri.find("://")
    start = start + 3 if start >= 0 else 0
    out: list[str] = []
    for index, ch in enumerate(uri):
        if ch == "/" and index > start:
            out.extend((uri[:index], uri[: index + 1]))
    out.append(uri)
    return list(dict.fromkeys(out))


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
