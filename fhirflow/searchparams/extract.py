"""Search index values of a resource: every parameter of its type, typed (DESIGN.md §4).

Expressions run as compiled walks (:mod:`fhirflow.searchparams.paths`) where the registry has
steps for them, and through fhirpathpy otherwise. ``Extractor(force_fhirpath=True)`` runs every
expression through fhirpathpy: the reference the tests compare the compiled walks with.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhirflow.searchparams import fhirpath
from fhirflow.searchparams.convert import CONVERTERS, Converter, to_positions
from fhirflow.searchparams.dates import date_range
from fhirflow.searchparams.paths import walk
from fhirflow.searchparams.registry import Component, Part, Registry, SearchParam, default_registry
from fhirflow.searchparams.values import CompositeValue, IndexValue

logger = logging.getLogger("fhirflow.searchparams")
_TAGS = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class IndexDocument:
    """What a backend indexes for one resource version (tenant and storage keys are the caller's)."""

    resource_type: str
    id: str | None
    version_id: str | None
    last_updated: int | None  # epoch milliseconds (the start of meta.lastUpdated)
    values: dict[str, list[IndexValue]]  # parameter code → values (parameters without values absent)
    compartments: tuple[tuple[str, str], ...]  # (compartment type, id), e.g. ("Patient", "123")
    text: str | None  # the narrative as plain text, for _text


@dataclass(frozen=True, slots=True)
class _Plan:
    param: SearchParam
    convert: Converter | None  # None for composites


@dataclass(frozen=True, slots=True)
class _TypePlan:
    """A type's parameters, indexed by the top-level element each needs (one of), so a resource
    only pays for the parameters whose elements it has."""

    plans: tuple[_Plan, ...]
    by_key: dict[str, tuple[int, ...]]
    always: tuple[int, ...]


def _first_keys(parts: tuple[Part, ...]) -> tuple[str, ...] | None:
    """Top-level keys one of which a resource needs for ``parts`` to select anything."""
    keys: list[str] = []
    for part in parts:
        steps = part.steps
        if not steps or steps[0][0] != "f" or steps[-1][0] == "b":  # "b" yields false on absence
            return None
        keys.extend(steps[0][1])
    return tuple(keys)


def _needed_keys(param: SearchParam) -> tuple[str, ...] | None:
    if param.type == "composite" and all(p.steps == () for p in param.parts):
        # composites on the resource itself (Observation code-value-*) need every component
        for component in reversed(param.components):
            keys = _first_keys(component.parts)
            if keys is not None:
                return keys
    return _first_keys(param.parts)


def _converter(param: SearchParam) -> Converter | None:
    if param.type == "special":
        return to_positions if param.code == "near" else None
    return CONVERTERS.get(param.type)


class Extractor:
    """Extraction plans per resource type for one registry."""

    def __init__(self, registry: Registry, *, force_fhirpath: bool = False) -> None:
        self.registry = registry
        self.force_fhirpath = force_fhirpath
        self._plans: dict[str, _TypePlan] = {}
        self._by_code: dict[tuple[str, str], tuple[_Plan, tuple[str, ...] | None] | None] = {}

    def _plan(self, resource_type: str) -> _TypePlan:
        found = self._plans.get(resource_type)
        if found is not None:
            return found
        plans: list[_Plan] = []
        by_key: dict[str, list[int]] = {}
        always: list[int] = []
        for param in self.registry.params_for(resource_type).values():
            convert = _converter(param)
            if not param.parts or (convert is None and param.type != "composite"):
                continue
            keys = _needed_keys(param)
            if keys is None or self.force_fhirpath:
                always.append(len(plans))
            for key in keys or ():
                by_key.setdefault(key, []).append(len(plans))
            plans.append(_Plan(param, convert))
        plan = _TypePlan(tuple(plans), {k: tuple(v) for k, v in by_key.items()}, tuple(always))
        self._plans[resource_type] = plan
        return plan

    def nodes(self, node: Any, part: Part, resource: dict[str, Any], base: str | None = None) -> list[Any]:
        """The elements one expression part selects from ``node`` (the resource, or an element
        of it whose model path is ``base``)."""
        if part.steps is not None and not self.force_fhirpath:
            return walk(node, part.steps)
        return fhirpath.evaluate(node, part.expression, resource=resource, base=base)

    def values(
        self, resource: dict[str, Any], codes: tuple[str, ...] | None = None, skip: frozenset[str] = frozenset()
    ) -> dict[str, list[IndexValue]]:
        """Parameter code → index values (only parameters with values); ``codes`` limits the work,
        ``skip`` leaves parameters out."""
        plan = self._plan(resource["resourceType"])
        selected = set(plan.always)
        for key in resource:
            indexes = plan.by_key.get(key)
            if indexes is not None:
                selected.update(indexes)
        out: dict[str, list[IndexValue]] = {}
        memo: dict[tuple[int, str], tuple[Any, list[IndexValue]]] = {}
        for index in sorted(selected):
            one = plan.plans[index]
            if (codes is not None and one.param.code not in codes) or one.param.code in skip:
                continue
            values = self._run(resource, one, memo)
            if values:
                out[one.param.code] = values
        return out

    def values_of(self, resource: dict[str, Any], code: str) -> list[IndexValue]:
        """The index values of one parameter, as :meth:`values` gives them, without looking at the
        type's other parameters: a subscription matcher asks for the two or three its candidate
        criteria name, one at a time, and only those it reaches."""
        rtype = resource["resourceType"]
        if (rtype, code) in self._by_code:
            found = self._by_code[(rtype, code)]
        else:
            plan = self._plan(rtype)
            found = None
            for index, one in enumerate(plan.plans):
                if one.param.code == code:
                    needs = tuple(k for k, indexes in plan.by_key.items() if index in indexes)
                    found = (one, None if index in plan.always else needs)
                    break
            self._by_code[(rtype, code)] = found
        if found is None:
            return []
        one, needed = found
        if needed is not None and not any(key in resource for key in needed):
            return []
        return self._run(resource, one, {})

    def _run(
        self, resource: dict[str, Any], one: _Plan, memo: dict[tuple[int, str], tuple[Any, list[IndexValue]]]
    ) -> list[IndexValue]:
        param, convert = one.param, one.convert
        if param.custom:
            values = self._custom(resource, param, convert, memo)
        elif convert is None:
            values = self._composite(resource, param, memo)
        else:
            values = self._simple(resource, param, convert)
        return list(dict.fromkeys(values)) if len(values) > 1 else values

    def _simple(self, resource: dict[str, Any], param: SearchParam, convert: Converter) -> list[IndexValue]:
        values: list[IndexValue] = []
        for part in param.parts:
            values.extend(convert(self.nodes(resource, part, resource), part.hint))
        return values

    def _custom(
        self,
        resource: dict[str, Any],
        param: SearchParam,
        convert: Converter | None,
        memo: dict[tuple[int, str], tuple[Any, list[IndexValue]]],
    ) -> list[IndexValue]:
        """A runtime SearchParameter's values. Its expression is user input that was only tried on
        an empty resource: one that fails on some data gives that resource no values for it,
        rather than failing the write's indexing (and every index write queued behind it)."""
        try:
            return self._composite(resource, param, memo) if convert is None else self._simple(resource, param, convert)
        except Exception:
            logger.warning(
                "a custom search parameter failed on a resource; no values",
                extra={"code": param.code, "type": resource.get("resourceType"), "id": resource.get("id")},
            )
            return []

    def _composite(
        self, resource: dict[str, Any], param: SearchParam, memo: dict[tuple[int, str], tuple[Any, list[IndexValue]]]
    ) -> list[IndexValue]:
        out: list[IndexValue] = []
        for part in param.parts:
            for node in self.nodes(resource, part, resource):
                per_component: list[list[IndexValue]] = []
                for component in param.components:
                    key = (id(node), component.definition)
                    cached = memo.get(key)
                    if cached is None:  # the memo keeps ``node`` alive, so its id stays unique
                        cached = memo[key] = (node, self._component(node, component, resource, part.hint))
                    found = cached[1]
                    if not found:
                        break
                    per_component.append(found)
                else:
                    out.extend(CompositeValue(combo) for combo in itertools.product(*per_component))
        return out

    def _component(
        self, node: Any, component: Component, resource: dict[str, Any], base: str | None
    ) -> list[IndexValue]:
        convert = CONVERTERS[component.type]
        found: list[IndexValue] = []
        for cpart in component.parts:
            found.extend(convert(self.nodes(node, cpart, resource, base), cpart.hint))
        if component.type == "token":  # a CodeableConcept.text entry matches no code
            found = [v for v in found if getattr(v, "code", None) is not None]
        return found


@lru_cache(maxsize=256)
def extractor_for(registry: Registry) -> Extractor:
    """Per registry object: the official one, and each tenant's with its own parameters (a tenant's
    registry is rebuilt when its parameters change, so the cache is bounded)."""
    return Extractor(registry)


def extract_index_values(resource: dict[str, Any], *, registry: Registry | None = None) -> dict[str, list[IndexValue]]:
    """Parameter code → typed values for every search parameter of the resource's type."""
    return extractor_for(registry or default_registry()).values(resource)


def narrative_text(resource: dict[str, Any]) -> str | None:
    """Resource.text.div without markup, for ``_text``."""
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    if not isinstance(div, str):
        return None
    import html  # the entity table costs a few ms; only narratives need it

    plain = _SPACES.sub(" ", html.unescape(_TAGS.sub(" ", div))).strip()
    return plain or None


def index_document(
    resource: dict[str, Any],
    *,
    registry: Registry | None = None,
    base_url: str | None = None,
    skip: frozenset[str] = frozenset(),
) -> IndexDocument:
    """Everything a backend indexes for ``resource``; ``base_url`` makes absolute references
    to this server count for compartments; ``skip``: parameters the backend does not store."""
    from fhirflow.searchparams.compartments import compartments_of  # avoids an import cycle

    registry = registry or default_registry()
    values = extractor_for(registry).values(resource, skip=skip)
    meta: dict[str, Any] = resource["meta"] if isinstance(resource.get("meta"), dict) else {}
    last_updated = meta.get("lastUpdated")
    updated = date_range(last_updated) if isinstance(last_updated, str) else None
    return IndexDocument(
        resource_type=resource["resourceType"],
        id=resource.get("id"),
        version_id=meta.get("versionId"),
        last_updated=updated[0] if updated else None,
        values=values,
        compartments=tuple(compartments_of(resource, values=values, registry=registry, base_url=base_url)),
        text=narrative_text(resource),
    )
