"""What each search prefix means on a range, defined once for every backend (search.html#prefix).

A backend does not interpret ``eq``, ``sa`` or ``ap`` itself: it asks :func:`date_condition` or
:func:`number_condition` for a :data:`Condition` over the two ends of the *resource's* value and
renders that (SQL in ``adapters/sqlite/search/conditions.py``, query DSL in
``adapters/opensearch/clauses.py``). So the embedded server and the AWS one cannot disagree on
which resources a prefix matches.

The resource's value is a closed range [lo, hi] (``Side`` "low"/"high"): a date covers its
precision (``1990-05`` is the whole month), a Period its start and end (open ends reach the
index's far past / far future), a number or quantity its stated value (lo = hi) or the
interval of a Range or comparator. The search value is the range its precision implies, as the
parser computed it: inclusive [ql, qh] epoch milliseconds for dates, half-open [ql, qh) around
the written number v for numbers (``100`` is [99.5, 100.5)).

==== ========================================== =========================================
     dates (search range [ql, qh])               numbers and quantities (v, [ql, qh))
==== ========================================== =========================================
eq   ql <= lo and hi <= qh: the search range     ql <= lo and hi < qh: the precision range
     contains the value's (lo <= qh as well,     contains the value
     implied, bounds an index scan on lo)
ne   lo < ql or hi > qh (not eq)                 lo < ql or hi >= qh (not eq)
gt   hi > qh: part of the value lies above       hi > v
lt   lo < ql                                     lo < v
ge   gt or eq; as hi >= ql and (hi > qh or       hi >= v
     lo >= ql), which is the same given lo <= hi
le   lt or eq; as lo <= qh and (lo < ql or       lo <= v
     hi <= qh)
sa   lo > qh: the value starts after the search  lo > v
eb   hi < ql: the value ends before the search   hi < v
ap   lo <= qh + d and hi >= ql - d: overlaps     lo <= v + d and hi >= v - d: overlaps
     the search range widened by d               v ± d
==== ========================================== =========================================

Numbers: the spec's number table says the ordering prefixes compare with the value *exactly*
(``lt100``: "less than exactly 100"), so gt/lt/ge/le/sa/eb use v and ignore the precision;
eq/ne use it (``ne100``: "actually, in the range 99.5 to 100.5"). ``sa``/``eb`` differ from
``gt``/``lt`` only for ranges: ``sa5`` wants all of the value above 5, ``gt5`` any of it.

``ap`` margins (the spec recommends 10% and leaves the rest to the server):

- numbers and quantities: d = 10% of |v|; for v = 0, where 10% is nothing, half the precision
  range (``ap0`` is [-0.5, 0.5]);
- dates: d = 10% of the gap between now and the search range (nothing when now lies inside
  it), but at least one day, so that ``ap`` of a date near today still reaches the next day.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from fhirflow.query.ast import DateQuery, NumberQuery, QuantityQuery

Side = Literal["low", "high"]
Op = Literal["gt", "ge", "lt", "le"]
Bound = int | Decimal

DAY_MS = 86_400_000
AP_FRACTION = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class Compare:
    """One end of the resource's value range against a bound: ``low > 5``."""

    side: Side
    op: Op
    bound: Bound


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Condition, ...]


Condition = Compare | AllOf | AnyOf
"""No negation: every prefix is written positively, so a backend's NULL or missing-field
rules never turn a "not" into a match."""


def _all(*parts: Condition) -> Condition:
    return parts[0] if len(parts) == 1 else AllOf(parts)


def _any(*parts: Condition) -> Condition:
    return parts[0] if len(parts) == 1 else AnyOf(parts)


def lo(op: Op, bound: Bound) -> Compare:
    return Compare("low", op, bound)


def hi(op: Op, bound: Bound) -> Compare:
    return Compare("high", op, bound)


def date_ap_margin(value: DateQuery, now_ms: int) -> int:
    """``ap`` on dates: 10% of the gap between now and the search range, at least a day."""
    gap = value.low - now_ms if now_ms < value.low else max(0, now_ms - value.high)
    return max(gap // 10, DAY_MS)


def date_condition(value: DateQuery, now_ms: int) -> Condition:
    """The resource's date range [low, high] (inclusive ms) against ``value`` (module table)."""
    ql, qh = value.low, value.high
    match value.prefix:
        case "eq":  # lo <= qh follows from hi <= qh; it bounds an index scan on lo
            return _all(lo("ge", ql), lo("le", qh), hi("le", qh))
        case "ne":
            return _any(lo("lt", ql), hi("gt", qh))
        case "gt":
            return hi("gt", qh)
        case "lt":
            return lo("lt", ql)
        case "ge":
            return _all(hi("ge", ql), _any(hi("gt", qh), lo("ge", ql)))
        case "le":
            return _all(lo("le", qh), _any(lo("lt", ql), hi("le", qh)))
        case "sa":
            return lo("gt", qh)
        case "eb":
            return hi("lt", ql)
        case "ap":
            margin = date_ap_margin(value, now_ms)
            return _all(lo("le", qh + margin), hi("ge", ql - margin))
    raise AssertionError(value.prefix)  # pragma: no cover - the parser admits only these


def number_ap_margin(value: NumberQuery | QuantityQuery) -> Decimal:
    """``ap`` on numbers: 10% of |v|, or half the precision range when v is 0."""
    if value.value == 0:
        return (value.high - value.low) / 2
    return abs(value.value) * AP_FRACTION


def number_condition(value: NumberQuery | QuantityQuery) -> Condition:
    """The resource's number range [low, high] (a point: low = high) against ``value`` (module table)."""
    v, ql, qh = value.value, value.low, value.high
    match value.prefix:
        case "eq":
            return _all(lo("ge", ql), hi("lt", qh))
        case "ne":
            return _any(lo("lt", ql), hi("ge", qh))
        case "gt":
            return hi("gt", v)
        case "lt":
            return lo("lt", v)
        case "ge":
            return hi("ge", v)
        case "le":
            return lo("le", v)
        case "sa":
            return lo("gt", v)
        case "eb":
            return hi("lt", v)
        case "ap":
            margin = number_ap_margin(value)
            return _all(lo("le", v + margin), hi("ge", v - margin))
    raise AssertionError(value.prefix)  # pragma: no cover


def holds(condition: Condition, low: Bound, high: Bound) -> bool:
    """``condition`` evaluated on one value range: the reference the backends' renderings are
    tested against (tests/unit/test_prefixes.py)."""
    if isinstance(condition, AllOf):
        return all(holds(part, low, high) for part in condition.parts)
    if isinstance(condition, AnyOf):
        return any(holds(part, low, high) for part in condition.parts)
    side = low if condition.side == "low" else high
    match condition.op:
        case "gt":
            return side > condition.bound
        case "ge":
            return side >= condition.bound
        case "lt":
            return side < condition.bound
        case "le":
            return side <= condition.bound
    raise AssertionError(condition.op)  # pragma: no cover
