"""What the FHIRPath Patch code needs to know about R4 element types.

FHIRPath Patch speaks FHIRPath but edits JSON. The two differ in ways that need type
knowledge: ``Observation.value`` is the JSON property ``valueQuantity`` (R4 json.html#choice,
FHIRPath "Choice types"), children of a HumanName are defined as ``HumanName.given`` rather
than ``Patient.name.given``, and ``ofType(Quantity)`` must accept an ``Age``. fhirpathpy ships
exactly this for its own evaluator (its r4 model: path2Type, choiceTypePaths,
pathsDefinedElsewhere, type2Parent), so it is reused here rather than copied. The model has
no cardinalities; :func:`fhirflow.validation.element_repeats` answers those.

fhirpathpy is imported on first use only: it costs tens of milliseconds of cold start and
most requests never patch.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

# Types whose children are defined under the element's own path, not under a type name.
_PATH_SCOPED: Final = frozenset({"BackboneElement", "Element", "Resource", "DomainResource"})
_FHIRPATH_SYSTEM_STRING: Final = "System.String"


@dataclass(frozen=True, slots=True)
class R4Model:
    path_types: Mapping[str, str]
    choices: Mapping[str, Sequence[str]]
    defined_elsewhere: Mapping[str, str]
    type_parents: Mapping[str, str]
    raw: Any  # the model object fhirpathpy's evaluator takes as ``model=``

    def element_path(self, parent_base: str, name: str) -> str:
        """The definition path of child ``name``; recursive elements map to their definition
        (``Questionnaire.item.item`` is defined at ``Questionnaire.item``)."""
        path = f"{parent_base}.{name}"
        return self.defined_elsewhere.get(path, path)

    def type_of(self, element_path: str) -> str | None:
        found = self.path_types.get(element_path)
        if found is None:
            # id and extension are inherited from Element by every datatype and backbone element.
            found = self.path_types.get("Element." + element_path.rpartition(".")[2])
        if found == _FHIRPATH_SYSTEM_STRING:
            return "string"
        return found

    def choice_types(self, element_path: str) -> Sequence[str] | None:
        """Type suffixes allowed for a choice element (``["Quantity", "String", ...]``), else None."""
        return self.choices.get(element_path)

    def child_base(self, element_path: str, type_name: str | None) -> str:
        """The prefix under which the children of an element are defined."""
        if type_name and type_name[0].isupper() and type_name not in _PATH_SCOPED:
            return type_name
        return element_path

    def is_a(self, type_name: str, wanted: str) -> bool:
        """Whether ``type_name`` is ``wanted`` or derives from it; names compare case-insensitively
        so that FHIRPath's ``String`` and FHIR's ``string`` both match a string element."""
        wanted_folded = wanted.casefold()
        current: str | None = type_name
        for _ in range(16):  # the R4 hierarchy is at most a few levels deep
            if current is None:
                return False
            if current.casefold() == wanted_folded:
                return True
            current = self.type_parents.get(current)
        return False

    def type_for_suffix(self, suffix: str) -> str:
        """``valueDateTime`` holds a ``dateTime``: choice suffixes capitalise primitive type names."""
        lowered = suffix[:1].lower() + suffix[1:]
        return lowered if lowered in self.type_parents else suffix


@cache
def r4_model() -> R4Model:
    raw = importlib.import_module("fhirpathpy.models").models["r4"]
    return R4Model(
        path_types=raw["path2Type"],
        choices=raw["choiceTypePaths"],
        defined_elsewhere=raw["pathsDefinedElsewhere"],
        type_parents=raw["type2Parent"],
        raw=raw,
    )
