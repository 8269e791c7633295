"""Parsing search values by parameter type, with FHIR escaping (search.html#escaping).

Values arrive URL-decoded but with FHIR escapes intact: ``\\,`` ``\\$`` ``\\|`` ``\\\\`` are literal
characters; unescaped ``,`` separates OR-ed values, ``$`` composite components, ``|``
system/code parts. A malformed value is always a 400, whatever the handling preference.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import cast

from fhirflow.errors import BadRequest
from fhirflow.query.ast import (
    PREFIXES,
    CompositeQuery,
    DateQuery,
    MissingQuery,
    Modifier,
    NearQuery,
    NumberQuery,
    OfTypeQuery,
    Prefix,
    QuantityQuery,
    QueryValue,
    ReferenceQuery,
    SpecialQuery,
    StringQuery,
    TokenQuery,
    UriQuery,
)
from fhirflow.searchparams.dates import date_range
from fhirflow.searchparams.registry import SearchParam
from fhirflow.searchparams.values import decimal_range, normalize_string

_ESCAPABLE = ",$|\\"
_REFERENCE = re.compile(
    r"(?:(?P<base>.+)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<v>[^/]+))?"
)
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PREFIXED = frozenset(("date", "number", "quantity"))


def split_escaped(text: str, separator: str) -> list[str]:
    """Split on unescaped ``separator``; the pieces keep their escapes."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            current.append(ch)
            current.append(next(chars, ""))
        elif ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append(nxt if nxt in _ESCAPABLE and nxt else ch + nxt)
        else:
            out.append(ch)
    return "".join(out)


def escape(text: str) -> str:
    return "".join("\\" + ch if ch in _ESCAPABLE else ch for ch in text)


def _bad(name: str, message: str) -> BadRequest:
    return BadRequest(f"Invalid value for search parameter '{name}': {message}", expression=name)


def split_prefix(name: str, raw: str) -> tuple[Prefix, str]:
    if len(raw) >= 2 and raw[:2].isalpha():
        if raw[:2] not in PREFIXES:
            raise _bad(name, f"unknown prefix '{raw[:2]}' in '{raw}'")
        return cast(Prefix, raw[:2]), raw[2:]
    return "eq", raw


def parse_decimal(name: str, raw: str) -> Decimal:
    try:
        value = Decimal(unescape(raw))
    except InvalidOperation:
        raise _bad(name, f"'{raw}' is not a number") from None
    if not value.is_finite():
        raise _bad(name, f"'{raw}' is not a number")
    return value


def parse_date(name: str, raw: str) -> DateQuery:
    prefix, text = split_prefix(name, raw)
    text = unescape(text).replace(" ", "+")  # a '+' offset that form decoding turned into a space
    found = date_range(text)
    if found is None:
        raise _bad(name, f"'{text}' is not a FHIR date")
    return DateQuery(prefix, text, found[0], found[1])


def parse_number(name: str, raw: str) -> NumberQuery:
    prefix, text = split_prefix(name, raw)
    value = parse_decimal(name, text)
    return NumberQuery(prefix, value, *decimal_range(value))


def parse_quantity(name: str, raw: str) -> QuantityQuery:
    prefix, text = split_prefix(name, raw)
    parts = split_escaped(text, "|")
    if len(parts) not in (1, 3):
        raise _bad(name, f"'{raw}' is not number, number|system|code or number||code")
    value = parse_decimal(name, parts[0])
    system = unescape(parts[1]) or None if len(parts) == 3 else None
    code = unescape(parts[2]) or None if len(parts) == 3 else None
    return QuantityQuery(prefix, value, *decimal_range(value), system, code)


def parse_token(name: str, raw: str) -> TokenQuery:
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        return TokenQuery(None, unescape(raw))
    if len(parts) != 2:
        raise _bad(name, f"'{raw}' has more than one unescaped '|'")
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise _bad(name, "'|' needs a system or a code")
    return TokenQuery(system, code or None)


def parse_of_type(name: str, raw: str) -> OfTypeQuery:
    parts = [unescape(p) for p in split_escaped(raw, "|")]
    if len(parts) != 3 or not all(parts):
        raise _bad(name, f"':of-type' needs type-system|type-code|value, got '{raw}'")
    return OfTypeQuery(parts[0], parts[1], parts[2])


def parse_reference(name: str, raw: str, target_type: str | None) -> ReferenceQuery:
    parts = split_escaped(raw, "|")
    if len(parts) > 2:
        raise _bad(name, f"'{raw}' has more than one unescaped '|'")
    text = unescape(parts[0])
    version = unescape(parts[1]) or None if len(parts) == 2 else None
    if not text:
        raise _bad(name, f"'{raw}' names no resource")
    if target_type is not None:  # subject:Patient=123 is subject=Patient/123
        if not _ID.fullmatch(text):
            raise _bad(name, f"'{text}' is not a resource id")
        return ReferenceQuery(target_type, text)
    if "://" in text or text.startswith("urn:") or version is not None:
        match = _REFERENCE.fullmatch(text) if version is None else None
        if match is not None:
            return ReferenceQuery(match["type"], match["id"], match["v"], text)
        return ReferenceQuery(None, None, version, text)
    match = _REFERENCE.fullmatch(text)
    if match is not None and match["base"] is None:
        return ReferenceQuery(match["type"], match["id"], match["v"])
    if _ID.fullmatch(text):
        return ReferenceQuery(None, text)
    raise _bad(name, f"'{text}' is not an id, Type/id or URL")


def parse_near(name: str, raw: str) -> NearQuery:
    parts = split_escaped(raw, "|")
    if not 2 <= len(parts) <= 4:
        raise _bad(name, "near needs latitude|longitude[|distance[|units]]")
    lat, lon = parse_decimal(name, parts[0]), parse_decimal(name, parts[1])
    distance = parse_decimal(name, parts[2]) if len(parts) > 2 and parts[2] else None
    units = unescape(parts[3]) or None if len(parts) > 3 else None
    return NearQuery(lat, lon, distance, units)


def parse_missing(name: str, raw: str) -> MissingQuery:
    if raw not in ("true", "false"):
        raise _bad(name, ":missing takes true or false")
    return MissingQuery(raw == "true")


def parse_string(raw: str) -> StringQuery:
    text = unescape(raw)
    return StringQuery(text, normalize_string(text))


def parse_simple(name: str, ptype: str, raw: str, code: str) -> QueryValue:
    """One value of a parameter type without modifier (composite components use this too)."""
    if ptype == "string":
        return parse_string(raw)
    if ptype == "token":
        return parse_token(name, raw)
    if ptype == "date":
        return parse_date(name, raw)
    if ptype == "number":
        return parse_number(name, raw)
    if ptype == "quantity":
        return parse_quantity(name, raw)
    if ptype == "reference":
        return parse_reference(name, raw, None)
    if ptype == "uri":
        return UriQuery(unescape(raw))
    if ptype == "special":
        return parse_near(name, raw) if code == "near" else SpecialQuery(unescape(raw))
    raise _bad(name, f"parameters of type {ptype} cannot be used here")


def parse_composite(name: str, param: SearchParam, raw: str) -> CompositeQuery:
    parts = split_escaped(raw, "$")
    if len(parts) != len(param.components):
        raise _bad(name, f"'{raw}' needs {len(param.components)} '$'-separated components")
    return CompositeQuery(
        tuple(parse_simple(name, c.type, p, c.code) for c, p in zip(param.components, parts, strict=True))
    )


def parse_value(name: str, param: SearchParam, modifier: Modifier | None, raw: str, target: str | None) -> QueryValue:
    """One comma-separated alternative of ``param`` under ``modifier``."""
    if modifier == "missing":
        return parse_missing(name, raw)
    if modifier == "text":
        return parse_string(raw)
    if modifier in ("in", "not-in") or (modifier in ("above", "below") and param.type == "uri"):
        return UriQuery(unescape(raw))
    if modifier == "of-type":
        return parse_of_type(name, raw)
    if modifier == "identifier":
        return parse_token(name, raw)
    if param.type == "reference":
        return parse_reference(name, raw, target)
    if param.type == "composite":
        return parse_composite(name, param, raw)
    return parse_simple(name, param.type, raw, param.code)


def has_prefix(ptype: str) -> bool:
    return ptype in _PREFIXED
