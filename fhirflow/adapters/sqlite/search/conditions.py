"""One query value against one value row: the SQL condition for each parameter type
(http://hl7.org/fhir/R4/search.html#ptypes), on a row alias ``a``.

Dates compare the query's range [ql, qh] with the row's [low, high] (inclusive epoch ms), as
search.html#prefix defines for ranges: ``eq`` — the query range contains the value's; ``gt`` —
the value's range reaches past the query range; ``ge`` — ``gt`` or ``eq``; ``sa``/``eb`` — the
value's range starts after / ends before the query range; ``ap`` — the ranges overlap once the
query range is widened by 10% of its distance from now. Numbers and quantities do the same with
the query's precision range [ql, qh) against the stored value (a point, or a Range's bounds).
"""

from __future__ import annotations

import math
from decimal import Decimal

from fhirflow.adapters.sqlite.search.sql import PREFIX_END, TRUE, Sql, all_of, any_of, like_escape, sql
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
from fhirflow.searchparams.values import normalize_string

_DAY_MS = 86_400_000
_KM_PER_DEGREE_LAT = 110.574
_KM_PER_DEGREE_LON = 111.320
DEFAULT_NEAR_KM = 50.0
_UNITS_KM = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344, "[mi_us]": 1.609347, "mi": 1.609344}


def date_condition(low: str, high: str, value: DateQuery, now_ms: int) -> Sql:
    """``low``/``high``: the columns holding the stored range (the same column for an instant).

    Each prefix is written as one index range plus filters, using low <= high: ``ge`` is
    "ends after the query range, or lies inside it", i.e. ``high >= ql AND (high > qh OR low >= ql)``
    (no OR of two ranges), and ``le`` its mirror."""
    ql, qh = value.low, value.high
    match value.prefix:
        case "eq":
            return sql(f"{low} >= ? AND {low} <= ? AND {high} <= ?", ql, qh, qh)
        case "ne":
            return sql(f"({low} < ? OR {high} > ?)", ql, qh)
        case "gt":
            return sql(f"{high} > ?", qh)
        case "lt":
            return sql(f"{low} < ?", ql)
        case "ge":
            return sql(f"{high} >= ? AND ({high} > ? OR {low} >= ?)", ql, qh, ql)
        case "le":
            return sql(f"{low} <= ? AND ({low} < ? OR {high} <= ?)", qh, ql, qh)
        case "sa":
            return sql(f"{low} > ?", qh)
        case "eb":
            return sql(f"{high} < ?", ql)
        case "ap":
            slack = max(abs(now_ms - ql) // 10, _DAY_MS)
            return sql(f"{low} <= ? AND {high} >= ?", qh + slack, ql - slack)
    raise AssertionError(value.prefix)  # pragma: no cover - the parser admits only these


def number_condition(a: str, prefix: str, value: Decimal, low: Decimal, high: Decimal) -> Sql:
    """``a.low``/``a.high`` hold the stored number (low = high for a plain value)."""
    v, ql, qh = float(value), float(low), float(high)
    match prefix:
        case "eq":
            return sql(f"{a}.low >= ? AND {a}.high < ?", ql, qh)
        case "ne":
            return sql(f"({a}.low < ? OR {a}.high >= ?)", ql, qh)
        case "gt":
            return sql(f"{a}.high > ?", v)
        case "lt":
            return sql(f"{a}.low < ?", v)
        case "ge":
            return sql(f"{a}.high >= ?", v)
        case "le":
            return sql(f"{a}.low <= ?", v)
        case "sa":
            return sql(f"{a}.low > ?", v)
        case "eb":
            return sql(f"{a}.high < ?", v)
        case "ap":
            slack = abs(v) * 0.1
            return sql(f"{a}.low <= ? AND {a}.high >= ?", v + slack, v - slack)
    raise AssertionError(prefix)  # pragma: no cover


def number_query_condition(a: str, value: NumberQuery) -> Sql:
    return number_condition(a, value.prefix, value.value, value.low, value.high)


def quantity_condition(a: str, value: QuantityQuery) -> Sql:
    """search.html#quantity: ``n|system|code`` matches system and code; ``n||code`` the code or
    the unit as written; ``n`` any unit. Units are compared as stored (no UCUM conversion)."""
    number = number_condition(a, value.prefix, value.value, value.low, value.high)
    if value.system is not None and value.code is not None:
        return all_of((number, sql(f"{a}.system = ? AND {a}.code = ?", value.system, value.code)))
    if value.code is not None:
        return all_of((number, sql(f"({a}.code = ? OR {a}.unit = ?)", value.code, value.code)))
    if value.system is not None:
        return all_of((number, sql(f"{a}.system = ?", value.system)))
    return number


def token_condition(a: str, value: TokenQuery) -> Sql:
    """search.html#token: ``code``, ``|code`` (no system), ``system|`` (any code), ``system|code``."""
    if value.system is None:
        return sql(f"{a}.code = ?", value.code)
    if value.system == "":
        return sql(f"{a}.code = ? AND {a}.system IS NULL", value.code)
    if value.code is None:
        return sql(f"{a}.system = ?", value.system)
    return sql(f"{a}.code = ? AND {a}.system = ?", value.code, value.system)


def prefix_condition(column: str, prefix: str) -> Sql:
    """``column`` starts with ``prefix``, as an index range."""
    if not prefix:
        return TRUE
    return sql(f"{column} >= ? AND {column} < ?", prefix, prefix + PREFIX_END)


def string_condition(a: str, value: StringQuery, modifier: str | None) -> Sql:
    """search.html#string: starts-with on the normalised form (case and accents folded);
    ``:exact`` the whole text as written; ``:contains`` anywhere in the normalised form."""
    if modifier == "exact":
        return sql(f"{a}.norm = ? AND {a}.exact = ?", normalize_string(value.text), value.text)
    if modifier == "contains":
        return sql(f"{a}.norm LIKE ? ESCAPE '\\'", f"%{like_escape(value.normalized)}%")
    return prefix_condition(f"{a}.norm", value.normalized)


def token_text_condition(a: str, value: StringQuery) -> Sql:
    """Token ``:text``: a word of the coding's display or the concept's text starts with the value."""
    if not value.normalized:
        return sql(f"{a}.text IS NOT NULL")
    return any_of(
        (
            prefix_condition(f"{a}.text", value.normalized),
            sql(f"{a}.text LIKE ? ESCAPE '\\'", f"% {like_escape(value.normalized)}%"),
        )
    )


def uri_condition(a: str, value: UriQuery, modifier: str | None) -> Sql:
    """search.html#uri: equality; ``:below`` — the stored uri starts with the value; ``:above`` —
    the value starts with the stored uri."""
    if modifier == "below":
        return prefix_condition(f"{a}.value", value.value)
    if modifier == "above":
        return sql(f"substr(?, 1, length({a}.value)) = {a}.value", value.value)
    return sql(f"{a}.value = ?", value.value)


def local_reference(a: str, base_url: str) -> Sql:
    """A reference to a resource on this server: relative, or absolute under ``base_url``."""
    if not base_url:
        return sql(f"{a}.url IS NULL")
    prefix = base_url.rstrip("/") + "/"
    return sql(f"({a}.url IS NULL OR ({a}.url >= ? AND {a}.url < ?))", prefix, prefix + PREFIX_END)


def reference_condition(a: str, value: ReferenceQuery, base_url: str) -> Sql:
    """search.html#reference: ``id``, ``Type/id``, an absolute URL (this server's base counts as
    ``Type/id``), a canonical ``url|version``; a version narrows to references that name it."""
    version = sql(f"{a}.version = ?", value.version) if value.version else TRUE
    is_ours = value.url is not None and bool(base_url) and value.url.startswith(base_url.rstrip("/") + "/")
    if value.id is not None and (value.url is None or is_ours):
        target = sql(f"{a}.target_id = ?", value.id)
        if value.type is not None:
            target = all_of((target, sql(f"{a}.target_type = ?", value.type)))
        return all_of((target, version, local_reference(a, base_url)))
    return all_of((sql(f"{a}.url = ?", value.url), version))


def near_condition(a: str, value: NearQuery) -> Sql:
    """Location ``near``: within the distance (km unless ``units`` says otherwise) of the point,
    on an equirectangular approximation that is exact enough at city scale."""
    units = value.units or "km"
    if units not in _UNITS_KM:
        raise BadRequest(f"near: unknown distance unit '{units}' (use km, m or [mi_i])", expression="near")
    distance = float(value.distance) * _UNITS_KM[units] if value.distance is not None else DEFAULT_NEAR_KM
    lat, lon = float(value.latitude), float(value.longitude)
    dlat = distance / _KM_PER_DEGREE_LAT
    dlon = distance / max(_KM_PER_DEGREE_LON * math.cos(math.radians(lat)), 1e-6)
    box = sql(
        f"{a}.latitude BETWEEN ? AND ? AND {a}.longitude BETWEEN ? AND ?",
        lat - dlat,
        lat + dlat,
        lon - dlon,
        lon + dlon,
    )
    exact = sql(
        f"(({a}.latitude - ?) * {_KM_PER_DEGREE_LAT}) * (({a}.latitude - ?) * {_KM_PER_DEGREE_LAT}) + "
        f"(({a}.longitude - ?) * {_KM_PER_DEGREE_LON} * cos(radians(({a}.latitude + ?) / 2))) * "
        f"(({a}.longitude - ?) * {_KM_PER_DEGREE_LON} * cos(radians(({a}.latitude + ?) / 2))) <= ?",
        lat,
        lat,
        lon,
        lat,
        lon,
        lat,
        distance * distance,
    )
    return all_of((box, exact))
