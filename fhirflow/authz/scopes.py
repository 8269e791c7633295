"""SMART clinical scopes, v1 and v2 (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

Grammar: ``( patient | user | system ) / ( ResourceType | * ) . permissions [ ? param=value & ... ]``.

- v2 permissions are a non-empty, in-order subset of ``cruds`` (``.rs``, ``.cu``, ``.cruds``);
- v1 ``.read`` ⇒ ``.rs``, ``.write`` ⇒ ``.cud``, ``.*`` ⇒ ``.cruds`` (the spec's ``permission-v1`` mapping);
- granular (v2) scopes carry search parameters that every resource they admit must match.

Scopes that are not clinical (``openid``, ``fhirUser``, ``launch/patient``, ``offline_access``),
malformed or out of order (``.dus``), or name a type this server does not know, grant nothing:
the spec allows a server to ignore them, and ignoring is the fail-closed choice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

Context = Literal["patient", "user", "system"]
CONTEXTS: tuple[Context, ...] = ("patient", "user", "system")
PERMISSIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}

INTERACTION_PERMISSIONS: dict[str, str] = {
    # scopes-and-launch-context.html#scopes-for-requesting-clinical-data: which letter each
    # FHIR interaction (valueset-type-restful-interaction) needs.
    "create": "c",
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search-type": "s",
    "search-system": "s",
    "history-type": "s",
    "history-system": "s",
    # Bulk data export (its kick-off, status, cancel and files): reading resources in bulk, the
    # "rs" of backend services' ``system/*.rs``; each exported type also needs "r" on that type.
    "export": "r",
}


@dataclass(frozen=True, slots=True)
class Scope:
    """One clinical scope as granted. ``resource_type`` is ``*`` for every type."""

    context: Context
    resource_type: str
    permissions: str
    """The granted letters, in ``cruds`` order."""
    filters: tuple[tuple[str, str], ...] = ()
    """Granular constraint: search parameters (name, value) that an admitted resource matches, all of them."""
    text: str = ""

    def covers(self, permission: str, resource_type: str | None) -> bool:
        """Grants ``permission`` on ``resource_type`` (None: on some type, for system-level interactions)."""
        if permission not in self.permissions:
            return False
        return resource_type is None or self.resource_type in ("*", resource_type)

    @property
    def is_granular(self) -> bool:
        return bool(self.filters)


def parse_scope(text: str) -> Scope | None:
    """One scope string, or None when it is not a clinical scope this server honours."""
    prefix, slash, rest = text.partition("/")
    context = next((c for c in CONTEXTS if c == prefix), None)
    if not slash or context is None:
        return None
    resource, dot, tail = rest.partition(".")
    if not dot or not resource:
        return None
    permission_text, question, query = tail.partition("?")
    permissions = _permissions(permission_text)
    if permissions is None:
        return None
    if resource != "*" and not _known_type(resource):
        return None
    filters: tuple[tuple[str, str], ...] = ()
    if question:
        if permission_text in _V1:
            return None  # granular constraints exist only in the v2 syntax
        pairs = parse_qsl(query, keep_blank_values=True)
        if not pairs or any(not name or not value for name, value in pairs):
            return None
        filters = tuple(pairs)
    return Scope(context, resource, permissions, filters, text)


def _permissions(text: str) -> str | None:
    if text in _V1:
        return _V1[text]
    if not text:
        return None
    position = 0
    for letter in text:
        found = PERMISSIONS.find(letter, position)
        if found < 0:
            return None  # unknown or out of order: ".dus" is not ".dsu"
        position = found + 1
    return text


def _known_type(name: str) -> bool:
    from fhirflow.validation import is_resource_type

    return is_resource_type(name)


class ScopeSet:
    """The clinical scopes of one token, parsed once; lookups by (permission, type) are memoised."""

    __slots__ = ("_grants", "scopes")

    def __init__(self, scopes: Iterable[Scope]) -> None:
        self.scopes: tuple[Scope, ...] = tuple(scopes)
        self._grants: dict[tuple[str, str | None], tuple[Scope, ...]] = {}

    def grants(self, permission: str, resource_type: str | None) -> tuple[Scope, ...]:
        """The scopes granting ``permission`` on ``resource_type`` (None: on any type)."""
        key = (permission, resource_type)
        found = self._grants.get(key)
        if found is None:
            found = tuple(s for s in self.scopes if s.covers(permission, resource_type))
            self._grants[key] = found
        return found

    def __iter__(self) -> Iterator[Scope]:
        return iter(self.scopes)

    def __len__(self) -> int:
        return len(self.scopes)

    def __repr__(self) -> str:
        return f"ScopeSet({' '.join(s.text for s in self.scopes)!r})"


def scope_strings(value: object) -> list[str]:
    """The scope claim as a list: a space-separated string (``scope``, RFC 8693/9068) or an array (``scp``).

    RFC 6749 §3.3: scope tokens are separated by the space character (U+0020) alone; any other
    character, other whitespace included (a tab, NBSP, U+2028), is part of a token, which then is
    no scope this server knows and grants nothing. ``str.split()`` would cut at all of them.
    """
    if isinstance(value, str):
        return [token for token in value.split(" ") if token]
    if isinstance(value, Sequence):
        out: list[str] = []
        for item in value:
            if isinstance(item, str):
                out.extend(token for token in item.split(" ") if token)
        return out
    return []


def parse_scopes(value: object) -> ScopeSet:
    return ScopeSet(scope for scope in map(parse_scope, scope_strings(value)) if scope is not None)
