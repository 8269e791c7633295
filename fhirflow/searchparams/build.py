"""SearchParameter resources → :class:`SearchParam` entries, one per base type.

Shared by the generator (official definitions, at development time) and by
:meth:`Registry.with_custom` (runtime SearchParameter resources). A combined expression such
as ``AllergyIntolerance.code | Condition.code | ...`` is split so that each base keeps only
its own members; each member is compiled to steps where the subset allows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from fhirflow.errors import InvalidResource
from fhirflow.searchparams.compiler import TypeModel, compile_part, leading_type
from fhirflow.searchparams.paths import split_union
from fhirflow.searchparams.registry import COMMON_BASES, PARAM_TYPES, Component, ParamType, Part, SearchParam

if TYPE_CHECKING:
    from fhirflow.searchparams.registry import Registry

ComponentLookup = Callable[[str], tuple[str, ParamType] | None]


def expression_for(base: str, expression: str, bases: Sequence[str]) -> list[str]:
    """The members of ``expression`` that apply to ``base``."""
    parts = split_union(expression)
    if len(bases) == 1:
        return parts
    return [p for p in parts if leading_type(p) in (base, None, *COMMON_BASES)]


def compile_parts(texts: Sequence[str], base: str, model: TypeModel, *, context: str | None = None) -> tuple[Part, ...]:
    out: list[Part] = []
    for text in texts:
        relative = context or (None if leading_type(text) else base)
        compiled = compile_part(text, model, context=relative)
        if compiled is None:
            out.append(Part(text, None, None))
        else:
            out.append(Part(text, compiled.steps, compiled.hint))
    return tuple(out)


def _contexts_of(texts: Sequence[str], base: str, model: TypeModel) -> list[str | None]:
    """Model paths of the nodes each member selects (where composite components evaluate)."""
    out: list[str | None] = []
    for text in texts:
        compiled = compile_part(text, model, context=None if leading_type(text) else base)
        out.append(compiled.context if compiled else None)
    return out


def _component_parts(
    texts: Sequence[str], base: str, contexts: Sequence[str | None], model: TypeModel
) -> tuple[Part, ...]:
    """Component members compiled for every context; steps are kept only where all agree
    (``Observation | Observation.component`` both reach ``code`` through the same key)."""
    fallback = tuple(Part(t, None, None) for t in texts)
    if not contexts or None in contexts:
        return fallback
    variants = {compile_parts(texts, base, model, context=c) for c in contexts}
    return variants.pop() if len(variants) == 1 else fallback


def _components(
    resource: Mapping[str, Any], base: str, contexts: Sequence[str | None], model: TypeModel, lookup: ComponentLookup
) -> tuple[Component, ...]:
    out: list[Component] = []
    for comp in resource.get("component", ()):
        definition = comp.get("definition", "")
        found = lookup(definition)
        if found is None:
            raise InvalidResource(
                f"SearchParameter {resource.get('url')}: component definition {definition!r} is unknown",
                expression="SearchParameter.component.definition",
            )
        code, ptype = found
        parts = _component_parts(split_union(comp.get("expression", "")), base, contexts, model)
        out.append(Component(code, ptype, definition, parts))
    return tuple(out)


def _validate(resource: Mapping[str, Any], resource_types: Collection[str]) -> tuple[str, ParamType, list[str]]:
    where = f"SearchParameter {resource.get('url') or resource.get('id') or ''}".strip()
    if resource.get("resourceType") != "SearchParameter":
        raise InvalidResource(f"{where}: not a SearchParameter", expression="resourceType")
    code, ptype, bases = resource.get("code"), resource.get("type"), resource.get("base")
    if not isinstance(code, str) or not code or any(c in code for c in ".:$|,= "):
        raise InvalidResource(f"{where}: code must be a plain name", expression="SearchParameter.code")
    if ptype not in PARAM_TYPES:
        raise InvalidResource(f"{where}: unknown type {ptype!r}", expression="SearchParameter.type")
    if not isinstance(bases, list) or not bases:
        raise InvalidResource(f"{where}: base is required", expression="SearchParameter.base")
    for base in bases:
        if base not in resource_types and base not in COMMON_BASES:
            raise InvalidResource(f"{where}: unknown base {base!r}", expression="SearchParameter.base")
    if ptype != "special" and not resource.get("expression") and code not in ("_text", "_content", "_query"):
        raise InvalidResource(f"{where}: expression is required", expression="SearchParameter.expression")
    return code, cast(ParamType, ptype), list(bases)


def build_param(
    resource: Mapping[str, Any],
    *,
    model: TypeModel,
    resource_types: Collection[str],
    lookup: ComponentLookup,
    custom: bool = False,
) -> list[SearchParam]:
    """One SearchParam per base of a SearchParameter resource."""
    code, ptype, bases = _validate(resource, resource_types)
    expression = resource.get("expression")
    url = resource.get("url") or f"urn:fhirflow:searchparameter:{code}"
    targets = tuple(sorted(resource.get("target", ())))
    out: list[SearchParam] = []
    for base in bases:
        texts = expression_for(base, expression, bases) if expression else []
        if expression and not texts:
            continue
        contexts = _contexts_of(texts, base, model) if ptype == "composite" else []
        out.append(
            SearchParam(
                code=code,
                type=ptype,
                base=base,
                url=url,
                expression=" | ".join(texts) or None,
                targets=targets if ptype == "reference" else (),
                parts=compile_parts(texts, base, model),
                components=_components(resource, base, contexts, model, lookup) if ptype == "composite" else (),
                custom=custom,
            )
        )
    return out


def build_params(
    resources: Sequence[Mapping[str, Any]],
    *,
    registry: Registry | None = None,
    resource_types: Collection[str] | None = None,
    model: TypeModel | None = None,
    custom: bool = False,
) -> list[SearchParam]:
    """SearchParams for a batch of SearchParameter resources; components may refer to one
    another within the batch or to parameters already in ``registry``."""
    model = model or TypeModel.r4()
    types: Collection[str] = (
        resource_types if resource_types is not None else (registry.resource_types if registry else ())
    )
    by_url = {r.get("url"): (r.get("code"), r.get("type")) for r in resources if r.get("url")}

    def lookup(url: str) -> tuple[str, ParamType] | None:
        if url in by_url:
            code, ptype = by_url[url]
            return cast(str, code), cast(ParamType, ptype)
        known = registry.by_url(url) if registry else None
        return (known.code, known.type) if known else None

    out: list[SearchParam] = []
    for resource in resources:
        out.extend(build_param(resource, model=model, resource_types=types, lookup=lookup, custom=custom))
    return out
