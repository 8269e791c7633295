"""JSON in and out, with orjson for speed (it parses and serialises several times faster than
the standard library, which matters on every request and in bulk import).

Known limit: JSON numbers become Python ``float``/``int``, so a decimal's trailing zeros
(``1.50``) are not preserved on the way back out.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhirflow.errors import BadRequest


def loads(data: bytes | str) -> Any:
    """Parse JSON from a request body; malformed input is a 400 naming where it broke."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0)
