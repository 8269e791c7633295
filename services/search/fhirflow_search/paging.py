"""Paging cursors: the keyset position of a page's edge, bound to its query and signed.

A cursor holds a digest of the tenant, the search path and the normalised query, and the
position of the last (``next``) or first (``previous``) match of the page it came from. The
``previous`` link is a reverse keyset: the rows strictly before the page's first match, read in
reverse order. A cursor used with another query, or altered, is a 400.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhirflow.cursor import CursorSigner
from fhirflow.errors import BadRequest

CURSOR = "_cursor"


@dataclass(frozen=True, slots=True)
class Position:
    values: tuple[Any, ...]
    forward: bool
    """True: the page after ``values``; False: the page before them."""


def digest(tenant: str, path: str, query_string: str) -> str:
    return hashlib.sha256(f"{tenant}\n{path}\n{query_string}".encode()).hexdigest()[:24]


def _encode_value(value: Any) -> Any:
    if isinstance(value, float):
        return {"f": repr(value)}  # JSON has no infinities, and repr round-trips exactly
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        raw = value.get("f")
        if not isinstance(raw, str):
            raise ValueError("bad float")
        number = float(raw)
        if math.isnan(number):
            raise ValueError("nan")
        return number
    if value is None or isinstance(value, str | int):
        return value
    raise ValueError("bad position value")


def encode(signer: CursorSigner, query_digest: str, values: Sequence[Any], *, forward: bool) -> str:
    return signer.encode({"q": query_digest, "d": "a" if forward else "b", "p": [_encode_value(v) for v in values]})


def decode(signer: CursorSigner, token: str, query_digest: str) -> Position:
    state = signer.decode(token, name=CURSOR)
    if state.get("q") != query_digest:
        raise BadRequest(f"{CURSOR} belongs to a different search", expression=CURSOR)
    raw = state.get("p")
    direction = state.get("d")
    if not isinstance(raw, list) or len(raw) < 2 or direction not in ("a", "b"):
        raise BadRequest(f"{CURSOR} is not a valid paging cursor", expression=CURSOR)
    try:
        values = tuple(_decode_value(v) for v in raw)
    except ValueError as exc:
        raise BadRequest(f"{CURSOR} is not a valid paging cursor", expression=CURSOR) from exc
    return Position(values, forward=direction == "a")
