"""Compiled search parameter expressions: steps walked over resource dicts.

:mod:`fhirflow.searchparams.compiler` turns the FHIRPath subset R4 expressions use into tuples
of steps (at generation time, or when a runtime SearchParameter is registered); :func:`walk`
executes them. Anything the compiler does not handle is evaluated by fhirpathpy
(:mod:`fhirflow.searchparams.fhirpath`), which stays the reference in tests.

Step encoding (tuples, JSON-friendly as lists):

- ``("f", (key, ...))`` child elements; several keys for a choice element (``valueQuantity``...)
- ``("w", key, literal)`` keep nodes whose ``key`` equals the string literal
- ``("r", Type)`` keep references whose target type is ``Type`` (``where(resolve() is Type)``)
- ``("i", n)`` the n-th node of the collection (``[n]``, ``first()``)
- ``("b",)`` ``X.exists() and X != false`` on the path so far: one boolean (Patient-deceased)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

Step = tuple[Any, ...]

_HISTORY = re.compile(r"/_history/[^/]*$")


# ---------------------------------------------------------------------------------------------
# Splitting expressions


def split_union(expression: str) -> list[str]:
    """Top-level ``|`` alternatives of an expression (parentheses and quotes respected)."""
    parts: list[str] = []
    depth, start, quoted = 0, 0, False
    for i, ch in enumerate(expression):
        if ch == "'" and (i == 0 or expression[i - 1] != "\\"):
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


# ---------------------------------------------------------------------------------------------
# Walking


def reference_type(reference: object) -> str | None:
    """The target type a literal reference names (``Patient/1``, ``http://x/Patient/1/_history/2``)."""
    if not isinstance(reference, str) or reference.startswith(("#", "urn:")):
        return None
    parts = _HISTORY.sub("", reference).split("/")
    if len(parts) < 2:
        return None
    candidate = parts[-2]
    return candidate if candidate[:1].isupper() and candidate.isalnum() else None


def walk(root: Any, steps: tuple[Step, ...]) -> list[Any]:
    """Evaluate compiled steps on a resource (or element) dict; returns the matching nodes."""
    nodes: list[Any] = [root]
    for step in steps:
        kind = step[0]
        if kind == "f":
            out: list[Any] = []
            for node in nodes:
                if type(node) is dict:
                    for key in step[1]:
                        value = node.get(key)
                        if value is None:
                            continue
                        if type(value) is list:
                            out.extend(v for v in value if v is not None)
                        else:
                            out.append(value)
            nodes = out
        elif kind == "w":
            nodes = [n for n in nodes if type(n) is dict and n.get(step[1]) == step[2]]
        elif kind == "r":
            nodes = [n for n in nodes if type(n) is dict and reference_type(n.get("reference")) == step[1]]
        elif kind == "i":
            nodes = nodes[step[1] : step[1] + 1]
        else:
            return [any(n is not False for n in nodes)]
        if not nodes:
            return [False] if steps[-1][0] == "b" else nodes
    return nodes


def steps_to_json(steps: tuple[Step, ...]) -> list[Any]:
    return [[s[0], list(s[1])] if s[0] == "f" else list(s) for s in steps]


def steps_from_json(data: Sequence[Sequence[Any]]) -> tuple[Step, ...]:
    return tuple((s[0], tuple(s[1])) if s[0] == "f" else tuple(s) for s in data)
