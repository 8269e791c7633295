"""Limiting chains and ``_has`` to what the searcher may see (issue 14; DESIGN.md §5).

A chain (``subject:Patient.name=x``) or reverse chain (``_has:Observation:patient:code=y``) tests
*other* resources than those returned. Limiting only the returned ones lets a search tell facts
about resources the searcher may not read (another patient's name, codes, birth date). So every
hop carries the access rule of its type (:attr:`~fhirflow.query.ast.Chain.access`), which each
search backend renders as it renders the top-level rules. This module is the one place that
walks the AST to put them there (``_list``, a reverse chain from a List, becomes one when the
List type is limited); the search use case and conditional criteria take the rules from
the access policy, the export worker from the job the token started.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from fhirflow.query.ast import Chain, Criterion, Filter, Has, Query, SpecialQuery

if TYPE_CHECKING:
    from fhirflow.search_ports import AccessRule

RuleFor = Callable[[str], "AccessRule | None"]
"""The rule for a resource type (None: the searcher may see every resource of it)."""


def hop_types(query: Query) -> set[str]:
    """The resource types the query's chains and ``_has`` look at, at every level."""
    found: set[str] = set()
    for written in query.criteria:
        criterion = written
        if isinstance(criterion, Filter) and _is_list(criterion):
            found.add("List")
        while not isinstance(criterion, Filter):
            found.add(criterion.target_type if isinstance(criterion, Chain) else criterion.source_type)
            criterion = criterion.criterion
    return found


def _is_list(criterion: Filter) -> bool:
    return criterion.param.code == "_list" and criterion.modifier is None


def list_as_has(criterion: Filter) -> Has:
    """``_list=a,b`` as the reverse chain it is, ``_has:List:item:_id=a,b`` (search.html#list: the
    resources that List a or b holds as ``entry.item``), so the List itself can carry a rule too."""
    from fhirflow.query.parser import parse
    from fhirflow.searchparams.registry import default_registry

    ids = ",".join(value.value for value in criterion.values if isinstance(value, SpecialQuery))
    (by_id,) = parse("List", [("_id", ids)], strict=True).criteria
    item = default_registry().get("List", "item")
    assert item is not None, "List.item is an official R4 search parameter"
    return Has("List", item, by_id)


def limit_hops(query: Query, rule_for: RuleFor) -> Query:
    """``query`` with every chain and ``_has`` hop limited by ``rule_for`` its type (each type asked once)."""
    if all(isinstance(criterion, Filter) and not _is_list(criterion) for criterion in query.criteria):
        return query
    rules: dict[str, AccessRule | None] = {}

    def rule(rtype: str) -> AccessRule | None:
        if rtype not in rules:
            rules[rtype] = rule_for(rtype)
        return rules[rtype]

    def limited(criterion: Criterion) -> Criterion:
        if isinstance(criterion, Filter) and _is_list(criterion):
            lists = rule("List")
            return criterion if lists is None else dataclasses.replace(list_as_has(criterion), access=lists)
        if isinstance(criterion, Chain):
            inner = limited(criterion.criterion)
            return dataclasses.replace(criterion, criterion=inner, access=rule(criterion.target_type))
        if isinstance(criterion, Has):
            inner = limited(criterion.criterion)
            return dataclasses.replace(criterion, criterion=inner, access=rule(criterion.source_type))
        return criterion

    return dataclasses.replace(query, criteria=tuple(limited(criterion) for criterion in query.criteria))
