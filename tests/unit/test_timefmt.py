"""``fhirflow.timefmt``: the interval a FHIR date/dateTime/instant covers by its precision
(search.html#date, used by ``_since`` and ``_at``), instants and HTTP dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhirflow.errors import BadRequest
from fhirflow.timefmt import datetime_range, http_date, instant, parse_http_date


def ms(*parts: int, offset: timedelta = timedelta(0)) -> int:
    return int((datetime(*parts, tzinfo=UTC) - offset).timestamp() * 1000)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2024", ms(2024, 1, 1), ms(2025, 1, 1)),
        ("2024-02", ms(2024, 2, 1), ms(2024, 3, 1)),  # leap year: 29 days
        ("2023-02", ms(2023, 2, 1), ms(2023, 3, 1)),
        ("2024-12", ms(2024, 12, 1), ms(2025, 1, 1)),
        ("2024-02-29", ms(2024, 2, 29), ms(2024, 3, 1)),
        ("2024-12-31", ms(2024, 12, 31), ms(2025, 1, 1)),
        ("2024-03-04T05:06Z", ms(2024, 3, 4, 5, 6), ms(2024, 3, 4, 5, 7)),
        ("2024-03-04T05:06:07Z", ms(2024, 3, 4, 5, 6, 7), ms(2024, 3, 4, 5, 6, 8)),
        ("2024-03-04T05:06:07.1Z", ms(2024, 3, 4, 5, 6, 7) + 100, ms(2024, 3, 4, 5, 6, 7) + 200),
        ("2024-03-04T05:06:07.12Z", ms(2024, 3, 4, 5, 6, 7) + 120, ms(2024, 3, 4, 5, 6, 7) + 130),
        ("2024-03-04T05:06:07.123Z", ms(2024, 3, 4, 5, 6, 7) + 123, ms(2024, 3, 4, 5, 6, 7) + 124),
        # Finer than a millisecond: the millisecond that holds it.
        ("2024-03-04T05:06:07.123456Z", ms(2024, 3, 4, 5, 6, 7) + 123, ms(2024, 3, 4, 5, 6, 7) + 124),
        # A zone shifts the interval to UTC; no zone is read as UTC.
        ("2024-03-04T05:06:07+02:00", ms(2024, 3, 4, 3, 6, 7), ms(2024, 3, 4, 3, 6, 8)),
        ("2024-03-04T05:06:07-05:30", ms(2024, 3, 4, 10, 36, 7), ms(2024, 3, 4, 10, 36, 8)),
        ("2024-03-04T05:06:07", ms(2024, 3, 4, 5, 6, 7), ms(2024, 3, 4, 5, 6, 8)),
        ("2024-12-31T23:59:59.999+00:00", ms(2024, 12, 31, 23, 59, 59) + 999, ms(2025, 1, 1)),
        (" 2024-01-01 ", ms(2024, 1, 1), ms(2024, 1, 2)),
    ],
)
def test_datetime_range_by_precision(value: str, low: int, high: int) -> None:
    assert datetime_range(value, name="_at") == (low, high)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "24",
        "2024-1",
        "2024-13",
        "2024-00",
        "2023-02-29",
        "2024-04-31",
        "2024-01-01T24:00:00Z",
        "2024-01-01T12:60:00Z",
        "2024-01-01T12",
        "2024-01-01 12:00:00",
        "2024-01-01T12:00:00+2:00",
        "2024-01-01T12:00:00.Z",
        "2024-01-01Z",
    ],
)
def test_invalid_values_are_bad_requests_naming_the_parameter(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        datetime_range(value, name="_since")
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == ("_since",)


@pytest.mark.parametrize(
    "value",
    [
        "\uff12\uff10\uff12\uff14",  # full-width 2024
        "2024-0\u0661-01",  # Arabic-Indic one
        "\u0662\u0660\u0662\u0664-01-01T00:00:00Z",  # Arabic-Indic 2024
    ],
)
def test_non_ascii_digits_are_not_a_date(value: str) -> None:
    with pytest.raises(BadRequest):
        datetime_range(value, name="_since")


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_an_instant_is_one_millisecond_wide_and_round_trips(moment: datetime) -> None:
    stamp = int(moment.timestamp() * 1000)

    low, high = datetime_range(instant(stamp), name="_at")

    assert (low, high) == (stamp, stamp + 1)


@given(st.dates(min_value=datetime(1900, 1, 1).date(), max_value=datetime(2200, 1, 1).date()))
def test_ranges_nest_year_month_day(day: object) -> None:
    text = str(day)
    year = datetime_range(text[:4], name="d")
    month = datetime_range(text[:7], name="d")
    whole_day = datetime_range(text, name="d")

    assert year[0] <= month[0] <= whole_day[0] < whole_day[1] <= month[1] <= year[1]
    assert whole_day[1] - whole_day[0] == 86_400_000


def test_instant_format() -> None:
    assert instant(ms(2026, 11, 22, 6, 45) + 7) == "2026-11-22T06:45:00.007Z"
    assert instant(0) == "1970-01-01T00:00:00.000Z"


def test_http_date_round_trips_to_the_second() -> None:
    stamp = ms(2026, 11, 22, 6, 45, 30) + 999

    text = http_date(stamp)

    assert text == "Sun, 22 Nov 2026 06:45:30 GMT"
    assert parse_http_date(text) == stamp // 1000


@pytest.mark.parametrize("value", ["", "yesterday", "Sun, 99 Nov 2026 06:45:30 GMT", "2026-11-22T06:45:30Z"])
def test_a_bad_http_date_is_ignored(value: str) -> None:
    # RFC 7232 §3.3: an invalid If-Modified-Since is ignored, not an error.
    assert parse_http_date(value) is None
