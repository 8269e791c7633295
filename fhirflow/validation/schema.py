"""The FHIR R4 structure model the validator walks, loaded once from ``data/r4.json.gz``.

The data file is produced by ``tools/gen_r4_schema.py`` from the official R4 core package; see that
script for its layout. Nothing is read at import time: :func:`schema` loads the file on first use,
and each type's element table is compiled the first time a resource or datatype of that type is seen.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any

import orjson

from fhirflow.validation.primitives import Checker, Problem, build_checkers

DATA_FILE = Path(__file__).resolve().parent / "data" / "r4.json.gz"

# How the validator treats an element's value.
PRIMITIVE = 0
COMPLEX = 1
RESOURCE = 2  # an element of type Resource: contained, Bundle.entry.resource, Parameters.parameter.resource
FORBIDDEN = 3  # max 0 in a core profile (SimpleQuantity.comparator)


class ElementSpec:
    """One JSON property of a complex type (a choice element has one spec per allowed ``valueXxx``)."""

    __slots__ = (
        "array",
        "checker",
        "choice",
        "codes",
        "ext_key",
        "kind",
        "max",
        "min",
        "name",
        "systems",
        "type_name",
        "typedef",
        "value_set",
    )

    def __init__(self, name: str, type_name: str, kind: int, *, array: bool, min_: int, max_: int) -> None:
        self.name = name
        self.ext_key = "_" + name  # json.html#primitive: extensions of a primitive live in "_<name>"
        self.type_name = type_name
        self.kind = kind
        self.array = array
        self.min = min_
        self.max = max_
        self.choice: str | None = None  # the element name ("value") of a choice element's variant
        self.checker: Checker = _not_primitive
        self.typedef: TypeDef | None = None  # resolved on first use (types refer to each other)
        self.value_set: str | None = None
        self.codes: frozenset[str] | None = None  # codes of a required binding, for ``code`` elements
        self.systems: dict[str, frozenset[str]] | None = None  # same, by system, for Coding/CodeableConcept


def _not_primitive(_value: object) -> Problem | None:
    """The checker of non-primitive elements, which are walked instead."""
    return None


class TypeDef:
    """A resource, complex datatype or backbone element, with its JSON properties."""

    __slots__ = ("elements", "is_resource", "name", "required")

    def __init__(self, name: str, is_resource: bool) -> None:
        self.name = name
        self.is_resource = is_resource
        self.elements: dict[str, ElementSpec] = {}
        # For each element with min >= 1: its name, its name as shown in diagnostics ("value[x]" for a
        # choice), the JSON keys any of which makes it present, and min.
        self.required: list[tuple[str, str, tuple[str, ...], int]] = []


class Schema:
    """The compiled R4 model: element tables by type, primitive checkers, expanded value sets."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw_types: dict[str, Any] = raw["types"]
        self._value_sets: dict[str, dict[str, list[str]]] = raw["valueSets"]
        self.checkers = build_checkers(raw["primitives"])
        self.resource_types = frozenset(
            name for name, t in self._raw_types.items() if t["kind"] == "resource" and not t["abstract"]
        )
        self._typedefs: dict[str, TypeDef] = {}
        self._summary: dict[str, frozenset[str]] = {}
        self._mandatory: dict[str, frozenset[str]] = {}

    def typedef(self, name: str) -> TypeDef:
        """The element table of a complex type, resource or backbone element (``Patient.contact``)."""
        found = self._typedefs.get(name)
        if found is None:
            found = self._typedefs[name] = self._compile(name)
        return found

    def resource(self, name: str) -> TypeDef | None:
        """The element table of a concrete resource type, or None for anything else."""
        if name not in self.resource_types:
            return None
        return self.typedef(name)

    def repeats(self, element_path: str) -> bool:
        """Whether the element at a definition path (``Patient.name``, ``HumanName.given``,
        ``Patient.contact.telecom``) is an array in JSON (max > 1). Unknown paths: False."""
        parent, _, name = element_path.rpartition(".")
        if parent not in self._raw_types:
            return False
        spec = self.typedef(parent).elements.get(name)
        return spec is not None and spec.array

    def top_level_names(self, resource_type: str, *, mandatory: bool) -> frozenset[str]:
        """JSON names of a resource's top-level elements that are isSummary (or, if ``mandatory``, have
        min >= 1), choices expanded. Cached for real resource types only, so bogus names cannot grow it."""
        if resource_type not in self.resource_types:
            return frozenset()
        cache = self._mandatory if mandatory else self._summary
        found = cache.get(resource_type)
        if found is None:
            names: set[str] = set()
            for element_name, min_, _max, _array, summary, _vs, type_ in self._raw_types[resource_type]["elements"]:
                if (min_ >= 1) if mandatory else summary:
                    names.update(type_ if isinstance(type_, dict) else (element_name,))
            found = cache[resource_type] = frozenset(names)
        return found

    def _compile(self, name: str) -> TypeDef:
        raw = self._raw_types[name]
        typedef = TypeDef(name, raw["kind"] == "resource")
        for element_name, min_, max_, array, _summary, value_set, type_ in raw["elements"]:
            variants = type_.items() if isinstance(type_, dict) else ((element_name, type_),)
            keys: list[str] = []
            for json_name, type_name in variants:
                spec = self._element(json_name, type_name, value_set, array=bool(array), min_=min_, max_=max_)
                if isinstance(type_, dict):
                    spec.choice = element_name
                typedef.elements[json_name] = spec
                keys.append(json_name)
                if spec.kind == PRIMITIVE:
                    keys.append(spec.ext_key)
            if min_ > 0:
                shown_name = f"{element_name}[x]" if isinstance(type_, dict) else element_name
                typedef.required.append((element_name, shown_name, tuple(keys), min_))
        return typedef

    def _element(
        self, name: str, type_name: str, value_set: str | None, *, array: bool, min_: int, max_: int
    ) -> ElementSpec:
        checker = self.checkers.get(type_name)
        if max_ == 0:
            kind = FORBIDDEN
        elif checker is not None:
            kind = PRIMITIVE
        elif type_name == "Resource":
            kind = RESOURCE
        else:
            kind = COMPLEX
        spec = ElementSpec(name, type_name, kind, array=array, min_=min_, max_=max_)
        if checker is not None:
            spec.checker = checker
        if value_set is not None:
            systems = {system: frozenset(codes) for system, codes in self._value_sets[value_set].items()}
            spec.value_set = value_set
            if kind == PRIMITIVE:
                spec.codes = frozenset().union(*systems.values())
            elif type_name in {"Coding", "CodeableConcept"}:
                spec.systems = systems
        return spec


@functools.cache
def schema() -> Schema:
    """The R4 model, read from the data file on first call and shared afterwards."""
    with gzip.open(DATA_FILE, "rb") as handle:
        raw = orjson.loads(handle.read())
    return Schema(raw)
