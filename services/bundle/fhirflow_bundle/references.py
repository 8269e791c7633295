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
    later, so it is a 400 naming the entry (``where``).
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                out[key] = _resolve(item, mapping, where=where)
            else:
                out[key] = rewrite(item, mapping, where=where)
        return out
    if isinstance(value, list):
        return [rewrite(item, mapping, where=where) for item in value]
    return value


def _resolve(reference: str, mapping: Mapping[str, str], *, where: str) -> str:
    target = mapping.get(reference)
    if target is not None:
        return target
    if reference.startswith(LOCAL_SCHEMES):
        raise BadRequest(f"{where}: the reference '{reference[:120]}' names no entry of this Bundle", expression=where)
    return reference


def local_references(value: Any) -> list[str]:
    """Every ``urn:uuid:``/``urn:oid:`` reference in a resource (a batch entry must not have any)."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key == "reference" and isinstance(child, str) and child.startswith(LOCAL_SCHEMES):
                    found.append(child)
                else:
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return found
