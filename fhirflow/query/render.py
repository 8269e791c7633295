"""A :class:`Query` back to its normalised query string (the searchset Bundle's ``self`` link).

Parsing the rendered string gives the same AST: values are re-escaped (search.html#escaping)
and URL-encoded, chains always name their target type, ignored parameters are left out.
"""

from __future__ import annotations

from urllib.parse import quote

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
    SpecialQuery,
    StringQuery,
    TokenQuery,
    UriQuery,
)
from fhirflow.query.values import escape

_SAFE = "-._~:|,$*/\\"


def _prefix(prefix: str) -> str:
    return "" if prefix == "eq" else prefix


def render_value(value: QueryValue) -> str:
    """One value as written in a query (FHIR escapes applied, not URL-encoded)."""
    match value:
        case StringQuery(text=text) | UriQuery(value=text) | SpecialQuery(value=text):
            return escape(text)
        case TokenQuery(system=None, code=code):
            return escape(code or "")
        case TokenQuery(system=system, code=code):
            return f"{escape(system or '')}|{escape(code or '')}"
        case OfTypeQuery():
            return "|".join(escape(p) for p in (value.type_system, value.type_code, value.value))
        case DateQuery():
            return _prefix(value.prefix) + escape(value.text)
        case NumberQuery():
            return f"{_prefix(value.prefix)}{value.value}"
        case QuantityQuery():
            unit = f"|{escape(value.system or '')}|{escape(value.code or '')}" if value.system or value.code else ""
            return f"{_prefix(value.prefix)}{value.value}{unit}"
        case ReferenceQuery():
            return _reference(value)
        case MissingQuery(missing=missing):
            return "true" if missing else "false"
        case NearQuery():
            parts = [str(value.latitude), str(value.longitude)]
            if value.distance is not None or value.units:
                parts.append("" if value.distance is None else str(value.distance))
            if value.units:
                parts.append(escape(value.units))
            return "|".join(parts)
        case CompositeQuery(components=components):
            return "$".join(render_value(c) for c in components)
    raise TypeError(value)  # pragma: no cover - the match is exhaustive


def _reference(value: ReferenceQuery) -> str:
    if value.url is not None:
        return escape(value.url) + (f"|{escape(value.version)}" if value.version else "")
    text = f"{value.type}/{value.id}" if value.type else value.id or ""
    if value.version:
        text += f"/_history/{value.version}"
    return escape(text)


def criterion_name(criterion: Criterion) -> str:
    match criterion:
        case Filter(param=param, modifier=modifier):
            return param.code + (f":{modifier}" if modifier else "")
        case Chain(param=param, target_type=target, criterion=inner):
            return f"{param.code}:{target}.{criterion_name(inner)}"
        case Has(source_type=source, reference=reference, criterion=inner):
            return f"_has:{source}:{reference.code}:{criterion_name(inner)}"
    raise TypeError(criterion)  # pragma: no cover


def criterion_values(criterion: Criterion) -> str:
    while not isinstance(criterion, Filter):
        criterion = criterion.criterion
    return ",".join(render_value(v) for v in criterion.values)


def _include(include: Include) -> str:
    if include.source_type is None:
        return "*"
    text = f"{include.source_type}:{include.param.code if include.param else '*'}"
    return text + (f":{include.target_type}" if include.target_type else "")


def query_pairs(query: Query) -> list[tuple[str, str]]:
    """The normalised ``(name, value)`` pairs, FHIR-escaped but not URL-encoded."""
    pairs: list[tuple[str, str]] = []
    if query.types:
        pairs.append(("_type", ",".join(query.types)))
    pairs.extend((criterion_name(c), criterion_values(c)) for c in query.criteria)
    for name, includes in (("_include", query.includes), ("_revinclude", query.revincludes)):
        pairs.extend((name + (":iterate" if i.iterate else ""), _include(i)) for i in includes)
    if query.sort:
        pairs.append(("_sort", ",".join(("-" if k.descending else "") + k.param.code for k in query.sort)))
    if query.count is not None:
        pairs.append(("_count", str(query.count)))
    for name, choice in (
        ("_total", query.total),
        ("_summary", query.summary),
        ("_contained", query.contained),
        ("_containedType", query.contained_type),
    ):
        if choice is not None:
            pairs.append((name, choice))
    if query.elements:
        pairs.append(("_elements", ",".join(query.elements)))
    return pairs


def query_string(query: Query) -> str:
    return "&".join(f"{quote(name, safe=_SAFE)}={quote(value, safe=_SAFE)}" for name, value in query_pairs(query))
