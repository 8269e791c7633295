"""Runtime SearchParameter resources: which ones the server accepts, and the parameters they add.

http://hl7.org/fhir/R4/searchparameter.html. An active SearchParameter written to the server
(create, update, patch, a bundle entry) is checked by :func:`check_search_parameter`: the server
refuses, with a 400 naming the element, one it could not index — an unknown base, type ``special`` (no
expression to index), an expression that is not FHIRPath or that fhirpathpy cannot evaluate, a
part of the expression for a type that is not a base, a code that a built-in parameter of the
same base already has, a reference target that is not a resource type, a composite whose
components do not resolve.

Only ``status = active`` parameters take effect. ``draft`` means "not yet ready for normal use"
(valueset-publication-status): indexing drafts would make every write pay for parameters nobody
may search, and activating one is the moment a reindex is due anyway. ``retired`` and
``unknown`` are ignored too. Those are stored without the check (the official R4 definitions are
``draft``, and a copy of one must not be refused): it runs when one becomes active.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from fhirflow.errors import InvalidResource
from fhirflow.searchparams.registry import COMMON_BASES, Registry, SearchParam, default_registry

logger = logging.getLogger("fhirflow.searchparams")

ACTIVE = "active"
INDEXABLE_TYPES = frozenset(("number", "date", "string", "token", "reference", "composite", "quantity", "uri"))


def _invalid(message: str, element: str) -> InvalidResource:
    return InvalidResource(
        f"This SearchParameter cannot be indexed: {message}", expression=f"SearchParameter.{element}"
    )


def _check_expression(text: Any, element: str) -> str:
    from fhirflow.searchparams.fhirpath import syntax_error

    if not isinstance(text, str) or not text.strip():
        raise _invalid(f"{element} is required for a parameter this server indexes", element)
    problem = syntax_error(text)
    if problem is not None:
        raise _invalid(f"{element} {text[:200]!r} is not valid FHIRPath ({problem})", element)
    return text


def _collides(registry: Registry, base: str, code: str) -> bool:
    """Whether a built-in parameter answers to ``code`` on ``base`` (on any type for a common base)."""
    if base in COMMON_BASES:
        return any(code in by_code and not by_code[code].custom for by_code in registry.params.values())
    found = registry.get(base, code)
    return found is not None and not found.custom


def check_search_parameter(resource: Mapping[str, Any], registry: Registry | None = None) -> list[SearchParam]:
    """The parameters ``resource`` adds (one per base), or InvalidResource saying why the server
    could not index it. Structural validation (required elements) has run before."""
    from fhirflow.searchparams.build import build_params
    from fhirflow.searchparams.compiler import leading_type
    from fhirflow.searchparams.paths import split_union

    registry = registry or default_registry()
    code, ptype, bases = resource.get("code"), resource.get("type"), resource.get("base") or []
    if ptype == "special":
        raise _invalid("type 'special' has no expression this server can index", "type")
    if ptype not in INDEXABLE_TYPES:
        raise _invalid(f"type {ptype!r} is not a search parameter type", "type")
    if not isinstance(code, str) or not code or code.startswith("_") or any(c in code for c in ".:$|,=? "):
        raise _invalid(f"code {code!r} must be a plain name that does not start with '_'", "code")
    for base in bases:
        if not (isinstance(base, str) and (registry.is_resource_type(base) or base in COMMON_BASES)):
            raise _invalid(f"base {base!r} is not a resource type", "base")
        if _collides(registry, base, code):
            raise _invalid(f"code '{code}' is already a built-in search parameter of {base}", "code")
    expression = _check_expression(resource.get("expression"), "expression")
    for part in split_union(expression):
        start = leading_type(part)
        if start is not None and registry.is_resource_type(start) and start not in bases:
            raise _invalid(
                f"the expression part {part.strip()[:120]!r} is for {start}, which is not a base", "expression"
            )
    for target in resource.get("target") or ():
        if not registry.is_resource_type(target):
            raise _invalid(f"target {target!r} is not a resource type", "target")
    components = resource.get("component") or []
    if ptype == "composite" and not components:
        raise _invalid("a composite parameter needs components", "component")
    for component in components:
        _check_expression(component.get("expression"), "component.expression")
    params = build_params([resource], registry=registry, custom=True)
    built = {p.base for p in params}
    for base in bases:
        if base not in built:
            raise _invalid(f"the expression has no part for base {base}", "expression")
    for param in params:
        _try_evaluate(param)
    return params


def _try_evaluate(param: SearchParam) -> None:
    """Run each part once on an empty resource of the base: fhirpathpy refuses unknown functions
    only when it evaluates them."""
    from fhirflow.searchparams import fhirpath

    rtype = "Patient" if param.base in COMMON_BASES else param.base
    empty = {"resourceType": rtype, "id": "x"}
    for part in param.parts:
        try:
            fhirpath.evaluate(empty, part.expression, resource=empty)
        except Exception as exc:  # fhirpathpy raises bare Exceptions ("Not implemented: foo")
            raise _invalid(f"the expression cannot be evaluated ({str(exc)[:120]})", "expression") from exc


def definition_digest(resource: Mapping[str, Any]) -> str:
    """What decides a parameter's index values (and whether it is in use): two resources with the
    same digest index the same values, so a change elsewhere (a description) needs no reindex."""
    definition = {
        "active": resource.get("status") == ACTIVE,
        "code": resource.get("code"),
        "type": resource.get("type"),
        "base": sorted(b for b in resource.get("base") or () if isinstance(b, str)),
        "expression": resource.get("expression"),
        "target": sorted(t for t in resource.get("target") or () if isinstance(t, str)),
        "component": [
            [c.get("definition"), c.get("expression")] for c in resource.get("component") or () if isinstance(c, dict)
        ],
    }
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()


def build_tenant_params(
    resources: Iterable[tuple[str, Mapping[str, Any]]], registry: Registry | None = None
) -> list[tuple[str, SearchParam]]:
    """(resource id, parameter) for the active ones of a tenant's stored SearchParameters.

    One that no longer builds (stored before a rule existed) is left out and logged rather than
    failing every write and search of the tenant; so is a second definition of a (base, code)
    (the lowest id wins) and one that would replace a built-in parameter."""
    from fhirflow.searchparams.build import build_params

    base_registry = registry or default_registry()
    active = [(id_, r) for id_, r in sorted(resources, key=lambda item: item[0]) if r.get("status") == ACTIVE]
    # Composites may name other custom parameters as components: build the others first.
    active.sort(key=lambda item: item[1].get("type") == "composite")
    current = base_registry
    out: list[tuple[str, SearchParam]] = []
    taken: set[tuple[str, str]] = set()
    for id_, resource in active:
        try:
            params = build_params([resource], registry=current, custom=True)
        except Exception:  # stored data must never fail every write and search of the tenant
            logger.warning("a stored SearchParameter cannot be indexed; ignored", extra={"id": id_})
            continue
        kept = [p for p in params if (p.base, p.code) not in taken and not _collides(base_registry, p.base, p.code)]
        if len(kept) != len(params):
            logger.warning("a stored SearchParameter repeats a parameter; ignored where it does", extra={"id": id_})
        taken.update((p.base, p.code) for p in kept)
        out.extend((id_, p) for p in kept)
        current = current.with_params(kept)
    return out


def registry_with(params: Sequence[SearchParam], registry: Registry | None = None) -> Registry:
    """``registry`` (the official one by default) plus ``params``; itself when there are none, so
    that tenants without parameters of their own share the official registry's caches."""
    base = registry or default_registry()
    return base.with_params(params) if params else base
