"""The search parameter registry: every R4 SearchParameter, per resource type, plus runtime ones.

Built at development time by ``tools/gen_search_registry.py`` into ``data/registry.json.gz``
from the official R4 definitions and CompartmentDefinitions; loaded on first use (never at
import time) by :func:`default_registry`. Runtime SearchParameter resources are added with
:meth:`Registry.with_custom`, which returns a new registry (values for them exist once the
resources are reindexed).

Parameters for all resources (search.html#all) live under the pseudo-type ``Resource``
(``DomainResource`` for ``_text``) and are found by :meth:`Registry.get` for every type:

- ``_id`` token, ``_lastUpdated`` date, ``_tag``/``_security`` token, ``_profile``/``_source`` uri:
  ordinary expressions on ``Resource.id``/``Resource.meta``, extracted like any parameter;
- ``_text`` (narrative) and ``_content`` (whole resource) are string parameters without an
  expression: full-text search that a backend implements from the narrative/JSON, or refuses;
- ``_list`` is a ``special`` parameter without expression (membership in a List);
- ``_query`` has no expression: named queries are not supported (the parser reports it);
- ``_has`` (reverse chaining), ``_type`` and the result parameters (``_sort``, ``_count``,
  ``_include``...) are syntax, handled by :mod:`fhirflow.query`, not parameters.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from fhirflow.searchparams.paths import Step, steps_from_json, steps_to_json

ParamType = Literal["number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"]
PARAM_TYPES: frozenset[str] = frozenset(
    ("number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special")
)
COMMON_BASES = ("Resource", "DomainResource")
DATA_FILE = os.path.join(os.path.dirname(__file__), "data", "registry.json.gz")


@dataclass(frozen=True, slots=True)
class Part:
    """One ``|`` member of an expression: compiled steps, or None to evaluate ``expression``
    with fhirpathpy. ``hint`` is the FHIR type of the nodes when it is known statically."""

    expression: str
    steps: tuple[Step, ...] | None
    hint: str | None


@dataclass(frozen=True, slots=True)
class Component:
    """A composite parameter's component: its own code and type, and an expression relative
    to the composite's nodes (whose model path is the composite part's ``hint``)."""

    code: str
    type: ParamType
    definition: str
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class SearchParam:
    code: str
    type: ParamType
    base: str  # the resource type this definition is for; "Resource"/"DomainResource" for common ones
    url: str
    expression: str | None  # the part of the official expression for this base; None: no extraction
    targets: tuple[str, ...] = ()  # reference target types
    parts: tuple[Part, ...] = ()
    components: tuple[Component, ...] = ()
    custom: bool = False  # defined by a runtime SearchParameter resource

    @property
    def is_common(self) -> bool:
        return self.base in COMMON_BASES


@dataclass(slots=True, eq=False)
class Registry:
    """Search parameters by resource type and code, and the compartment definitions.

    Compared and hashed by identity: extraction plans are cached per registry."""

    resource_types: frozenset[str]
    params: dict[str, dict[str, SearchParam]]  # resource type (or Resource/DomainResource) → code → param
    compartments: dict[str, dict[str, tuple[str, ...]]]  # compartment type → resource type → param codes
    non_domain: frozenset[str] = frozenset()  # resource types that are not DomainResources
    _merged: dict[str, dict[str, SearchParam]] = field(default_factory=dict, repr=False)

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        """The parameter ``code`` on ``resource_type`` (own parameters first, then common ones)."""
        own = self.params.get(resource_type)
        if own is not None and code in own:
            return own[code]
        common = self.params["Resource"].get(code)
        if common is not None:
            return common
        if resource_type not in self.non_domain:
            return self.params.get("DomainResource", {}).get(code)
        return None

    def params_for(self, resource_type: str) -> dict[str, SearchParam]:
        """Every parameter that applies to ``resource_type``, common ones included."""
        merged = self._merged.get(resource_type)
        if merged is None:
            merged = dict(self.params["Resource"])
            if resource_type not in self.non_domain:
                merged.update(self.params.get("DomainResource", {}))
            merged.update(self.params.get(resource_type, {}))
            self._merged[resource_type] = merged
        return merged

    def common(self, code: str) -> SearchParam | None:
        return self.params["Resource"].get(code) or self.params.get("DomainResource", {}).get(code)

    def is_resource_type(self, name: str) -> bool:
        return name in self.resource_types

    def by_url(self, url: str) -> SearchParam | None:
        for by_code in self.params.values():
            for param in by_code.values():
                if param.url == url:
                    return param
        return None

    def compartment_types(self) -> tuple[str, ...]:
        return tuple(self.compartments)

    def compartment_params(self, compartment: str, resource_type: str) -> tuple[str, ...]:
        """Codes whose references put a ``resource_type`` in a ``compartment`` ("{def}" excluded)."""
        return self.compartments.get(compartment, {}).get(resource_type, ())

    def with_custom(self, searchparameters: Iterable[Mapping[str, Any]]) -> Registry:
        """A new registry with runtime SearchParameter resources added (same code on a base
        replaces the official definition). Invalid resources raise InvalidResource."""
        from fhirflow.searchparams.build import build_params  # compiler needs the FHIR model

        return self.with_params(build_params(list(searchparameters), registry=self, custom=True))

    def with_params(self, added: Iterable[SearchParam]) -> Registry:
        """A new registry with ``added`` (already built) parameters, each under its base."""
        params = {rtype: dict(by_code) for rtype, by_code in self.params.items()}
        for param in added:
            params.setdefault(param.base, {})[param.code] = param
        return Registry(self.resource_types, params, self.compartments, self.non_domain)


# ---------------------------------------------------------------------------------------------
# JSON form (the data file)


def part_to_json(part: Part) -> list[Any]:
    return [part.expression, None if part.steps is None else steps_to_json(part.steps), part.hint]


def part_from_json(data: list[Any]) -> Part:
    return Part(data[0], None if data[1] is None else steps_from_json(data[1]), data[2])


def param_to_json(param: SearchParam) -> dict[str, Any]:
    out: dict[str, Any] = {"t": param.type, "u": param.url, "x": param.expression}
    if param.targets:
        out["tg"] = list(param.targets)
    if param.parts:
        out["p"] = [part_to_json(p) for p in param.parts]
    if param.components:
        out["cp"] = [[c.code, c.type, c.definition, [part_to_json(p) for p in c.parts]] for c in param.components]
    return out


def param_from_json(base: str, code: str, data: dict[str, Any]) -> SearchParam:
    return SearchParam(
        code=code,
        type=cast(ParamType, data["t"]),
        base=base,
        url=data["u"],
        expression=data["x"],
        targets=tuple(data.get("tg", ())),
        parts=tuple(part_from_json(p) for p in data.get("p", ())),
        components=tuple(
            Component(c[0], cast(ParamType, c[1]), c[2], tuple(part_from_json(p) for p in c[3]))
            for c in data.get("cp", ())
        ),
    )


def registry_from_json(data: Mapping[str, Any]) -> Registry:
    params = {
        rtype: {code: param_from_json(rtype, code, p) for code, p in by_code.items()}
        for rtype, by_code in data["params"].items()
    }
    compartments = {
        comp: {rtype: tuple(codes) for rtype, codes in by_type.items()}
        for comp, by_type in data["compartments"].items()
    }
    return Registry(frozenset(data["resourceTypes"]), params, compartments, frozenset(data["nonDomain"]))


_lock = threading.Lock()
_default: list[Registry] = []


def default_registry() -> Registry:
    """The official R4 registry, loaded from the packaged data file on first call."""
    if not _default:
        with _lock:
            if not _default:
                with open(DATA_FILE, "rb") as data:
                    raw = gzip.decompress(data.read())
                _default.append(registry_from_json(json.loads(raw)))
    return _default[0]
