"""A tenant's runtime search parameters as one immutable value, built from what a catalog stores.

Shared by the catalogs (SQLite and DynamoDB), whatever their storage: the definitions
(SearchParameter id → the generation its current definition began at, and its body) and the
searchable marks ``(id, since, base)`` become the registry writes index with and the one
searches parse against (fhirflow/reindex_ports.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhirflow.reindex_ports import CustomParam
from fhirflow.searchparams.registry import COMMON_BASES, Registry, default_registry


@dataclass(frozen=True, slots=True)
class TenantParams:
    generation: int
    index: Registry
    """What writes index: the official parameters and every active one of the tenant's."""
    search: Registry
    """What searches may use: the official parameters and the tenant's searchable ones."""
    custom: tuple[CustomParam, ...]
    since: dict[str, int]
    """SearchParameter id → the generation its current definition began at."""


def official(generation: int = 0) -> TenantParams:
    registry = default_registry()
    return TenantParams(generation, registry, registry, (), {})


def tenant_params(
    generation: int,
    definitions: Mapping[str, tuple[int, Mapping[str, Any]]],
    marks: set[tuple[str, int, str]],
) -> TenantParams:
    """The state of ``definitions`` (id → (since, body)) with ``marks`` (id, since, base)."""
    from fhirflow.searchparams.custom import build_tenant_params, registry_with

    if not definitions:
        return official(generation)
    since = {id_: at for id_, (at, _) in definitions.items()}
    built = build_tenant_params([(id_, body) for id_, (_, body) in definitions.items()])
    searchable = [p for id_, p in built if (id_, since[id_], p.base) in marks]
    custom = tuple(
        CustomParam(id_, p.url, p.code, p.base, p.type, (id_, since[id_], p.base) in marks) for id_, p in built
    )
    return TenantParams(generation, registry_with([p for _, p in built]), registry_with(searchable), custom, since)


def covers(base: str, types: Sequence[str]) -> bool:
    """A walk of ``types`` (every type when empty) met every resource a parameter of ``base`` applies to."""
    if not types:
        return True
    return base not in COMMON_BASES and base in types


def to_mark(state: TenantParams, types: Sequence[str], url: str | None, since: int) -> list[tuple[CustomParam, int]]:
    """The parameters a walk of ``types`` that started at generation ``since`` covered, with the
    generation their definition began at (the mark names it)."""
    out: list[tuple[CustomParam, int]] = []
    for param in state.custom:
        defined = state.since.get(param.id)
        if defined is None or defined > since or (url is not None and param.url != url):
            continue
        if covers(param.base, types):
            out.append((param, defined))
    return out
