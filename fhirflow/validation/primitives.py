"""Checks for the JSON form of FHIR R4 primitive values (datatypes.html#primitive, json.html#primitive).

One checker per primitive type, built once from the regexes the StructureDefinitions carry. A checker
takes the JSON value and returns ``None`` when it is valid, else ``(issue code, diagnostics)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from fhirflow.validation.xhtml import NarrativeError, check_div

Problem = tuple[str, str]
Checker = Callable[[object], Problem | None]

# datatypes.html#integer: "a signed integer in the range -2,147,483,648..2,147,483,647";
# positiveInt and unsignedInt share the upper bound.
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT_RANGES: dict[str, tuple[int, int]] = {
    "integer": (INT32_MIN, INT32_MAX),
    "positiveInt": (1, INT32_MAX),
    "unsignedInt": (0, INT32_MAX),
}

# datatypes.html#string: "Strings SHALL NOT exceed 1MB in size".
MAX_STRING_BYTES = 1024 * 1024

# The spec's base64Binary regex, (\s*([0-9a-zA-Z\+/=]){4}\s*)+, is slow on the megabytes of an
# attachment and backtracks exponentially on failing input in a backtracking engine (two adjacent \s*
# share every whitespace run). It says: base64 characters in groups of four, whitespace only between
# groups, i.e. every whitespace-separated chunk has a length divisible by four. That is checked directly.
_BASE64_CHARS = re.compile(r"[0-9a-zA-Z+/=\s]+", re.ASCII)

# datatypes.html#string applies the 1 MB limit to string (and markdown, a specialisation of it).
_SIZE_LIMITED = frozenset({"string", "markdown"})

_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_TRUNCATE = 64


def shown(value: object) -> str:
    """A value as quoted in diagnostics, cut short so a huge value cannot bloat the outcome."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= _TRUNCATE else text[:_TRUNCATE] + "...")


def json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _possible_date(text: str) -> bool:
    """Whether the day of a lexically valid date (YYYY-MM-DD prefix) exists in the calendar."""
    if len(text) < 10:
        return True
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    if day <= 28:
        return True
    if month == 2 and day == 29:
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= _DAYS_IN_MONTH[month]


def _matches_base64(value: str) -> bool:
    if _BASE64_CHARS.fullmatch(value) is None:
        return False
    # The characters are now ASCII base64 or ASCII whitespace, so str.split() splits exactly on \s.
    chunks = value.split()
    return bool(chunks) and all(len(chunk) % 4 == 0 for chunk in chunks)


def _matcher(name: str, regex: str | None) -> Callable[[str], bool]:
    if name == "base64Binary":
        return _matches_base64
    # The spec's regexes are written for Java, where \s and \S are ASCII-only: without re.ASCII, Python
    # would refuse a no-break space in a string. Every primitive but xhtml (checked apart) has a regex.
    fullmatch = re.compile(regex or r".+", re.ASCII | re.DOTALL).fullmatch

    def matches(value: str) -> bool:
        return fullmatch(value) is not None

    return matches


def _string_checker(name: str, regex: str | None) -> Checker:
    matches = _matcher(name, regex)
    dated = name in {"date", "dateTime", "instant"}
    limited = name in _SIZE_LIMITED
    wrong_type = ("structure", f"Expected a string for a '{name}' value")

    def check(value: object) -> Problem | None:
        if type(value) is not str:
            return wrong_type
        if not value:
            return ("value", f"A '{name}' value must not be an empty string")
        if not matches(value) or (dated and not _possible_date(value)):
            return ("value", f"{shown(value)} is not a valid {name}")
        if limited and len(value) > MAX_STRING_BYTES // 4 and len(value.encode()) > MAX_STRING_BYTES:
            return ("value", f"A '{name}' value must not exceed 1 MB")
        return None

    return check


def _integer_checker(name: str) -> Checker:
    low, high = INT_RANGES[name]
    wrong_type = ("structure", f"Expected a JSON integer number for a '{name}' value")

    def check(value: object) -> Problem | None:
        if type(value) is not int:
            return wrong_type
        if not low <= value <= high:
            return ("value", f"{value} is out of range for {name} ({low}..{high})")
        return None

    return check


def _check_decimal(value: object) -> Problem | None:
    if type(value) is int:
        return None
    if type(value) is float:
        # NaN and infinities are not JSON numbers, but a Python caller can still pass them.
        return None if math.isfinite(value) else ("value", f"{value} is not a valid decimal")
    return ("structure", "Expected a JSON number for a 'decimal' value")


def _check_boolean(value: object) -> Problem | None:
    if type(value) is not bool:
        return ("structure", "Expected a JSON boolean (true or false) for a 'boolean' value")
    return None


def _check_xhtml(value: object) -> Problem | None:
    """Narrative.div: a <div> in the R4 XHTML subset, with no script (narrative.html, txt-1, txt-2)."""
    if type(value) is not str:
        return ("structure", "Expected a string for an 'xhtml' value")
    try:
        check_div(value)
    except NarrativeError as error:
        return ("value", str(error))
    return None


def build_checkers(primitives: dict[str, dict[str, str | None]]) -> dict[str, Checker]:
    """A checker per primitive type from the ``primitives`` table of the generated data file, chosen by
    the type's JSON representation (json.html#primitive)."""
    checkers: dict[str, Checker] = {}
    for name, info in primitives.items():
        representation = info.get("json")
        if representation == "boolean":
            checkers[name] = _check_boolean
        elif representation == "number":
            checkers[name] = _check_decimal if name == "decimal" else _integer_checker(name)
        elif name == "xhtml":
            checkers[name] = _check_xhtml
        else:
            checkers[name] = _string_checker(name, info.get("regex"))
    return checkers
