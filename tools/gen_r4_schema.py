"""Generate ``fhirflow/validation/data/r4.json.gz`` from the official FHIR R4 (4.0.1) core package.

Developers run this (``make generate``); the product never reads the package at run time, only the
compact file written here. The output is deterministic: sorted keys and code lists, and a gzip
header without file name or timestamp, so regenerating an unchanged package changes no byte.

What goes into the file (read by :mod:`fhirflow.validation.schema`):

``primitives``
    For each primitive type its JSON representation (http://hl7.org/fhir/R4/json.html#primitive) and the
    regex the StructureDefinition carries on ``<type>.value`` (extension
    ``http://hl7.org/fhir/StructureDefinition/regex``).
``types``
    Every complex datatype, every resource (abstract ones flagged), the core datatype profiles the base
    definitions refer to (SimpleQuantity), and every backbone element under its path (``Patient.contact``).
    Each type lists its elements as ``[name, min, max, array, isSummary, valueSet, type]``: ``max`` is -1
    for ``*``; ``array`` says whether JSON carries the element as an array; ``valueSet`` is the canonical
    of a *required* binding that could be expanded from the package, else null; ``type`` is a type name,
    or for a choice element (``value[x]``) a map from each JSON name (``valueQuantity``) to its type.
``valueSets``
    For each required-bound value set that expands from the package alone: ``{system: [codes]}``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGE = ROOT.parent / "shared" / "fhir-r4" / "hl7.fhir.r4.core"
DEFAULT_OUTPUT = ROOT / "fhirflow" / "validation" / "data" / "r4.json.gz"

REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
FHIRPATH_PREFIX = "http://hl7.org/fhirpath/System."
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"

# JSON representation of primitives (json.html#primitive): these four are JSON numbers, boolean is a JSON
# boolean, everything else a JSON string. Not derivable from the StructureDefinitions: R4 declares the
# value of positiveInt and unsignedInt as System.String.
JSON_NUMBER_TYPES = {"integer", "decimal", "positiveInt", "unsignedInt"}

# Resource.id is documented as type ``id`` (resource.html#Resource), but the R4 snapshot records the
# FHIRPath type of every ``id`` element as plain string; the id rules must still apply to resource ids.
TYPE_OVERRIDES = {"Resource.id": "id"}


class Unexpandable(Exception):
    """A value set whose content is not fully known from the package (external code system, filter...)."""


def load_package(package: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """StructureDefinitions, ValueSets and CodeSystems by canonical url (names are not unique: the
    extension rendering-markdown is also named "markdown")."""
    sds: dict[str, Any] = {}
    value_sets: dict[str, Any] = {}
    code_systems: dict[str, Any] = {}
    for path in sorted(package.glob("*.json")):
        if path.name == "package.json":
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        kind = data.get("resourceType")
        if kind == "StructureDefinition":
            sds[data["url"]] = data
        elif kind == "ValueSet":
            value_sets[data["url"]] = data
        elif kind == "CodeSystem":
            code_systems[data["url"]] = data
    return sds, value_sets, code_systems


def wanted_structures(sds: dict[str, Any]) -> list[dict[str, Any]]:
    """Base resources and datatypes (specializations), plus the datatype profiles the base model uses."""
    out = []
    for sd in sds.values():
        if sd["kind"] == "logical" or sd["kind"] == "primitive-type":
            continue
        if sd.get("derivation") == "specialization" or sd["name"] in {"Resource", "Element"}:
            out.append(sd)
    out.extend(sds[url] for url in sorted(referenced_profiles(out)))
    return sorted(out, key=lambda sd: str(sd["name"]))


def referenced_profiles(structures: Iterable[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for sd in structures:
        for element in sd["snapshot"]["element"]:
            for type_ in element.get("type", []):
                names.update(type_.get("profile", []))
    return names


def primitive_table(sds: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    table: dict[str, dict[str, str | None]] = {}
    for sd in sds.values():
        if sd["kind"] != "primitive-type":
            continue
        regex = None
        for element in sd["snapshot"]["element"]:
            if element["path"] == f"{sd['type']}.value":
                for ext in element["type"][0].get("extension", []):
                    if ext["url"] == REGEX_EXT:
                        regex = ext["valueString"]
        if sd["name"] == "boolean":
            json_kind = "boolean"
        elif sd["name"] in JSON_NUMBER_TYPES:
            json_kind = "number"
        else:
            json_kind = "string"
        table[sd["name"]] = {"json": json_kind, "regex": regex}
    return table


def type_name(element: dict[str, Any], type_: dict[str, Any]) -> str:
    """The FHIR type of one ``element.type`` entry (profiles on core datatypes resolved to the profile)."""
    base_path = element.get("base", {}).get("path")
    if base_path in TYPE_OVERRIDES:
        return TYPE_OVERRIDES[base_path]
    code: str = type_["code"]
    if code.startswith(FHIRPATH_PREFIX):
        for ext in type_.get("extension", []):
            if ext["url"] == FHIR_TYPE_EXT:
                return str(ext.get("valueUrl") or ext.get("valueUri"))
        return "string"
    profiles = type_.get("profile", [])
    if len(profiles) == 1 and profiles[0].startswith(SD_PREFIX):
        return str(profiles[0].removeprefix(SD_PREFIX))
    return code


def element_type(element: dict[str, Any], own_path: str, has_children: bool) -> str | dict[str, str]:
    if "contentReference" in element:
        return str(element["contentReference"]).lstrip("#")
    types = element["type"]
    if element["path"].endswith("[x]"):
        base = own_path.rsplit(".", 1)[-1].removesuffix("[x]")
        return {base + t["code"][0].upper() + t["code"][1:]: type_name(element, t) for t in types}
    if has_children:
        # An anonymous structure (BackboneElement, or Element in datatypes such as Timing.repeat).
        return own_path
    assert len(types) == 1, element["path"]
    return type_name(element, types[0])


def structure_types(sd: dict[str, Any], bound: set[str]) -> dict[str, Any]:
    """The type entries of one StructureDefinition: itself and each of its backbone elements."""
    elements = sd["snapshot"]["element"]
    root = elements[0]["path"]
    paths = {e["path"] for e in elements}
    parents = {p.rsplit(".", 1)[0] for p in paths if "." in p}
    entries: dict[str, list[list[Any]]] = {}
    for element in elements[1:]:
        # Constraint profiles keep the base type in their paths (Quantity.x for SimpleQuantity).
        own_path = sd["name"] + element["path"][len(root) :]
        parent, name = own_path.rsplit(".", 1)
        binding = element.get("binding", {})
        value_set = None
        if binding.get("strength") == "required" and binding.get("valueSet"):
            value_set = binding["valueSet"].split("|")[0]
            bound.add(value_set)
        max_ = -1 if element["max"] == "*" else int(element["max"])
        # JSON array-ness follows the base definition (json.html#arrays), even where a profile narrows max.
        array = int(element["base"]["max"] != "1")
        type_ = element_type(element, own_path, element["path"] in parents)
        summary = int(bool(element.get("isSummary")))
        entry = [name.removesuffix("[x]"), element["min"], max_, array, summary, value_set, type_]
        entries.setdefault(parent, []).append(entry)
    out: dict[str, Any] = {}
    for path, elems in entries.items():
        kind = "backbone" if "." in path else sd["kind"]
        out[path] = {"kind": kind, "abstract": bool(sd.get("abstract")) and path == sd["name"], "elements": elems}
    return out


class ValueSetExpander:
    """Expands value sets using only the package's own CodeSystems and ValueSets."""

    def __init__(self, value_sets: dict[str, Any], code_systems: dict[str, Any]) -> None:
        self.value_sets = value_sets
        self.code_systems = code_systems
        self.cache: dict[str, dict[str, set[str]] | None] = {}

    def expand(self, url: str) -> dict[str, set[str]] | None:
        """{system: codes}, or None when the package alone cannot tell which codes are in it."""
        if url not in self.cache:
            self.cache[url] = None  # guards against include cycles
            try:
                self.cache[url] = self._expand(url)
            except Unexpandable:
                self.cache[url] = None
        return self.cache[url]

    def _expand(self, url: str) -> dict[str, set[str]]:
        vs = self.value_sets.get(url)
        if vs is None or "compose" not in vs:
            raise Unexpandable(url)
        result: dict[str, set[str]] = {}
        for include in vs["compose"].get("include", []):
            for system, codes in self._component(include).items():
                result.setdefault(system, set()).update(codes)
        for exclude in vs["compose"].get("exclude", []):
            for system, codes in self._component(exclude).items():
                result.get(system, set()).difference_update(codes)
        return {system: codes for system, codes in result.items() if codes}

    def _component(self, component: dict[str, Any]) -> dict[str, set[str]]:
        """One include/exclude: the intersection of its system part and each of its value sets."""
        if component.get("filter"):
            raise Unexpandable("filter")
        parts: list[dict[str, set[str]]] = []
        if "system" in component:
            system = component["system"]
            if "concept" in component:
                parts.append({system: {c["code"] for c in component["concept"]}})
            else:
                parts.append({system: self._all_codes(system)})
        for url in component.get("valueSet", []):
            expansion = self.expand(url.split("|")[0])
            if expansion is None:
                raise Unexpandable(url)
            parts.append(expansion)
        if not parts:
            raise Unexpandable("empty component")
        result = parts[0]
        for other in parts[1:]:
            result = {s: c & other[s] for s, c in result.items() if s in other}
        return result

    def _all_codes(self, system: str) -> set[str]:
        cs = self.code_systems.get(system)
        if cs is None or cs.get("content") != "complete":
            raise Unexpandable(system)
        codes: set[str] = set()
        stack = list(cs.get("concept", []))
        while stack:
            concept = stack.pop()
            codes.add(concept["code"])
            stack.extend(concept.get("concept", []))
        return codes


def build(package: Path) -> dict[str, Any]:
    sds, value_sets, code_systems = load_package(package)
    bound: set[str] = set()
    types: dict[str, Any] = {}
    for sd in wanted_structures(sds):
        types.update(structure_types(sd, bound))
    expander = ValueSetExpander(value_sets, code_systems)
    expansions: dict[str, dict[str, list[str]]] = {}
    for url in sorted(bound):
        expansion = expander.expand(url)
        if expansion is not None:
            expansions[url] = {system: sorted(codes) for system, codes in sorted(expansion.items())}
    for entry in types.values():
        for element in entry["elements"]:
            if element[5] not in expansions:
                element[5] = None
    return {
        "fhirVersion": "4.0.1",
        "primitives": primitive_table(sds),
        "types": types,
        "valueSets": expansions,
    }


def write(data: dict[str, Any], output: Path) -> int:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    buffer = io.BytesIO()
    # mtime=0 and no file name keep the output byte-for-byte reproducible.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(buffer.getvalue())
    return len(buffer.getvalue())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--package", type=Path, default=DEFAULT_PACKAGE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    data = build(args.package)
    size = write(data, args.output)
    print(f"wrote {args.output} ({size} bytes, {len(data['types'])} types, {len(data['valueSets'])} value sets)")


if __name__ == "__main__":
    main()
