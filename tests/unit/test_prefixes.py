"""The prefix semantics (``fhirflow/query/prefixes.py``): the table on chosen values, and each
backend's rendering checked against it by *running* it, value range by value range: the SQL
in SQLite, the query DSL on the fake OpenSearch. A backend cannot drift from the one definition
without one of these failing."""

from __future__ import annotations

import itertools
import sqlite3
from decimal import Decimal

import pytest

from fhirflow.adapters.opensearch.clauses import date_clause as os_date
from fhirflow.adapters.opensearch.clauses import number_clause as os_number
from fhirflow.adapters.sqlite.search.conditions import date_condition as sql_date
from fhirflow.adapters.sqlite.search.conditions import number_query_condition as sql_number
from fhirflow.query.ast import PREFIXES, DateQuery, NumberQuery
from fhirflow.query.prefixes import DAY_MS, date_condition, holds, number_condition
from fhirflow.query.values import parse_date, parse_number
from tests.support.opensearch_fake import Scope, matches

NOW = 1_718_000_000_000  # 2024-06-10T06:13:20Z
PREFIX_ORDER = sorted(PREFIXES)


def number(text: str) -> NumberQuery:
    return parse_number("n", text)


def date(text: str) -> DateQuery:
    return parse_date("d", text)


def matches_number(query: str, low: str, high: str | None = None) -> bool:
    return holds(number_condition(number(query)), Decimal(low), Decimal(high or low))


def matches_date(query: str, low: str, high: str | None = None) -> bool:
    lo, hi = date(low), date(high or low)
    return holds(date_condition(date(query), NOW), lo.low, hi.high)


@pytest.mark.parametrize(
    ("query", "value", "expected"),
    [
        ("100", "99.5", True),  # eq: within the precision range [99.5, 100.5)
        ("100", "100.5", False),
        ("ne100", "100.5", True),
        ("gt100", "100.1", True),  # gt/lt/ge/le: the exact value
        ("lt100", "99.9", True),
        ("ge100", "100", True),
        ("le100", "100", True),
        ("sa100", "100.1", True),  # sa/eb: the exact value too, not the precision range
        ("sa100", "100", False),
        ("eb100", "99.9", True),
        ("eb100", "100", False),
        ("ap100", "110", True),  # ap: ±10%
        ("ap100", "110.1", False),
        ("ap100", "90", True),
        ("ap100", "89.9", False),
        ("ap0", "0.5", True),  # ap0: half the precision range, 10% of 0 being nothing
        ("ap0", "0.6", False),
        ("ap-50", "-45", True),
    ],
)
def test_number_prefixes_on_a_point(query: str, value: str, expected: bool) -> None:
    assert matches_number(query, value) is expected


def test_sa_and_eb_want_all_of_a_range_and_gt_lt_any_of_it() -> None:
    assert matches_number("gt5", "4", "6")
    assert not matches_number("sa5", "4", "6")
    assert matches_number("sa5", "5.1", "6")
    assert matches_number("lt5", "4", "6")
    assert not matches_number("eb5", "4", "6")


@pytest.mark.parametrize(
    ("query", "low", "high", "expected"),
    [
        ("2020", "2020-03-04", None, True),  # eq: the search range contains the value's
        ("2020-03-04", "2020", None, False),
        ("ne2020-03-04", "2020", None, True),
        ("gt2020-03-04", "2020-03", None, True),  # gt: part of the value lies after the day
        ("sa2020-03-04", "2020-03", None, False),  # sa: all of it must
        ("sa2020-03-04", "2020-03-05", None, True),
        ("eb2020-03-04", "2020-03-03", None, True),
        ("eb2020-03-04", "2020-03", None, False),
        ("ge2020-03-04", "2020-03-04", None, True),
        ("le2020-03-04", "2020-03-04", None, True),
        ("lt2020-03-04", "2020-03-04", None, False),
        # ap: 10% of the gap between now (2024-06-10) and the search range; 2014 ends ~9.44 years
        # before now, so the margin is ~345 days on each side of 2014
        ("ap2014", "2013-01-25", None, True),
        ("ap2014", "2013-01-15", None, False),
        ("ap2014", "2015-12-05", None, True),
        ("ap2014", "2015-12-20", None, False),
        # ap of a day holding now: at least one day of margin
        ("ap2024-06-10", "2024-06-09", None, True),
        ("ap2024-06-10", "2024-06-08", None, False),
        ("ap2024-06-10", "2024-06-11", None, True),
    ],
)
def test_date_prefixes(query: str, low: str, high: str | None, expected: bool) -> None:
    assert matches_date(query, low, high) is expected


def test_the_date_ap_margin_is_at_least_a_day() -> None:
    condition = date_condition(date("ap2024-06-10"), NOW)
    assert holds(condition, date("2024-06-09").low, date("2024-06-09").low)
    assert not holds(condition, date("2024-06-09").low - DAY_MS, date("2024-06-09").low - 1)


# -- the renderings, run ---------------------------------------------------------------------

NUMBER_QUERIES = [f"{p}{v}" for p, v in itertools.product(PREFIX_ORDER, ("0", "5", "5.0", "-2", "100", "0.0004"))]
NUMBER_RANGES = [
    (Decimal(lo), Decimal(hi))
    for lo, hi in [
        *((v, v) for v in ("0", "0.4", "0.5", "4.5", "4.55", "5", "5.05", "5.5", "5.6", "-2", "99.5", "100", "110")),
        ("4", "6"),
        ("5", "6"),
        ("-3", "-1"),
        ("0.00035", "0.00045"),
        ("-1e300", "5"),
        ("5", "1e300"),
    ]
]
DATE_QUERIES = [f"{p}{v}" for p, v in itertools.product(PREFIX_ORDER, ("2020", "2020-03-04", "2024-06-10", "2030-01"))]
DATE_RANGES = [
    (date(lo).low, date(hi).high)
    for lo, hi in [
        ("2019-12-31", "2019-12-31"),
        ("2020-01-01", "2020-01-01"),
        ("2020-03-04", "2020-03-04"),
        ("2020", "2020"),
        ("2019-06", "2020-06"),
        ("2020-03-03", "2020-03-05"),
        ("2024-06-09", "2024-06-09"),
        ("2024-06-11", "2024-06-11"),
        ("2029-11", "2029-11"),
        ("2030-01-15", "2031"),
        ("1900", "9999"),
    ]
]


def sqlite_holds(condition_sql: str, params: tuple[object, ...], low: object, high: object) -> bool:
    conn = sqlite3.connect(":memory:")
    row = conn.execute(
        f"SELECT 1 FROM (SELECT ? AS low, ? AS high) AS a WHERE {condition_sql}", (low, high, *params)
    ).fetchone()
    conn.close()
    return row is not None


@pytest.mark.parametrize("query", NUMBER_QUERIES)
def test_sqlite_renders_the_number_prefixes(query: str) -> None:
    value = number(query)
    rendered = sql_number("a", value)
    for low, high in NUMBER_RANGES:
        expected = holds(number_condition(value), low, high)
        assert sqlite_holds(rendered.text, rendered.params, float(low), float(high)) is expected, (low, high)


@pytest.mark.parametrize("query", DATE_QUERIES)
def test_sqlite_renders_the_date_prefixes(query: str) -> None:
    value = date(query)
    rendered = sql_date("a.low", "a.high", value, NOW)
    for low, high in DATE_RANGES:
        expected = holds(date_condition(value, NOW), low, high)
        assert sqlite_holds(rendered.text, rendered.params, low, high) is expected, (low, high)


def opensearch_holds(clause: dict[str, object], path: str, fields: dict[str, object]) -> bool:
    document = {path: [{"p": "x", **fields}]}
    return matches({"nested": {"path": path, "query": clause}}, Scope(document))


@pytest.mark.parametrize("query", NUMBER_QUERIES)
def test_opensearch_renders_the_number_prefixes(query: str) -> None:
    value = number(query)
    clause = os_number(value, "numbers")
    for low, high in NUMBER_RANGES:
        expected = holds(number_condition(value), low, high)
        assert opensearch_holds(clause, "numbers", {"low": float(low), "high": float(high)}) is expected, (low, high)


@pytest.mark.parametrize("query", DATE_QUERIES)
def test_opensearch_renders_the_date_prefixes(query: str) -> None:
    value = date(query)
    clause = os_date(value, "dates", NOW)
    for low, high in DATE_RANGES:
        expected = holds(date_condition(value, NOW), low, high)
        assert opensearch_holds(clause, "dates", {"start": low, "end": high}) is expected, (low, high)
