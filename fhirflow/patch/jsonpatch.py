"""JSON Patch (RFC 6902) for FHIR PATCH with ``application/json-patch+json``.

FHIR R4 http.html#patch: the server applies the patch to the current resource and the
result is then processed as an update. The whole document is checked before anything is
applied, so a malformed document is always a 400 whatever the resource holds; an
operation that cannot be applied to this resource (a missing target, an index out of
range, a failed ``test``) is a 422 (http.html#patch: "Unprocessable Entity").
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fhirflow.errors import BadRequest, UnprocessableEntity
from fhirflow.patch import jsonpointer
from fhirflow.patch.jsonpointer import Pointer, PointerResolutionError, PointerSyntaxError

_OPS: Final = ("add", "remove", "replace", "move", "copy", "test")
_NEEDS_VALUE: Final = frozenset({"add", "replace", "test"})
_NEEDS_FROM: Final = frozenset({"move", "copy"})
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class _Operation:
    where: str  # "operations[2]", the operation's place in the document, for diagnostics
    op: str
    path: Pointer
    source: Pointer  # RFC 6902 "from"; () when the op has none
    value: Any


def apply_json_patch(resource: dict[str, Any], operations: object) -> dict[str, Any]:
    """Apply a JSON Patch document to a copy of ``resource`` and return the copy.

    Raises :class:`BadRequest` for a malformed document and :class:`UnprocessableEntity`
    when an operation cannot be applied; the input is never modified.
    """
    try:
        parsed = _parse_document(operations)
        document: Any = copy.deepcopy(resource)
        for operation in parsed:
            try:
                document = _APPLY[operation.op](document, operation)
            except PointerResolutionError as exc:
                raise UnprocessableEntity(f"{operation.where}: {operation.op} failed: {exc}") from exc
    except RecursionError as exc:
        raise BadRequest("the patch document or resource is nested too deeply") from exc
    if not isinstance(document, dict):
        raise UnprocessableEntity("the patched document is not a JSON object, so it cannot be a resource")
    return document


def json_equal(left: Any, right: Any) -> bool:
    """RFC 6902 §4.6 equality: numbers by value (1 == 1.0), but true is not 1; objects ignore key order."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and bool(left == right)


def _parse_document(operations: object) -> list[_Operation]:
    if not isinstance(operations, list):
        raise BadRequest("a JSON Patch document must be a JSON array of operation objects (RFC 6902 §3)")
    return [_parse_operation(f"operations[{index}]", raw) for index, raw in enumerate(operations)]


def _parse_operation(where: str, raw: object) -> _Operation:
    if not isinstance(raw, dict):
        raise BadRequest(f"{where}: an operation must be a JSON object")
    if "op" not in raw:
        raise BadRequest(f"{where}: 'op' is required")
    op = raw["op"]
    if not isinstance(op, str) or op not in _OPS:
        shown = repr(op[:40]) if isinstance(op, str) else f"a JSON {type(op).__name__}"
        raise BadRequest(f"{where}: unknown op {shown}; expected one of {', '.join(_OPS)}")
    path = _pointer(raw, "path", where)
    source: Pointer = _pointer(raw, "from", where) if op in _NEEDS_FROM else ()
    if op in _NEEDS_VALUE and "value" not in raw:
        raise BadRequest(f"{where}: 'value' is required for {op}")
    # RFC 6902 §4.4: a location cannot be moved into one of its own children.
    if op == "move" and jsonpointer.is_proper_prefix(source, path):
        raise BadRequest(f"{where}: 'from' must not be a proper prefix of 'path'")
    return _Operation(where, op, path, source, raw.get("value", _MISSING))


def _pointer(raw: dict[str, Any], member: str, where: str) -> Pointer:
    if member not in raw:
        raise BadRequest(f"{where}: '{member}' is required")
    text = raw[member]
    if not isinstance(text, str):
        raise BadRequest(f"{where}: '{member}' must be a string holding a JSON Pointer")
    try:
        return jsonpointer.parse_pointer(text)
    except PointerSyntaxError as exc:
        raise BadRequest(f"{where}: '{member}' is not a valid JSON Pointer: {exc}") from exc


def _add(document: Any, operation: _Operation) -> Any:
    # The patch document is the caller's: never let the result share objects with it.
    return jsonpointer.add(document, operation.path, copy.deepcopy(operation.value))


def _remove(document: Any, operation: _Operation) -> Any:
    jsonpointer.remove(document, operation.path)
    return document


def _replace(document: Any, operation: _Operation) -> Any:
    return jsonpointer.replace(document, operation.path, copy.deepcopy(operation.value))


def _move(document: Any, operation: _Operation) -> Any:
    # RFC 6902 §4.4: identical to a remove at "from" followed by an add at "path".
    value = jsonpointer.remove(document, operation.source)
    return jsonpointer.add(document, operation.path, value)


def _copy(document: Any, operation: _Operation) -> Any:
    value = copy.deepcopy(jsonpointer.resolve(document, operation.source))
    return jsonpointer.add(document, operation.path, value)


def _test(document: Any, operation: _Operation) -> Any:
    if not json_equal(jsonpointer.resolve(document, operation.path), operation.value):
        # The actual value is left out: diagnostics must not echo resource content.
        where = jsonpointer.format_pointer(operation.path) or "the document root"
        raise UnprocessableEntity(f"{operation.where}: test failed: the value at '{where}' differs")
    return document


_APPLY: Final[dict[str, Callable[[Any, _Operation], Any]]] = {
    "add": _add,
    "remove": _remove,
    "replace": _replace,
    "move": _move,
    "copy": _copy,
    "test": _test,
}
