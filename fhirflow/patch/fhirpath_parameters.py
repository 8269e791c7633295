"""Reading a FHIRPath Patch document: the Parameters resource of R4 fhirpatch.html.

Each ``parameter`` named ``operation`` carries parts ``type`` (add | insert | delete |
replace | move), ``path`` and, by type, ``name``, ``value``, ``index``, ``source``,
``destination`` (the table in fhirpatch.html; the fhirpath-patch profile slices the parts
closed by name, so other part names are an error). Everything is checked here, before any
operation runs, so a malformed document is a 400 whatever the resource holds.

A ``value`` is either a ``value[x]`` (with its ``_value[x]`` id/extensions), a ``resource``,
or, for types Parameters cannot carry directly and for anonymous backbone elements, a list
of ``part``s each named after a child element and holding that child's value the same way
(fhirpatch.html, the ``contact`` example).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from fhirflow.errors import BadRequest
from fhirflow.patch.fhirpath_locator import CompiledPath, PathSyntaxError, compile_path

_TYPES: Final = ("add", "insert", "delete", "replace", "move")
_REQUIRED_PARTS: Final = {
    "add": ("path", "name", "value"),
    "insert": ("path", "value", "index"),
    "delete": ("path",),
    "replace": ("path", "value"),
    "move": ("path", "source", "destination"),
}
_PART_NAMES: Final = frozenset({"type", "path", "name", "value", "index", "source", "destination"})
_VALUE_KEY: Final = re.compile(r"value[A-Z][A-Za-z0-9]*")
_ELEMENT_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Leaf:
    """A value given directly: ``value[x]`` (type_suffix "Date", "HumanName"...) or a ``resource``."""

    json: Any
    type_suffix: str | None
    extras: dict[str, Any] | None  # the ``_value[x]`` object: id and extensions of a primitive


@dataclass(frozen=True, slots=True)
class Branch:
    """A value built from parts, one per child element, in document order."""

    children: tuple[tuple[str, Leaf | Branch], ...]


PatchValue = Leaf | Branch


@dataclass(frozen=True, slots=True)
class FhirPathOperation:
    where: str  # "Parameters.parameter[2]", for diagnostics and OperationOutcome.issue.expression
    type: str
    path: CompiledPath
    name: str | None = None
    value: PatchValue | None = None
    index: int | None = None
    source: int | None = None
    destination: int | None = None


def parse_parameters(parameters: object) -> list[FhirPathOperation]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise BadRequest("a FHIRPath Patch document must be a Parameters resource (R4 fhirpatch.html)")
    entries = parameters.get("parameter", [])
    if not isinstance(entries, list):
        raise BadRequest("Parameters.parameter must be an array", expression="Parameters.parameter")
    return [_parse_operation(f"Parameters.parameter[{i}]", entry) for i, entry in enumerate(entries)]


def _bad(where: str, message: str) -> BadRequest:
    return BadRequest(f"{where}: {message}", expression=where)


def _parse_operation(where: str, entry: object) -> FhirPathOperation:
    if not isinstance(entry, dict):
        raise _bad(where, "a parameter must be a JSON object")
    if entry.get("name") != "operation":
        raise _bad(where, "every parameter of a FHIRPath Patch must be named 'operation'")
    parts = _parts_by_name(where, entry.get("part"))
    if "type" not in parts:
        raise _bad(where, "the 'type' part is required")
    op_type = _primitive(where, parts["type"], ("valueCode", "valueString"), str)
    if op_type not in _TYPES:
        raise _bad(where, f"'type' must be one of {', '.join(_TYPES)}")
    for required in _REQUIRED_PARTS[op_type]:
        if required not in parts:
            raise _bad(where, f"the '{required}' part is required for {op_type}")
    path = _path(where, _primitive(where, parts["path"], ("valueString",), str), op_type)
    name = _name(where, parts) if op_type == "add" else None
    value = (
        _value(f"{where}.part.where(name = 'value')", parts["value"])
        if "value" in parts and op_type != "delete"
        else None
    )
    return FhirPathOperation(
        where,
        op_type,
        path,
        name=name,
        value=value,
        index=_integer(where, parts, "index") if op_type == "insert" else None,
        source=_integer(where, parts, "source") if op_type == "move" else None,
        destination=_integer(where, parts, "destination") if op_type == "move" else None,
    )


def _parts_by_name(where: str, parts: object) -> dict[str, dict[str, Any]]:
    if not isinstance(parts, list) or not parts:
        raise _bad(where, "an operation must have parts (type, path, ...)")
    found: dict[str, dict[str, Any]] = {}
    for position, part in enumerate(parts):
        part_where = f"{where}.part[{position}]"
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise _bad(part_where, "a part must be an object with a string 'name'")
        if part["name"] not in _PART_NAMES:
            raise _bad(part_where, f"unknown part name; expected one of {', '.join(sorted(_PART_NAMES))}")
        if part["name"] in found:
            raise _bad(part_where, f"the '{part['name']}' part appears more than once")
        found[part["name"]] = part
    return found


def _primitive(where: str, part: dict[str, Any], keys: tuple[str, ...], kind: type) -> Any:
    for key in keys:
        value = part.get(key)
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
    raise _bad(where, f"the '{part['name']}' part needs {' or '.join(keys)}")


def _integer(where: str, parts: dict[str, dict[str, Any]], name: str) -> int:
    value: int = _primitive(where, parts[name], ("valueInteger",), int)
    return value


def _path(where: str, text: str, op_type: str) -> CompiledPath:
    try:
        path = compile_path(text)
    except PathSyntaxError as exc:
        raise _bad(where, f"path: {exc}") from exc
    # fhirpatch.html: insert and move name "the collection"; we need its parent and element
    # name so that inserting into an absent or empty list works.
    if op_type in ("insert", "move") and not path.ends_with_element_name:
        raise _bad(where, f"the path of {op_type} must end with the name of the repeating element")
    return path


def _name(where: str, parts: dict[str, dict[str, Any]]) -> str:
    name: str = _primitive(where, parts["name"], ("valueString",), str)
    if not _ELEMENT_NAME.fullmatch(name):
        raise _bad(where, "'name' must be an element name")
    return name


def _value(where: str, part: dict[str, Any]) -> PatchValue:
    value_keys = [key for key in part if _VALUE_KEY.fullmatch(key)]
    forms = len(value_keys) + ("resource" in part) + ("part" in part)
    if forms != 1:
        raise _bad(where, "a value must have exactly one of value[x], resource or part")
    if value_keys:
        key = value_keys[0]
        if part[key] is None:
            raise _bad(where, f"{key} must not be null")
        extras = part.get("_" + key)
        return Leaf(part[key], key[len("value") :], extras if isinstance(extras, dict) else None)
    if "resource" in part:
        if not isinstance(part["resource"], dict) or not isinstance(part["resource"].get("resourceType"), str):
            raise _bad(where, "'resource' must be a resource with a resourceType")
        return Leaf(part["resource"], None, None)
    children = part["part"]
    if not isinstance(children, list) or not children:
        raise _bad(where, "'part' must be a non-empty array")
    return Branch(tuple(_child(f"{where}.part[{i}]", child) for i, child in enumerate(children)))


def _child(where: str, part: object) -> tuple[str, PatchValue]:
    if not isinstance(part, dict) or not isinstance(part.get("name"), str) or not _ELEMENT_NAME.fullmatch(part["name"]):
        raise _bad(where, "each part of a value must be an object named after an element")
    return part["name"], _value(where, part)
