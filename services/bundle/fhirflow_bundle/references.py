"""Reference rewriting inside a transaction (http://hl7.org/fhir/R4/bundle.html#references).

Entries identify each other by ``fullUrl`` (``urn:uuid:``, ``urn:oid:`` or an absolute URL);
once the server has given each created resource its id, every reference to such a fullUrl —
anywhere in the resource: extensions, contained resources, nested backbone elements — is
replaced with ``Type/id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhirflow.errors import BadRequest

LOCAL_SCHEMES = ("urn:uuid:", "urn:oid:")


def rewrite(value: Any, mapping: Mapping[str, str], *, where: str) -> Any:
    """A copy of ``value`` with each ``reference`` to a mapped fullUrl replaced.

    A ``urn:uuid:``/``urn:oid:`` reference that no entry defines cannot be resolved by anyone
    later, so it is a 400 naming the entry (``where``). (A copy, not in place: a transaction
    that must run again starts from the entries as they came.)
    """
    if type(value) is dict:
        return _rewrite_object(value, mapping, where)
    if type(value) is list:
        return _rewrite_array(value, mapping, where)
    return value


# Exact type checks and no call per primitive: this runs over every element of every entry.
def _rewrite_object(node: dict[str, Any], mapping: Mapping[str, str], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in node.items():
        kind = type(item)
        if kind is dict:
            out[key] = _rewrite_object(item, mapping, where)
        elif kind is list:
            out[key] = _rewrite_array(item, mapping, where)
        elif kind is str and key == "reference":
            out[key] = _resolve(item, mapping, where=where)
        else:
            out[key] = item
    return out


def _rewrite_array(items: list[Any], mapping: Mapping[str, str], where: str) -> list[Any]:
    return [
        _rewrite_object(item, mapping, where)
        if type(item) is dict
        else _rewrite_array(item, mapping, where)
        if type(item) is list
        else item
        for item in items
    ]


def rewrite_in_place(
    value: Any, mapping: Mapping[str, str], *, where: str, undo: list[tuple[dict[str, Any], str]]
) -> None:
    """Like :func:`rewrite`, but in ``value`` itself, without copying it: each replaced reference's
    element and its original text are added to ``undo``, for :func:`restore`. (The copy costs
    more than the rest of a transaction's reference handling: every element of every entry.)"""
    if type(value) is dict:
        _in_place_object(value, mapping, where, undo)
    elif type(value) is list:
        _in_place_array(value, mapping, where, undo)


def restore(undo: list[tuple[dict[str, Any], str]]) -> None:
    """Put back the references :func:`rewrite_in_place` replaced (latest first), and empty ``undo``."""
    while undo:
        holder, original = undo.pop()
        holder["reference"] = original


def _in_place_object(
    node: dict[str, Any], mapping: Mapping[str, str], where: str, undo: list[tuple[dict[str, Any], str]]
) -> None:
    for key, item in node.items():
        kind = type(item)
        if kind is dict:
            _in_place_object(item, mapping, where, undo)
        elif kind is list:
            _in_place_array(item, mapping, where, undo)
        elif kind is str and key == "reference":
            target = _resolve(item, mapping, where=where)
            if target is not item:
                undo.append((node, item))
                node[key] = target  # replacing a key's value while iterating is allowed: no resize


def _in_place_array(
    items: list[Any], mapping: Mapping[str, str], where: str, undo: list[tuple[dict[str, Any], str]]
) -> None:
    for item in items:
        kind = type(item)
        if kind is dict:
            _in_place_object(item, mapping, where, undo)
        elif kind is list:
            _in_place_array(item, mapping, where, undo)


def _resolve(reference: str, mapping: Mapping[str, str], *, where: str) -> str:
    target = mapping.get(reference)
    if target is not None:
        return target
    if reference.startswith(LOCAL_SCHEMES):
        raise BadRequest(f"{where}: the reference '{reference[:120]}' names no entry of this Bundle", expression=where)
    return reference


def local_references(value: Any) -> list[str]:
    """Every ``urn:uuid:``/``urn:oid:`` reference in a resource (a batch entry must not have any)."""
    return [r for r in reference_strings(value) if r.startswith(LOCAL_SCHEMES)]


def conditional_references(value: Any) -> list[str]:
    """Every reference written as a search (``Patient?identifier=...``, http.html#trules)."""
    from fhirflow.conditional import conditional_reference

    return [r for r in reference_strings(value) if "?" in r and conditional_reference(r) is not None]


def reference_strings(value: Any) -> list[str]:
    """Every ``reference`` string in ``value``, anywhere in it."""
    found: list[str] = []
    if type(value) is dict:
        _collect_object(value, found)
    elif type(value) is list:
        _collect_array(value, found)
    return found


def _collect_object(node: dict[str, Any], found: list[str]) -> None:
    for key, item in node.items():
        kind = type(item)
        if kind is dict:
            _collect_object(item, found)
        elif kind is list:
            _collect_array(item, found)
        elif kind is str and key == "reference":
            found.append(item)


def _collect_array(items: list[Any], found: list[str]) -> None:
    for item in items:
        kind = type(item)
        if kind is dict:
            _collect_object(item, found)
        elif kind is list:
            _collect_array(item, found)
