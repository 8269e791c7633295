"""Edits of FHIR JSON elements that keep the JSON representation rules intact.

R4 json.html#primitive: a primitive's id and extensions live in a sibling property named
``_element``; for a repeating primitive, ``_element`` is an array aligned item for item
with the values (``null`` where an item has none). Every insert, removal or move of an
array item therefore moves its ``_element`` entry too. R4 json.html also forbids empty
objects and arrays, so :func:`prune_empty` removes the ones a deletion leaves behind.
"""

from __future__ import annotations

from typing import Any

Extras = dict[str, Any] | None  # a primitive's {"id": ..., "extension": [...]} or None


def holder_key(key: str) -> str:
    return "_" + key


def replace_element(owner: dict[str, Any], key: str, index: int | None, value: Any, extras: Extras) -> None:
    """Replace the whole element (value, id and extensions) at ``owner[key]`` or ``owner[key][index]``."""
    if index is None:
        owner[key] = value
        if extras is None:
            owner.pop(holder_key(key), None)
        else:
            owner[holder_key(key)] = extras
        return
    owner[key][index] = value
    holders = owner.get(holder_key(key))
    if isinstance(holders, list) or extras is not None:
        _aligned_holders(owner, key)[index] = extras


def remove_element(owner: dict[str, Any], key: str, index: int | None) -> None:
    if index is None:
        owner.pop(key, None)
        owner.pop(holder_key(key), None)
        return
    owner[key].pop(index)
    holders = owner.get(holder_key(key))
    if isinstance(holders, list) and index < len(holders):
        holders.pop(index)


def insert_element(owner: dict[str, Any], key: str, position: int, value: Any, extras: Extras) -> None:
    """Insert into the array ``owner[key]`` (created when absent) at ``position``."""
    items = owner.setdefault(key, [])
    if isinstance(owner.get(holder_key(key)), list) or extras is not None:
        _aligned_holders(owner, key).insert(position, extras)
    items.insert(position, value)


def move_element(owner: dict[str, Any], key: str, source: int, destination: int) -> None:
    """Move an array item: remove it at ``source``, then insert it at ``destination``."""
    items = owner[key]
    items.insert(destination, items.pop(source))
    holders = owner.get(holder_key(key))
    if isinstance(holders, list):
        holders = _aligned_holders(owner, key)
        holders.insert(destination, holders.pop(source))


def set_element(owner: dict[str, Any], key: str, value: Any, extras: Extras) -> None:
    """Create a single (non-repeating) element."""
    owner[key] = value
    if extras is not None:
        owner[holder_key(key)] = extras


def writable_holder(owner: dict[str, Any], key: str, index: int | None) -> dict[str, Any]:
    """The ``_key`` object of a primitive, created when absent, to add an id or extension to."""
    if index is None:
        holder = owner.get(holder_key(key))
        if not isinstance(holder, dict):
            holder = owner[holder_key(key)] = {}
        return holder
    holders = _aligned_holders(owner, key)
    if not isinstance(holders[index], dict):
        holders[index] = {}
    result: dict[str, Any] = holders[index]
    return result


def prune_empty(node: Any) -> None:
    """Drop empty objects and arrays, bottom up; emptied entries of ``_x`` arrays become null."""
    if isinstance(node, list):
        for item in node:
            prune_empty(item)
        return
    if not isinstance(node, dict):
        return
    for key in list(node):
        child = node[key]
        prune_empty(child)
        if key.startswith("_") and isinstance(child, list):
            # Keep alignment with the value array: an emptied holder becomes null, not removed.
            child[:] = [None if item in ({}, []) else item for item in child]
            if all(item is None for item in child):
                del node[key]
        elif isinstance(child, dict | list) and not child:
            del node[key]


def _aligned_holders(owner: dict[str, Any], key: str) -> list[Any]:
    """The ``_key`` array, created or padded with nulls to the length of ``owner[key]``."""
    holders = owner.get(holder_key(key))
    if not isinstance(holders, list):
        holders = owner[holder_key(key)] = []
    items = owner.get(key)
    length = len(items) if isinstance(items, list) else 0
    holders.extend([None] * (length - len(holders)))
    return holders
