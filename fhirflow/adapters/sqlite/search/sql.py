"""SQL fragments with their parameters, so compiled pieces compose without string surgery."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Sql:
    text: str
    params: tuple[Any, ...] = ()

    def __add__(self, other: Sql) -> Sql:
        return Sql(self.text + other.text, self.params + other.params)

    def wrap(self, before: str, after: str = "") -> Sql:
        return Sql(before + self.text + after, self.params)


TRUE = Sql("1")
FALSE = Sql("0")


def sql(text: str, *params: Any) -> Sql:
    return Sql(text, params)


def join(separator: str, parts: Iterable[Sql]) -> Sql:
    items = list(parts)
    return Sql(separator.join(p.text for p in items), tuple(v for p in items for v in p.params))


def all_of(parts: Iterable[Sql]) -> Sql:
    """AND. Parts are not parenthesised: every OR is (:func:`any_of`, and the hand-written
    conditions), and deep nesting of parentheses overflows SQLite's parser on long chains."""
    items = [p for p in parts if p.text != "1"]
    if any(p.text == "0" for p in items):
        return FALSE
    if not items:
        return TRUE
    return items[0] if len(items) == 1 else join(" AND ", items)


def any_of(parts: Iterable[Sql]) -> Sql:
    """OR, parenthesised as a whole (AND binds tighter, so the parts need no parentheses)."""
    items = [p for p in parts if p.text != "0"]
    if any(p.text == "1" for p in items):
        return TRUE
    if not items:
        return FALSE
    return items[0] if len(items) == 1 else _or_tree(items)


FLAT_OR = 32
"""Most parts one OR joins in a row. SQLite parses ``a OR b OR c ...`` into a tree as deep as
the list is long and refuses one over 1,000 levels (SQLITE_MAX_EXPR_DEPTH, "Expression tree is
too large"): a longer list is split in halves, each parenthesised, so the depth grows with the
logarithm of the number of values a client sent (``name=a,b,...``), not with the number."""


def _or_tree(items: list[Sql]) -> Sql:
    if len(items) <= FLAT_OR:
        return join(" OR ", items).wrap("(", ")")
    half = len(items) // 2
    return join(" OR ", (_or_tree(items[:half]), _or_tree(items[half:]))).wrap("(", ")")


def in_list(column: str, values: Sequence[Any]) -> Sql:
    """``column = ?`` for one value, ``column IN (?, ...)`` for several, false for none."""
    if not values:
        return FALSE
    if len(values) == 1:
        return Sql(f"{column} = ?", (values[0],))
    return Sql(f"{column} IN ({', '.join('?' * len(values))})", tuple(values))


def like_escape(text: str) -> str:
    """``text`` with LIKE's wildcards escaped (used with ``ESCAPE '\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


PREFIX_END = "\U0010ffff"
"""Appended to a prefix, the least string greater than every string that starts with it."""
