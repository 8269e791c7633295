"""FHIR element values → typed index values, one converter per search parameter type.

Each converter takes the nodes an expression selected (JSON values) and the static type hint
of the expression when known (``HumanName``, ``ContactPoint``, ``code``...). Without a hint
(choice elements such as ``Observation.effective[x]``) the element's shape decides, which is
unambiguous for the types search parameters select. The mappings follow search.html:
string (#string), token (#token table), date (#date table), quantity (#quantity),
reference (#reference), uri (#uri).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from fhirflow.searchparams.dates import date_range
from fhirflow.searchparams.values import (
    DATE_MAX,
    DATE_MIN,
    DateValue,
    IndexValue,
    NumberValue,
    PositionValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    decimal_range,
    normalize_string,
    to_decimal,
)

Converter = Callable[[list[Any], "str | None"], list[IndexValue]]

_INF = Decimal("Infinity")
_CONTACT_SYSTEMS = frozenset(("phone", "fax", "email", "pager", "url", "sms", "other"))
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_REFERENCE = re.compile(
    r"(?:(?P<base>.*)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<v>[^/]+))?"
)
_ISO_4217 = "urn:iso:std:iso:4217"


def _s(node: dict[str, Any], key: str) -> str | None:
    """A string field, or None (index values only ever hold strings, whatever the JSON has)."""
    value = node.get(key)
    return value if isinstance(value, str) else None


def _string(text: str) -> StringValue:
    return StringValue(text, normalize_string(text))


def to_strings(nodes: list[Any], hint: str | None) -> list[IndexValue]:
    out: list[IndexValue] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(_string(node))
        elif isinstance(node, dict):
            # search.html#string: HumanName and Address match on any of their parts
            names = _NAME_PARTS if hint == "HumanName" or "family" in node or "given" in node else _ADDRESS_PARTS
            for key in names:
                value = node.get(key)
                if isinstance(value, str):
                    out.append(_string(value))
                elif isinstance(value, list):
                    out.extend(_string(v) for v in value if isinstance(v, str))
    return out


def _codings(node: dict[str, Any]) -> Iterable[TokenValue]:
    codings = node.get("coding")
    for coding in codings if isinstance(codings, list) else ():
        if isinstance(coding, dict):
            yield _coding(coding)
    text = node.get("text")
    if isinstance(text, str):
        yield TokenValue(None, None, normalize_string(text))


def _coding(node: dict[str, Any]) -> TokenValue:
    display = _s(node, "display")
    return TokenValue(_s(node, "system"), _s(node, "code"), normalize_string(display) if display else None)


def _identifier(node: dict[str, Any]) -> TokenValue:
    id_type = node.get("type")
    of_type: tuple[tuple[str | None, str | None], ...] = ()
    text = None
    if isinstance(id_type, dict):
        codings = id_type.get("coding")
        codings = codings if isinstance(codings, list) else ()
        of_type = tuple((_s(c, "system"), _s(c, "code")) for c in codings if isinstance(c, dict))
        if isinstance(id_type.get("text"), str):
            text = normalize_string(id_type["text"])
    return TokenValue(_s(node, "system"), _s(node, "value"), text, of_type)


def _token_dict(node: dict[str, Any], hint: str | None) -> Iterable[TokenValue]:
    if hint == "CodeableConcept" or "coding" in node:
        return _codings(node)
    if hint == "Coding":
        return (_coding(node),)
    if hint == "ContactPoint" or (hint is None and _s(node, "system") in _CONTACT_SYSTEMS and "value" in node):
        # search.html#token: ContactPoint searches on the value; ContactPoint.use serves as the system.
        value = _s(node, "value")
        return (TokenValue(_s(node, "use"), value),) if value is not None else ()
    if hint == "Identifier" or "value" in node:
        return (_identifier(node),)
    if "code" in node or "system" in node:
        return (_coding(node),)
    if "text" in node:
        return _codings(node)
    return ()


def to_tokens(nodes: list[Any], hint: str | None) -> list[IndexValue]:
    out: list[IndexValue] = []
    for node in nodes:
        if isinstance(node, bool):
            out.append(TokenValue(None, "true" if node else "false"))
        elif isinstance(node, str):
            out.append(TokenValue(None, node))
        elif isinstance(node, dict):
            out.extend(_token_dict(node, hint))
    return out


def _span(texts: Iterable[object]) -> tuple[int, int] | None:
    ranges = [r for t in texts if isinstance(t, str) and (r := date_range(t)) is not None]
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _date_dict(node: dict[str, Any]) -> DateValue | None:
    if "start" in node or "end" in node:  # Period: an open end is unbounded
        start = date_range(node["start"]) if isinstance(node.get("start"), str) else None
        end = date_range(node["end"]) if isinstance(node.get("end"), str) else None
        if start is None and end is None:
            return None
        return DateValue(start[0] if start else DATE_MIN, end[1] if end else DATE_MAX)
    if "event" in node or "repeat" in node:  # Timing: the outer limits of events and bounds
        events = list(node["event"]) if isinstance(node.get("event"), list) else []
        repeat = node.get("repeat")
        bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
        if isinstance(bounds, dict):
            events += [bounds.get("start"), bounds.get("end")]
        span = _span(events)
        return DateValue(*span) if span else None
    return None


def to_dates(nodes: list[Any], hint: str | None) -> list[IndexValue]:
    out: list[IndexValue] = []
    for node in nodes:
        if isinstance(node, str):
            found = date_range(node)
            if found is not None:
                out.append(DateValue(*found))
        elif isinstance(node, dict):
            value = _date_dict(node)
            if value is not None:
                out.append(value)
    return out


def _bounds(node: dict[str, Any]) -> tuple[Decimal, Decimal, dict[str, Any]] | None:
    """A Range as [low, high] (open ends infinite) and the Quantity that carries its unit."""
    low = node["low"] if isinstance(node.get("low"), dict) else {}
    high = node["high"] if isinstance(node.get("high"), dict) else {}
    low_value, high_value = to_decimal(low.get("value")), to_decimal(high.get("value"))
    if low_value is None and high_value is None:
        return None
    unit_from: dict[str, Any] = low if low_value is not None else high
    return (low_value if low_value is not None else -_INF), (high_value if high_value is not None else _INF), unit_from


def _number(raw: Any) -> Decimal | None:
    value = to_decimal(raw)
    if value is None and isinstance(raw, str):
        try:
            value = Decimal(raw)
        except InvalidOperation:
            return None
        return value if value.is_finite() else None
    return value


def to_numbers(nodes: list[Any], hint: str | None) -> list[IndexValue]:
    out: list[IndexValue] = []
    for node in nodes:
        if isinstance(node, dict):
            bounds = _bounds(node)
            if bounds is not None:
                out.append(NumberValue(None, bounds[0], bounds[1]))
            continue
        value = _number(node)
        if value is not None:
            out.append(NumberValue(value, *decimal_range(value)))
    return out


def _quantity(node: dict[str, Any]) -> QuantityValue | None:
    value = to_decimal(node.get("value"))
    if value is None:
        bounds = _bounds(node)
        if bounds is None:
            return None
        low, high, unit_from = bounds
        return QuantityValue(None, low, high, _s(unit_from, "system"), _s(unit_from, "code"), _s(unit_from, "unit"))
    if "currency" in node:  # Money
        currency = _s(node, "currency")
        return QuantityValue(value, *decimal_range(value), _ISO_4217, currency, currency)
    low, high = decimal_range(value)
    comparator = node.get("comparator")
    if comparator in ("<", "<="):
        low = -_INF
    elif comparator in (">", ">="):
        high = _INF
    return QuantityValue(value, low, high, _s(node, "system"), _s(node, "code"), _s(node, "unit"))


def to_quantities(nodes: list[Any], hint: str | None) -> list[IndexValue]:
    out: list[IndexValue] = []
    for node in nodes:
        if isinstance(node, dict):
            value = _quantity(node)
            if value is not None:
                out.append(value)
    return out


@lru_cache(maxsize=8192)
def parse_reference(reference: str) -> ReferenceValue | None:
    """A literal reference string as a ReferenceValue (contained ``#id`` references → None).

    Cached: a patient's resources all name the patient, its encounter and its practitioners, and
    the value is immutable."""
    if not reference or reference.startswith("#"):
        return None
    if reference.startswith("urn:"):
        return ReferenceValue(None, None, None, reference)
    absolute = "://" in reference
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        return ReferenceValue(None, None, None, reference) if absolute else ReferenceValue(None, reference)
    return ReferenceValue(match["type"], match["id"], match["v"], reference if absolute else None)


def _reference_dict(node: dict[str, Any]) -> ReferenceValue | None:
    identifier = node.get("identifier")
    id_system = id_value = None
    if isinstance(identifier, dict):
        id_system, id_value = _s(identifier, "system"), _s(identifier, "value")
    reference = node.get("reference")
    if isinstance(reference, str):
        value = parse_reference(reference)
        if value is None or (id_system is None and id_value is None):
            return value
        return value._replace(identifier_system=id_system, identifier_value=id_value)
    if isinstance(node.get("resourceType"), str):  # an inline resource (Bundle.entry[0].resource)
        return ReferenceValue(node["resourceType"], _s(node, "id"))
    if id_system is None and id_value is None:
        return None
    ref_type = _s(node, "type")
    return ReferenceValue(ref_type, None, None, None, id_system, id_value)


def to_references(nodes: list[Any], hint: str | None) -> list[IndexValue]:
    out: list[IndexValue] = []
    for node in nodes:
        value: ReferenceValue | None = None
        if isinstance(node, dict):
            value = _reference_dict(node)
        elif isinstance(node, str) and node and hint != "Reference":  # canonical (url|version) or uri
            url, _, version = node.partition("|")
            value = ReferenceValue(None, None, version or None, url)
        if value is not None:
            out.append(value)
    return out


def to_uris(nodes: list[Any], hint: str | None) -> list[IndexValue]:
    return [UriValue(node) for node in nodes if isinstance(node, str) and node]


def to_positions(nodes: list[Any], hint: str | None) -> list[IndexValue]:
    out: list[IndexValue] = []
    for node in nodes:
        if isinstance(node, dict):
            lat, lon = to_decimal(node.get("latitude")), to_decimal(node.get("longitude"))
            if lat is not None and lon is not None:
                out.append(PositionValue(lat, lon))
    return out


CONVERTERS: dict[str, Converter] = {
    "string": to_strings,
    "token": to_tokens,
    "date": to_dates,
    "number": to_numbers,
    "quantity": to_quantities,
    "reference": to_references,
    "uri": to_uris,
    "special": to_positions,
}
