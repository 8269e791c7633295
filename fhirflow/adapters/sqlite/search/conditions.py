"""One query value against one value row: the SQL condition for each parameter type
(http://hl7.org/fhir/R4/search.html#ptypes), on a row alias ``a``.

Dates, numbers and quantities render the prefix conditions of :mod:`fhirflow.query.prefixes`
(search.html#prefix, defined there once for both backends) over the row's ``low``/``high``.
"""

from __future__ import annotations

import math
from decimal import Decimal

from fhirflow.adapters.sqlite.search.sql import PREFIX_END, TRUE, Sql, all_of, any_of, in_list, like_escape, sql
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
from fhirflow.searchparams.values import normalize_string

_KM_PER_DEGREE_LAT = 110.574
_KM_PER_DEGREE_LON = 111.320
DEFAULT_NEAR_KM = 50.0
_UNITS_KM = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344, "[mi_us]": 1.609347, "mi": 1.609344}


_SQL_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def render(condition: prefixes.Condition, low: str, high: str) -> Sql:
    """A prefix condition (:mod:`fhirflow.query.prefixes`) over the columns ``low``/``high``.
    Bounds stay ints for dates (epoch ms) and become REALs for numbers, as they are stored."""
    if isinstance(condition, prefixes.AllOf):
        return all_of(render(part, low, high) for part in condition.parts)
    if isinstance(condition, prefixes.AnyOf):
        return any_of(render(part, low, high) for part in condition.parts)
    column = low if condition.side == "low" else high
    bound = float(condition.bound) if isinstance(condition.bound, Decimal) else condition.bound
    return sql(f"{column} {_SQL_OPS[condition.op]} ?", bound)


def date_condition(low: str, high: str, value: DateQuery, now_ms: int) -> Sql:
    """``low``/``high``: the columns holding the stored range (the same column for an instant).
    The prefixes are written as one index range plus filters (see :mod:`fhirflow.query.prefixes`)."""
    return render(prefixes.date_condition(value, now_ms), low, high)


def number_query_condition(a: str, value: NumberQuery | QuantityQuery) -> Sql:
    """``a.low``/``a.high`` hold the stored number (low = high for a plain value)."""
    return render(prefixes.number_condition(value), f"{a}.low", f"{a}.high")


def quantity_condition(a: str, value: QuantityQuery) -> Sql:
    """search.html#quantity: ``n|system|code`` matches system and code; ``n||code`` the code or
    the unit as written; ``n`` any unit. Units are compared as stored (no UCUM conversion)."""
    number = number_query_condition(a, value)
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
    the stored uri is the value or an ancestor path of it (:mod:`fhirflow.query.uris`)."""
    if modifier == "below":
        return prefix_condition(f"{a}.value", value.value)
    if modifier == "above":
        return in_list(f"{a}.value", uri_ancestors(value.value))
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
