"""FHIRPath Patch (R4 fhirpatch.html) for FHIR PATCH with a Parameters body.

The rules of fhirpatch.html as applied here:

* operations run in document order and the patch is all or nothing (we edit a copy);
* ``add``: the path selects exactly one element, to which child ``name`` is added. An
  existing array is appended to; a non-repeating element may be added only when absent
  ("Add can be used for non-repeating elements as long as they do not already exist");
  an absent element is created as an array when it repeats (from the R4 model the validator uses);
* ``insert``: into the list named by the path at ``index``, ``0 <= index <= len``;
* ``delete``: a path that matches nothing is not an error ("if found"); "Only a single
  element can be deleted", so two or more matches are;
* ``replace``: the path selects exactly one element, replaced whole;
* ``move``: within the list named by the path, from ``source`` to ``destination``
  (remove, then insert, as in the HL7 fhir-test-cases patch tests);
* "The type of the value must be correct for the place": checked for choice elements and
  complex types; primitives share a JSON form and are left to resource validation.

A malformed document is a 400 (:class:`BadRequest`); an operation that cannot be applied
to this resource is a 422 (:class:`UnprocessableEntity`, http.html#patch), each naming
the operation as ``Parameters.parameter[n]``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Final

from fhirflow.errors import BadRequest, UnprocessableEntity
from fhirflow.patch import fhir_json
from fhirflow.patch.fhirpath_locator import CompiledPath, Location, Locator, PathEvaluationError
from fhirflow.patch.fhirpath_parameters import FhirPathOperation, Leaf, PatchValue, parse_parameters
from fhirflow.patch.r4model import r4_model
from fhirflow.validation import element_repeats

RepeatsRule = Callable[[str], bool]


class _NotApplicable(Exception):
    """The operation is well formed but cannot be applied to this resource (becomes a 422)."""


def apply_fhirpath_patch(
    resource: dict[str, Any], parameters: object, *, repeats: RepeatsRule | None = None
) -> dict[str, Any]:
    """Apply a FHIRPath Patch Parameters resource to a copy of ``resource`` and return the copy.

    ``repeats`` answers "is this element path 0..*?" when an absent element is created;
    the default is :func:`fhirflow.validation.element_repeats`. The input is never
    modified.
    """
    try:
        operations = parse_parameters(parameters)
        document = copy.deepcopy(resource)
        patcher = _Patcher(document, repeats or element_repeats)
        for operation in operations:
            try:
                _APPLY[operation.type](patcher, operation)
            except (_NotApplicable, PathEvaluationError) as exc:
                raise UnprocessableEntity(
                    f"{operation.where}: {operation.type} failed: {exc}", expression=operation.where
                ) from exc
        # R4 json.html: no empty objects or arrays, e.g. a parent emptied by a delete.
        fhir_json.prune_empty(document)
    except RecursionError as exc:
        raise BadRequest("the patch document or resource is nested too deeply") from exc
    return document


class _Patcher:
    def __init__(self, document: dict[str, Any], repeats: RepeatsRule) -> None:
        self.locator = Locator(document)
        self.model = r4_model()
        self.repeats = repeats

    def single(self, operation: FhirPathOperation) -> Location:
        found = self.locator.locate(operation.path)
        if not found:
            raise _NotApplicable(f"the path '{operation.path.text}' matches nothing")
        if len(found) > 1:
            raise _NotApplicable(f"the path '{operation.path.text}' matches {len(found)} elements, not one")
        return found[0]

    def collection(self, operation: FhirPathOperation) -> tuple[dict[str, Any], str, str, list[Any]]:
        """The list an insert or move path names: (owner, key, element path, items)."""
        path, last = operation.path, operation.path.steps[-1]
        if last.kind == "start" and last.name in (self.locator.root().fhir_type, "DomainResource", "Resource"):
            raise _NotApplicable(f"the path '{path.text}' names the resource, not a list")
        if last.kind == "start":
            parent = self.locator.root()
        else:
            parent = self.single(_with_path(operation, CompiledPath(path.text, path.steps[:-1])))
        if not isinstance(parent.value, dict):
            raise _NotApplicable(f"'{parent.expression}' has no child elements")
        items = parent.value.get(last.name)
        if items is None and self.repeats(f"{parent.base}.{last.name}"):
            items = []  # an absent list is empty: insert creates it
        if not isinstance(items, list):
            raise _NotApplicable(f"'{parent.expression}.{last.name}' is not a repeating element")
        return parent.value, last.name, self.model.element_path(parent.base, last.name), items

    def build(self, value: PatchValue, element: str) -> tuple[Any, fhir_json.Extras]:
        """The JSON for a patch value placed at definition path ``element``."""
        if isinstance(value, Leaf):
            self.check_type(element, value)
            return copy.deepcopy(value.json), copy.deepcopy(value.extras)
        base = self.model.child_base(element, self.model.type_of(element))
        groups: dict[str, list[PatchValue]] = {}
        for name, child in value.children:
            groups.setdefault(name, []).append(child)
        built: dict[str, Any] = {}
        for name, children in groups.items():
            child_element = self.model.element_path(base, name)
            key = self.json_key(child_element, name, children[0])
            parts = [self.build(child, child_element) for child in children]
            if len(parts) > 1 or self.repeats(f"{base}.{name}"):
                for position, (json_value, extras) in enumerate(parts):
                    fhir_json.insert_element(built, key, position, json_value, extras)
            else:
                fhir_json.set_element(built, key, *parts[0])
        return built, None

    def json_key(self, element: str, name: str, value: PatchValue) -> str:
        """The JSON property for element ``name``: ``value`` + type for a choice (R4 json.html#choice)."""
        choices = self.model.choice_types(element)
        if not choices:
            return name
        suffix = value.type_suffix if isinstance(value, Leaf) else None
        if suffix is None:
            raise _NotApplicable(f"'{name}' is a choice element; give its value as value[x] so its type is known")
        if suffix not in choices:
            raise _NotApplicable(f"'{name}' does not allow the type {suffix}")
        return name + suffix

    def check_type(self, element: str, value: Leaf) -> None:
        declared = self.model.type_of(element)
        if declared is None or value.type_suffix is None or declared == "Resource" or self.model.choice_types(element):
            return  # unknown element, a resource value, or a choice (checked by json_key)
        given = self.model.type_for_suffix(value.type_suffix)
        if given[:1].islower() and declared[:1].islower():
            return  # primitives share JSON forms (a code is a string); resource validation checks them
        if not self.model.is_a(given, declared):
            raise _NotApplicable(f"the value is a {given} but the element holds a {declared}")

    def existing_key(self, owner: dict[str, Any], element: str, name: str) -> str | None:
        if name in owner:
            return name
        return next((name + s for s in self.model.choice_types(element) or () if name + s in owner), None)


def _with_path(operation: FhirPathOperation, path: CompiledPath) -> FhirPathOperation:
    return FhirPathOperation(operation.where, operation.type, path)


def _add(patcher: _Patcher, operation: FhirPathOperation) -> None:
    # The parser guarantees the parts each operation type requires.
    assert operation.name is not None
    assert operation.value is not None
    target, name = patcher.single(operation), operation.name
    if isinstance(target.value, dict):
        owner, base = target.value, target.base
    elif name in ("id", "extension") and target.owner is not None and not isinstance(target.value, list):
        # R4 json.html#primitive: a primitive's id and extensions live in "_element".
        owner, base = fhir_json.writable_holder(target.owner, target.key, target.index), "Element"
    else:
        raise _NotApplicable(f"'{name}' cannot be added to the primitive value at '{target.expression}'")
    element = patcher.model.element_path(base, name)
    key = patcher.json_key(element, name, operation.value)
    json_value, extras = patcher.build(operation.value, element)
    existing = patcher.existing_key(owner, element, name)
    if existing is None:
        if patcher.repeats(f"{base}.{name}"):
            fhir_json.insert_element(owner, key, 0, json_value, extras)
        else:
            fhir_json.set_element(owner, key, json_value, extras)
    elif existing == key and isinstance(owner[key], list):
        fhir_json.insert_element(owner, key, len(owner[key]), json_value, extras)
    else:
        raise _NotApplicable(f"'{target.expression}.{name}' already exists and does not repeat; use replace")


def _insert(patcher: _Patcher, operation: FhirPathOperation) -> None:
    assert operation.index is not None
    assert operation.value is not None
    owner, key, element, items = patcher.collection(operation)
    if not 0 <= operation.index <= len(items):
        raise _NotApplicable(f"index {operation.index} is out of range: the list has {len(items)} item(s)")
    json_value, extras = patcher.build(operation.value, element)
    fhir_json.insert_element(owner, key, operation.index, json_value, extras)


def _delete(patcher: _Patcher, operation: FhirPathOperation) -> None:
    found = patcher.locator.locate(operation.path)
    if not found:
        return  # fhirpatch.html: "Path of the element to delete (if found)"
    if len(found) > 1:
        raise _NotApplicable(f"the path '{operation.path.text}' matches {len(found)} elements; only one can be deleted")
    target = found[0]
    if target.owner is None:
        raise _NotApplicable("the resource itself cannot be deleted by a patch")
    fhir_json.remove_element(target.owner, target.key, target.index)


def _replace(patcher: _Patcher, operation: FhirPathOperation) -> None:
    assert operation.value is not None
    target = patcher.single(operation)
    if target.owner is None:
        raise _NotApplicable("the resource itself cannot be replaced by a patch")
    key = target.key
    if target.choice_name is not None:
        # A choice element may change type: valueQuantity replaced by a valueString.
        key = patcher.json_key(target.element, target.choice_name, operation.value)
    json_value, extras = patcher.build(operation.value, target.element)
    if key == target.key:
        fhir_json.replace_element(target.owner, key, target.index, json_value, extras)
    else:
        fhir_json.remove_element(target.owner, target.key, None)
        fhir_json.set_element(target.owner, key, json_value, extras)


def _move(patcher: _Patcher, operation: FhirPathOperation) -> None:
    assert operation.source is not None
    assert operation.destination is not None
    owner, key, _, items = patcher.collection(operation)
    for label, position in (("source", operation.source), ("destination", operation.destination)):
        if not 0 <= position < len(items):
            raise _NotApplicable(f"{label} {position} is out of range: the list has {len(items)} item(s)")
    fhir_json.move_element(owner, key, operation.source, operation.destination)


_APPLY: Final[dict[str, Callable[[_Patcher, FhirPathOperation], None]]] = {
    "add": _add,
    "insert": _insert,
    "delete": _delete,
    "replace": _replace,
    "move": _move,
}
