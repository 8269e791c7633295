"""FHIR instants and dates, and HTTP dates, to and from epoch milliseconds (UTC)."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from email.utils import formatdate, parsedate_to_datetime

from fhirflow.errors import BadRequest

# FHIR dateTime (datatypes.html#dateTime): YYYY, YYYY-MM, YYYY-MM-DD, or with time and zone.
_DATETIME = re.compile(
    r"(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})(T(?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d{1,9})?)?"
    r"(?P<z>Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,  # FHIR's digits are [0-9]; \d would also take other scripts' digits
)


def instant(ms: int) -> str:
    """A FHIR instant with millisecond precision in UTC, e.g. ``2026-11-22T06:45:00.123Z``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def http_date(ms: int) -> str:
    """RFC 7231 IMF-fixdate for Last-Modified."""
    return formatdate(ms / 1000, usegmt=True)


def parse_http_date(value: str) -> int | None:
    """Epoch seconds of an HTTP date, or None when it is not one (a bad If-Modified-Since is ignored, RFC 7232)."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def datetime_range(value: str, *, name: str) -> tuple[int, int]:
    """The interval [low, high) in ms that a FHIR date/dateTime/instant covers, by its precision.

    A value with a time but no zone is read as UTC (the server's zone).
    """
    match = _DATETIME.fullmatch(value.strip())
    if not match:
        raise BadRequest(f"{name}: '{value}' is not a valid FHIR date, dateTime or instant", expression=name)
    try:
        return _range_of(match)
    except ValueError as exc:
        raise BadRequest(f"{name}: '{value}' is not a valid date ({exc})", expression=name) from exc


def _range_of(match: re.Match[str]) -> tuple[int, int]:
    year = int(match["y"])
    if match["m"] is None:
        start = datetime(year, 1, 1, tzinfo=UTC)
        return _ms(start), _ms(datetime(year + 1, 1, 1, tzinfo=UTC))
    month = int(match["m"])
    if match["d"] is None:
        start = datetime(year, month, 1, tzinfo=UTC)
        days = calendar.monthrange(year, month)[1]
        return _ms(start), _ms(start + timedelta(days=days))
    day = int(match["d"])
    if match["H"] is None:
        start = datetime(year, month, day, tzinfo=UTC)
        return _ms(start), _ms(start + timedelta(days=1))
    zone = match["z"]
    offset = timedelta(0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    start = datetime(year, month, day, int(match["H"]), int(match["M"]), int(match["S"] or 0), tzinfo=UTC) - offset
    if match["S"] is None:
        return _ms(start), _ms(start + timedelta(minutes=1))
    if match["f"] is None:
        return _ms(start), _ms(start + timedelta(seconds=1))
    fraction = match["f"][1:]
    unit = 10 ** (3 - min(len(fraction), 3))
    begin = _ms(start) + int(fraction[:3].ljust(3, "0"))
    return begin, begin + max(unit, 1)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
