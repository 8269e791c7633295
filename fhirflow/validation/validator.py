"""Structural validation of FHIR R4 JSON resources (json.html, datatypes.html, elementdefinition.html).

Checks the JSON shape, unknown elements, cardinality, primitive formats, choice types, primitive
extensions and required bindings. FHIRPath invariants are out of scope.

The walk is written for the hot path: element tables are precompiled (:mod:`.schema`), the happy path
allocates little besides the path strings of nested objects, and paths of leaf values are only built
when an issue is reported.
"""

from __future__ import annotations

from fhirflow.errors import Issue
from fhirflow.validation.primitives import json_kind, shown
from fhirflow.validation.schema import COMPLEX, FORBIDDEN, PRIMITIVE, RESOURCE, ElementSpec, Schema, TypeDef, schema

# Objects nested deeper than this are refused rather than walked. Real resources stay far below it (a
# Bundle in a Bundle with deep Questionnaire items is ~30); the bound keeps the recursion (three frames
# a level at most) well inside Python's default limit even when the caller is itself deep in the stack.
MAX_DEPTH = 100

# An outcome listing more problems than this helps nobody; the rest are summarised in one issue.
MAX_ISSUES = 1000


def validate(resource: object, expected_type: str | None) -> list[Issue]:
    walk = _Walk(schema())
    try:
        walk.check_root(resource, expected_type)
    except RecursionError:
        # Only reachable when the caller already used most of the stack; MAX_DEPTH bounds our own part.
        walk.out.append(Issue("structure", "The resource is nested too deeply to be validated"))
    out = walk.out
    if len(out) > MAX_ISSUES:
        dropped = len(out) - MAX_ISSUES
        out = out[:MAX_ISSUES]
        out.append(Issue("too-costly", f"{dropped} further issues were not reported", severity="warning"))
    return out


class _Walk:
    """One validation: walks the JSON alongside the type tables and collects issues in ``out``."""

    __slots__ = ("depth", "element", "out", "schema")

    def __init__(self, sch: Schema) -> None:
        self.schema = sch
        self.out: list[Issue] = []
        self.depth = 0
        self.element = sch.typedef("Element")  # the type of a primitive's "_name" object

    def check_root(self, resource: object, expected_type: str | None) -> None:
        types = self.schema.resource_types
        declared = resource.get("resourceType") if type(resource) is dict else None
        if type(declared) is str and declared in types:
            root = declared
        elif expected_type is not None and expected_type in types:
            root = expected_type
        else:
            root = "Resource"  # FHIRPath's name for the root when the type is unknown
        if type(resource) is not dict:
            self.out.append(Issue("structure", f"A resource must be a JSON object, not {json_kind(resource)}", (root,)))
            return
        if expected_type is not None and type(declared) is str and declared != expected_type:
            message = f"Resource type {shown(declared)} does not match the expected type {shown(expected_type)}"
            self.out.append(Issue("invalid", message, (root,)))
        self.check_resource(resource, root)

    def check_resource(self, obj: dict[str, object], path: str) -> None:
        """A resource at ``path``: the outer root, or an element of type Resource (contained, entry.resource)."""
        out = self.out
        if not obj:
            out.append(Issue("structure", "Empty objects are not allowed", (path,)))
            return
        declared = obj.get("resourceType")
        if declared is None:
            out.append(Issue("required", "Element 'resourceType' is required", (path,)))
            return
        if type(declared) is not str:
            out.append(Issue("structure", f"Expected a string for 'resourceType', not {json_kind(declared)}", (path,)))
            return
        typedef = self.schema.resource(declared)
        if typedef is None:
            message = f"Unknown resource type {shown(declared)} (not a concrete FHIR R4 resource type)"
            out.append(Issue("invalid", message, (path,)))
            return
        self.check_object(obj, typedef, path)

    def check_object(self, obj: dict[str, object], typedef: TypeDef, path: str) -> None:
        """A non-empty JSON object holding an instance of ``typedef`` (a resource, datatype or backbone)."""
        out = self.out
        if self.depth >= MAX_DEPTH:
            out.append(Issue("structure", f"Content is nested more than {MAX_DEPTH} levels deep", (path,)))
            return
        self.depth += 1
        elements = typedef.elements
        chosen: dict[str, str] | None = None  # choice element name -> the variant present (json.html#choice)
        for key, value in obj.items():
            spec = elements.get(key)
            if spec is None:
                spec = self.other_key(obj, key, value, typedef, path)
                if spec is None:
                    continue
            elif value is None:
                # json.html#null: null only fills gaps in arrays of primitives, never stands for a property.
                out.append(Issue("structure", f"null is not allowed for '{key}'", (f"{path}.{key}",)))
                continue
            else:
                kind = spec.kind
                if kind == PRIMITIVE:
                    if spec.array:
                        self.check_primitive_array(spec, value, obj.get(spec.ext_key), path)
                    else:
                        self.check_primitive(spec, value, obj.get(spec.ext_key), path)
                elif kind == COMPLEX:
                    self.check_complex(spec, value, path)
                elif kind == RESOURCE:
                    self.check_resources(spec, value, path)
                else:
                    out.append(_forbidden_issue(spec, path))
            if spec.choice is not None:
                if chosen is None:
                    chosen = {}
                other = chosen.setdefault(spec.choice, spec.name)
                if other != spec.name:
                    message = f"Only one of the '{spec.choice}[x]' variants is allowed; found '{other}' and '{key}'"
                    out.append(Issue("structure", message, (f"{path}.{spec.name}",)))
        for name, shown_name, keys, minimum in typedef.required:
            for key in keys:
                if key in obj:
                    break
            else:
                message = f"Element '{shown_name}' is required (min {minimum})"
                out.append(Issue("required", message, (f"{path}.{name}",)))
        self.depth -= 1

    def other_key(
        self, obj: dict[str, object], key: str, value: object, typedef: TypeDef, path: str
    ) -> ElementSpec | None:
        """A key that is not an element name: a primitive's ``_name``, ``resourceType`` or an unknown element.

        Returns the spec of a primitive whose ``_name`` stands without its value, so choices are tracked.
        """
        if type(key) is not str:  # only possible for dicts built in Python, never for parsed JSON
            self.out.append(Issue("structure", f"Property names must be strings, not {shown(key)}", (path,)))
            return None
        if key[:1] == "_":
            spec = typedef.elements.get(key[1:])
            if spec is not None and spec.kind == PRIMITIVE:
                if spec.name in obj:
                    return None  # checked together with the value
                if value is None:
                    self.out.append(Issue("structure", f"null is not allowed for '{key}'", (f"{path}.{spec.name}",)))
                    return spec
                if spec.array:
                    self.check_primitive_array(spec, None, value, path)
                else:
                    self.check_primitive(spec, None, value, path)
                return spec
            if spec is not None and spec.kind == FORBIDDEN:
                self.out.append(_forbidden_issue(spec, path))
                return None
            if spec is not None:
                message = f"'{key}' is not allowed: '{spec.name}' is not a primitive element"
                self.out.append(Issue("structure", message, (f"{path}.{spec.name}",)))
                return None
        elif key == "resourceType" and typedef.is_resource:
            return None
        self.out.append(Issue("structure", f"Unknown element {shown(key)}", (f"{path}.{key}",)))
        return None

    def check_primitive(self, spec: ElementSpec, value: object, ext: object, path: str) -> None:
        """A single primitive; ``value`` is None when only ``_name`` is present (json.html#primitive)."""
        if value is not None:
            problem = spec.checker(value)
            if problem is not None:
                if type(value) is list:
                    problem = ("structure", f"Expected a single value for '{spec.name}', not an array")
                self.out.append(Issue(problem[0], problem[1], (f"{path}.{spec.name}",)))
            elif spec.codes is not None and value not in spec.codes:
                self.out.append(_binding_issue(value, spec, f"{path}.{spec.name}"))
        if ext is not None:
            self.check_extension_holder(ext, spec, f"{path}.{spec.name}")

    def check_primitive_array(self, spec: ElementSpec, values: object, exts: object, path: str) -> None:
        """A repeating primitive, ``_name`` aligned item by item with ``null`` in the gaps (json.html#primitive)."""
        base = f"{path}.{spec.name}"
        out = self.out
        if values is not None and type(values) is not list:
            out.append(Issue("structure", f"Expected an array for '{spec.name}', not {json_kind(values)}", (base,)))
            return
        if exts is not None and type(exts) is not list:
            out.append(Issue("structure", f"Expected an array for '_{spec.name}', not {json_kind(exts)}", (base,)))
            return
        if values is not None and exts is not None and len(values) != len(exts):
            message = f"'_{spec.name}' must have as many items as '{spec.name}' ({len(exts)} != {len(values)})"
            out.append(Issue("structure", message, (base,)))
            return
        items = values if values is not None else exts
        if type(items) is not list or not _check_count(spec, len(items), base, out):
            return
        check = spec.checker
        codes = spec.codes
        for index, item in enumerate(items):
            value = item if values is not None else None
            ext = exts[index] if type(exts) is list else None
            if value is not None:
                problem = check(value)
                if problem is not None:
                    out.append(Issue(problem[0], problem[1], (f"{base}[{index}]",)))
                elif codes is not None and value not in codes:
                    out.append(_binding_issue(value, spec, f"{base}[{index}]"))
            if ext is not None:
                self.check_extension_holder(ext, spec, f"{base}[{index}]")
            elif value is None:
                message = f"null is only allowed in '{spec.name}' where '_{spec.name}' has an item, and vice versa"
                out.append(Issue("structure", message, (f"{base}[{index}]",)))

    def check_extension_holder(self, ext: object, spec: ElementSpec, path: str) -> None:
        """The ``_name`` object of a primitive: only ``id`` and ``extension`` (json.html#primitive)."""
        if type(ext) is not dict:
            message = f"Expected an object for '_{spec.name}', not {json_kind(ext)}"
            self.out.append(Issue("structure", message, (path,)))
        elif not ext:
            self.out.append(Issue("structure", "Empty objects are not allowed", (path,)))
        else:
            self.check_object(ext, self.element, path)

    def check_complex(self, spec: ElementSpec, value: object, path: str) -> None:
        typedef = spec.typedef
        if typedef is None:
            typedef = spec.typedef = self.schema.typedef(spec.type_name)
        base = f"{path}.{spec.name}"
        if not spec.array:
            if type(value) is dict and value:
                self.check_object(value, typedef, base)
                if spec.systems is not None:
                    _check_coded(value, spec, base, self.out)
            else:
                self.out.append(_shape_issue(value, spec, base))
            return
        if type(value) is not list:
            self.out.append(_shape_issue(value, spec, base))
            return
        if not _check_count(spec, len(value), base, self.out):
            return
        for index, item in enumerate(value):
            item_path = f"{base}[{index}]"
            if type(item) is dict and item:
                self.check_object(item, typedef, item_path)
                if spec.systems is not None:
                    _check_coded(item, spec, item_path, self.out)
            else:
                self.out.append(_shape_issue(item, spec, item_path, in_array=True))

    def check_resources(self, spec: ElementSpec, value: object, path: str) -> None:
        """Elements of type Resource hold whole resources, validated as their own ``resourceType``."""
        base = f"{path}.{spec.name}"
        if not spec.array:
            if type(value) is dict:
                self.check_resource(value, base)
            else:
                self.out.append(_shape_issue(value, spec, base))
            return
        if type(value) is not list:
            self.out.append(_shape_issue(value, spec, base))
            return
        if not _check_count(spec, len(value), base, self.out):
            return
        for index, item in enumerate(value):
            if type(item) is dict:
                self.check_resource(item, f"{base}[{index}]")
            else:
                self.out.append(_shape_issue(item, spec, f"{base}[{index}]", in_array=True))


def _forbidden_issue(spec: ElementSpec, path: str) -> Issue:
    return Issue("invalid", f"Element '{spec.name}' is not allowed here (max 0)", (f"{path}.{spec.name}",))


def _check_count(spec: ElementSpec, count: int, path: str, out: list[Issue]) -> bool:
    """Array length against the element's cardinality; False when there is nothing to walk."""
    if count == 0:
        out.append(Issue("structure", "Empty arrays are not allowed", (path,)))
        return False
    if count < spec.min:
        out.append(Issue("required", f"Element '{spec.name}' needs at least {spec.min} items (found {count})", (path,)))
    if 0 <= spec.max < count:
        out.append(Issue("invalid", f"Element '{spec.name}' allows at most {spec.max} items (found {count})", (path,)))
    return True


def _shape_issue(value: object, spec: ElementSpec, path: str, *, in_array: bool = False) -> Issue:
    """The issue for a value of the wrong JSON shape where an object (or array of objects) is expected."""
    if not in_array:
        if spec.array:
            return Issue("structure", f"Expected an array for '{spec.name}', not {json_kind(value)}", (path,))
        if type(value) is list:
            return Issue("structure", f"Expected a single value for '{spec.name}', not an array", (path,))
    if type(value) is dict:
        return Issue("structure", "Empty objects are not allowed", (path,))
    return Issue("structure", f"Expected an object for a '{spec.type_name}' value, not {json_kind(value)}", (path,))


def _check_coded(value: dict[str, object], spec: ElementSpec, path: str, out: list[Issue]) -> None:
    """Required binding on Coding/CodeableConcept: codings from a system the value set draws on must be
    among its codes; codings from other systems are not judged (R4 terminologies.html#required)."""
    if spec.type_name == "Coding":
        _check_coding(value, spec, path, out)
        return
    codings = value.get("coding")
    if type(codings) is list:
        for index, coding in enumerate(codings):
            if type(coding) is dict:
                _check_coding(coding, spec, f"{path}.coding[{index}]", out)


def _check_coding(coding: dict[str, object], spec: ElementSpec, path: str, out: list[Issue]) -> None:
    system = coding.get("system")
    code = coding.get("code")
    if type(system) is str and type(code) is str:
        allowed = spec.systems.get(system) if spec.systems is not None else None
        if allowed is not None and code not in allowed:
            out.append(_binding_issue(code, spec, f"{path}.code"))


def _binding_issue(code: object, spec: ElementSpec, path: str) -> Issue:
    return Issue("value", f"Value {shown(code)} is not in the required value set {spec.value_set}", (path,))
