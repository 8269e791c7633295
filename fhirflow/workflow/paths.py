"""The ``$.a.b`` subset of JSONPath that the workflow DSL uses, with Step Functions' meaning."""

from __future__ import annotations

import copy
from typing import Any


class PathError(Exception):
    """A path that does not resolve (Step Functions: ``States.Runtime``)."""


def _steps(path: str) -> list[str]:
    if path == "$":
        return []
    if not path.startswith("$.") or any(not part for part in path[2:].split(".")):
        raise PathError(f"unsupported path {path!r} (only $ and $.field.field... are)")
    return path[2:].split(".")


def present(data: Any, path: str) -> bool:
    node = data
    for step in _steps(path):
        if not isinstance(node, dict) or step not in node:
            return False
        node = node[step]
    return True


def get(data: Any, path: str) -> Any:
    node = data
    for step in _steps(path):
        if not isinstance(node, dict) or step not in node:
            raise PathError(f"{path} is not present in the input")
        node = node[step]
    return node


def put(data: Any, path: str | None, value: Any) -> Any:
    """ResultPath: ``$`` replaces the input, None keeps it, ``$.a.b`` sets a field of a copy."""
    if path is None:
        return data
    steps = _steps(path)
    if not steps:
        return value
    if not isinstance(data, dict):
        raise PathError(f"cannot set {path} on a non-object input")
    out = copy.copy(data)
    node = out
    for step in steps[:-1]:
        child = node.get(step)
        child = copy.copy(child) if isinstance(child, dict) else {}
        node[step] = child
        node = child
    node[steps[-1]] = value
    return out
