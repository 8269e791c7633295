"""JSON Pointer (RFC 6901): parsing, and the document edits JSON Patch (RFC 6902) builds on.

Kept apart from :mod:`fhirflow.patch.jsonpatch` because the pointer grammar is its own
standard. Errors are two plain exceptions so the patch applier can name the operation
that failed and pick the HTTP status: a pointer that breaks the grammar makes the patch
document malformed (400); a well-formed pointer that names nothing in *this* document
makes the patch inapplicable (422).
"""

from __future__ import annotations

import re
from typing import Any

# RFC 6901 §4: array-index = %x30 / ( %x31-39 *(%x30-39) ); ASCII digits only, no leading zeros.
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
# RFC 6901 §3: '~' is only allowed as the start of the escapes '~0' and '~1'.
_BAD_ESCAPE = re.compile(r"~(?![01])")
# RFC 6902 §4.1: "-" names the (nonexistent) element after the last one of an array.
END_OF_ARRAY = "-"

Pointer = tuple[str, ...]


class PointerSyntaxError(ValueError):
    """The text is not a JSON Pointer (RFC 6901 §3)."""


class PointerResolutionError(LookupError):
    """The pointer is well formed but does not name a usable location in this document."""


def parse_pointer(text: str) -> Pointer:
    """Split a JSON Pointer into its unescaped reference tokens (RFC 6901 §3 and §4)."""
    if text == "":
        return ()
    if not text.startswith("/"):
        raise PointerSyntaxError("a JSON Pointer must be empty or start with '/'")
    tokens = text[1:].split("/")
    if any(_BAD_ESCAPE.search(token) for token in tokens):
        raise PointerSyntaxError("'~' in a JSON Pointer must be followed by '0' or '1'")
    # §4: decode '~1' before '~0' so that '~01' becomes '~1' and not '/'.
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in tokens)


def format_pointer(tokens: Pointer) -> str:
    """The inverse of :func:`parse_pointer`, for diagnostics."""
    return "".join("/" + token.replace("~", "~0").replace("/", "~1") for token in tokens)


def is_proper_prefix(prefix: Pointer, pointer: Pointer) -> bool:
    return len(prefix) < len(pointer) and pointer[: len(prefix)] == prefix


def resolve(document: Any, tokens: Pointer) -> Any:
    """The value the pointer names (RFC 6901 §4); raises if any step does not exist."""
    node = document
    for depth, token in enumerate(tokens):
        where = format_pointer(tokens[: depth + 1])
        if isinstance(node, dict):
            if token not in node:
                raise PointerResolutionError(f"'{where}' does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_existing_index(node, token, where)]
        else:
            raise PointerResolutionError(f"'{where}' does not exist: its parent is not an object or array")
    return node


def add(document: Any, tokens: Pointer, value: Any) -> Any:
    """RFC 6902 §4.1 add; returns the (possibly new) document root."""
    if not tokens:
        return value
    parent, last, where = _parent(document, tokens)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == END_OF_ARRAY:
            parent.append(value)
        else:
            position = _index(last, where)
            if position > len(parent):
                raise PointerResolutionError(f"'{where}': index {position} is past the end of the array")
            parent.insert(position, value)
    else:
        raise PointerResolutionError(f"'{where}': the parent is not an object or array")
    return document


def remove(document: Any, tokens: Pointer) -> Any:
    """RFC 6902 §4.2 remove; returns the removed value."""
    if not tokens:
        raise PointerResolutionError("the whole document cannot be removed")
    parent, last, where = _parent(document, tokens)
    if isinstance(parent, dict):
        if last not in parent:
            raise PointerResolutionError(f"'{where}' does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_existing_index(parent, last, where))
    raise PointerResolutionError(f"'{where}' does not exist: its parent is not an object or array")


def replace(document: Any, tokens: Pointer, value: Any) -> Any:
    """RFC 6902 §4.3 replace (the target must exist); returns the (possibly new) root."""
    if not tokens:
        return value
    parent, last, where = _parent(document, tokens)
    if isinstance(parent, dict):
        if last not in parent:
            raise PointerResolutionError(f"'{where}' does not exist")
        parent[last] = value
    elif isinstance(parent, list):
        parent[_existing_index(parent, last, where)] = value
    else:
        raise PointerResolutionError(f"'{where}' does not exist: its parent is not an object or array")
    return document


def _parent(document: Any, tokens: Pointer) -> tuple[Any, str, str]:
    return resolve(document, tokens[:-1]), tokens[-1], format_pointer(tokens)


def _index(token: str, where: str) -> int:
    if not _ARRAY_INDEX.fullmatch(token):
        raise PointerResolutionError(f"'{where}': {token!r} is not an array index")
    return int(token)


def _existing_index(array: list[Any], token: str, where: str) -> int:
    if token == END_OF_ARRAY:
        raise PointerResolutionError(f"'{where}': '-' names no existing array element")
    position = _index(token, where)
    if position >= len(array):
        raise PointerResolutionError(f"'{where}': index {position} is out of range (array of {len(array)})")
    return position
