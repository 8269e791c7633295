"""FHIR date, dateTime and instant values as inclusive millisecond ranges (search.html#date).

A value covers the whole interval its precision implies: ``2013`` is the year 2013,
``2013-01-14T10:00`` the minute, ``2013-01-14T10:00:00.5`` the tenth of a second.

Time zones: a value with a time and an offset is converted to UTC. A value without a time
zone (every ``date``, and query values written without one) is read as UTC. The spec asks
for the server's local zone when neither side has one; reading both sides as UTC gives the
same answer for that case, and keeps the index independent of where the server runs.
"""

from __future__ import annotations

import re

from fhirflow.searchparams.values import DATE_MAX, DATE_MIN

_PATTERN = re.compile(
    r"(?P<y>\d{4})"
    r"(?:-(?P<m>\d{2})"
    r"(?:-(?P<d>\d{2})"
    r"(?:T(?P<hh>\d{2}):(?P<mi>\d{2})"
    r"(?::(?P<ss>\d{2})(?:\.(?P<frac>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?"
    r")?)?)?"
)

_DAY_MS = 86_400_000


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _day_start(year: int, month: int, day: int) -> int:
    """Epoch milliseconds of a UTC midnight (days-from-civil; no datetime import needed)."""
    if not (1 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        raise ValueError(f"{year}-{month}-{day}")
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return (era * 146097 + doe - 719468) * _DAY_MS


def _tz_offset_ms(tz: str | None) -> int:
    if tz is None or tz == "Z":
        return 0
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError(tz)
    offset = (hours * 60 + minutes) * 60_000
    return -offset if tz[0] == "-" else offset


def _date_only_range(year: int, month: str | None, day: str | None) -> tuple[int, int]:
    if month is None:
        low = _day_start(year, 1, 1)
        return low, _day_start(year, 12, 31) + _DAY_MS - 1
    mon = int(month)
    if day is None:
        last = _days_in_month(year, mon)
        return _day_start(year, mon, 1), _day_start(year, mon, last) + _DAY_MS - 1
    low = _day_start(year, mon, int(day))
    return low, low + _DAY_MS - 1


def date_range(text: str) -> tuple[int, int] | None:
    """The inclusive UTC millisecond range of a FHIR date/dateTime/instant, or None if malformed."""
    match = _PATTERN.fullmatch(text)
    if match is None:
        return None
    year = int(match["y"])
    try:
        if match["hh"] is None:
            return _date_only_range(year, match["m"], match["d"])
        low, high = _time_range(match, year)
    except ValueError:  # out-of-range month, day, hour, offset
        return None
    return max(DATE_MIN, low), min(DATE_MAX, high)


def _time_range(match: re.Match[str], year: int) -> tuple[int, int]:
    hour, minute = int(match["hh"]), int(match["mi"])
    if hour > 23 or minute > 59:
        raise ValueError(match.string)
    start = _day_start(year, int(match["m"]), int(match["d"])) + (hour * 60 + minute) * 60_000
    start -= _tz_offset_ms(match["tz"])
    seconds, frac = match["ss"], match["frac"]
    if seconds is None:
        return start, start + 60_000 - 1
    sec = int(seconds)
    if sec > 59:
        raise ValueError(match.string)
    start += sec * 1000
    if frac is None:
        return start, start + 999
    scale = 10 ** len(frac)
    units = int(frac)
    low = start + (units * 1000) // scale
    # last whole millisecond that starts before the end of the stated precision
    high = start + -((-(units + 1) * 1000) // scale) - 1
    return low, max(low, high)


def format_ms(ms: int) -> str:
    """An epoch-millisecond instant as an ISO-8601 UTC string (for diagnostics and tests)."""
    from datetime import UTC, datetime, timedelta

    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )
