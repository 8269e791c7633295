"""Typed search index values: what a backend stores per (resource, parameter).

One class per search parameter type (http://hl7.org/fhir/R4/search.html#ptypes). Every value
carries what a backend needs to answer every prefix and modifier the query AST can express,
so backends never look at the resource JSON again:

- dates are inclusive ranges of epoch milliseconds in UTC (``DATE_MIN``/``DATE_MAX`` for open ends);
- numbers and quantities keep the exact value and the half-open range implied by its precision;
- strings keep the exact text and the normalised (case and accent folded) form;
- token text (for ``:text``) is stored normalised the same way.

The values are ``NamedTuple`` classes rather than dataclasses: extraction creates tens of them
per resource, and a NamedTuple is cheaper both to define at import and to construct. Like any
tuple, values of different classes with equal fields compare equal; compare values of one
parameter (one class) only.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

# Open ends of a Period, as sortable integers any backend can store: 0001-01-01T00:00:00.000Z and
# 9999-12-31T23:59:59.999Z in epoch milliseconds.
DATE_MIN = -62135596800000
DATE_MAX = 253402300799999

_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=16384)  # displays and names repeat across resources
def normalize_string(text: str) -> str:
    """Case- and accent-insensitive form used for string search (search.html#string).

    Lower-cased (casefold), NFKD-decomposed with combining marks dropped, whitespace collapsed.
    """
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    if not decomposed.isascii():
        decomposed = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACES.sub(" ", decomposed).strip()


class StringValue(NamedTuple):
    exact: str
    normalized: str


class TokenValue(NamedTuple):
    """A code in a system. ``system``/``code`` may be None (a CodeableConcept.text entry has neither).

    ``text`` is the normalised display/text used by ``:text``; ``of_type`` holds the
    Identifier.type codings (system, code) for ``:of-type``.
    """

    system: str | None
    code: str | None
    text: str | None = None
    of_type: tuple[tuple[str | None, str | None], ...] = ()


class DateValue(NamedTuple):
    """Inclusive range [low, high] in epoch milliseconds (UTC)."""

    low: int
    high: int


class NumberValue(NamedTuple):
    """``value`` is the stated number; [low, high) the range its precision implies.

    A Range element has no single value: ``value`` is None and low/high are its bounds
    (infinite where open).
    """

    value: Decimal | None
    low: Decimal
    high: Decimal


class QuantityValue(NamedTuple):
    value: Decimal | None
    low: Decimal
    high: Decimal
    system: str | None
    code: str | None
    unit: str | None


class ReferenceValue(NamedTuple):
    """A reference as written: ``Type/id[/_history/v]``, an absolute URL (type/id parsed when it
    ends in ``Type/id``), a ``urn:`` (url only), or a canonical (url and optional version).
    ``identifier_*`` come from Reference.identifier (for ``:identifier``)."""

    type: str | None
    id: str | None
    version: str | None = None
    url: str | None = None
    identifier_system: str | None = None
    identifier_value: str | None = None


_RELATIVE = re.compile(r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})")


def as_local_reference(value: ReferenceValue) -> ReferenceValue:
    """A canonical written as a relative reference (``Questionnaire/gcs``) names a local
    resource: it is indexed as ``Type/id``, not as a url, by both backends alike."""
    if value.id is None and value.url is not None and (relative := _RELATIVE.fullmatch(value.url)):
        return value._replace(type=relative["type"], id=relative["id"], url=None)
    return value


class UriValue(NamedTuple):
    value: str


class PositionValue(NamedTuple):
    """Location.position for the special ``near`` parameter."""

    latitude: Decimal
    longitude: Decimal


class CompositeValue(NamedTuple):
    """One tuple of component values, in the order of the parameter's components."""

    components: tuple[IndexValue, ...]


IndexValue = (
    StringValue
    | TokenValue
    | DateValue
    | NumberValue
    | QuantityValue
    | ReferenceValue
    | UriValue
    | PositionValue
    | CompositeValue
)


def decimal_range(value: Decimal) -> tuple[Decimal, Decimal]:
    """The half-open range [low, high) a decimal's precision implies: ``100`` → [99.5, 100.5).

    Half a unit of the last significant digit on each side (search.html#number). The spec's
    example for ``1e2`` (95..105) does not follow its own rule; we apply the rule consistently.
    """
    if not value.is_finite():
        return value, value
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5).scaleb(exponent - 1)
    return value - half, value + half


def to_decimal(raw: object) -> Decimal | None:
    """A JSON number as a Decimal. Floats go through ``repr`` so ``0.1`` stays ``0.1``
    (a float parser has already dropped trailing zeros: ``100.00`` arrives as ``100.0``)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, int):
        return Decimal(raw)
    elif isinstance(raw, float):
        value = Decimal(repr(raw))
    else:
        return None
    return value if value.is_finite() else None
