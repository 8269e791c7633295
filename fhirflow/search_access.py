"""The access policy's search constraint, pushed into the query (DESIGN.md §4, §5).

A policy that can constrain searches has ``search_constraint(request, resource_type)``, which
returns None (no constraint) or an AccessConstraint: alternatives of a compartment and granular
search parameters, and optionally the patients the principal may see. Each becomes an
:class:`~fhirflow.search_ports.AccessRule` whose parameters are parsed like any search's, so
the backend filters in the query itself and totals and paging stay exact. Included resources
are checked one by one with the policy's ``admits_resource`` when it has one, by the backend as it
walks (:func:`include_admission`).

In the kernel, not in the search service: search, conditional interactions (crud, bundle) and the
subscriptions service's listing all constrain their searches with it, and services never import
each other (docs/architecture.md, Layers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from fhirflow.errors import BadRequest
from fhirflow.model import FhirRequest
from fhirflow.ports import AccessPolicy
from fhirflow.query.ast import Query
from fhirflow.query.limits import limit_hops
from fhirflow.query.parser import parse
from fhirflow.search_ports import AccessRule, Admission, Admits


def access_rules(policy: AccessPolicy, request: FhirRequest, types: Sequence[str]) -> tuple[AccessRule, ...] | None:
    """The rules for ``types`` (none: a system search over every type), or None: unconstrained."""
    hook = getattr(policy, "search_constraint", None)
    if hook is None:
        return None
    rules: list[AccessRule] = []
    constrained = False
    for rtype in types or (None,):
        constraint = hook(request, rtype)
        if constraint is None:
            rules.append(AccessRule(rtype, (Admission(None),)))
            continue
        constrained = True
        rules.append(_rule(rtype, constraint))
    return tuple(rules) if constrained else None


def limit_chains(policy: AccessPolicy, request: FhirRequest, query: Query) -> Query:
    """``query`` with every chain and ``_has``, at every level, limited to the resources of its type
    that the principal may search (:mod:`fhirflow.query.limits`; each backend renders the rules), so
    a chain or reverse chain answers from what the principal may read, never from other patients'
    facts. A type the principal may not search at all is a 403, as searching it directly would be."""
    hook = getattr(policy, "search_constraint", None)
    if hook is None:
        return query

    def rule_for(rtype: str) -> AccessRule | None:
        constraint = hook(request, rtype)
        return None if constraint is None else _rule(rtype, constraint)

    return limit_hops(query, rule_for)


def reach(policy: AccessPolicy, request: FhirRequest, resource_type: str) -> str:
    """A stable name for what the principal may search of ``resource_type``: "" when it may search
    all of it, else its constraint (compartments, granular parameters, patients) in a canonical form.
    Conditional interactions key their uniqueness claims by it (:meth:`fhirflow.conditional.Criteria.key`)."""
    hook = getattr(policy, "search_constraint", None)
    constraint = hook(request, resource_type) if hook is not None else None
    if constraint is None:
        return ""
    alternatives = sorted(
        [list(alternative.compartment or ()), sorted([name, value] for name, value in alternative.filters)]
        for alternative in constraint.alternatives
    )
    patients = getattr(constraint, "patients", None)
    return orjson.dumps([alternatives, sorted(patients) if patients is not None else None]).decode()


def _rule(rtype: str | None, constraint: Any) -> AccessRule:
    admissions = []
    for alternative in constraint.alternatives:
        filters = tuple(alternative.filters)
        try:
            criteria = parse(rtype, filters, strict=True).criteria if filters else ()
        except BadRequest:
            continue  # a scope whose parameters cannot be evaluated admits nothing (as on read)
        admissions.append(Admission(alternative.compartment, criteria))
    patients = getattr(constraint, "patients", None)
    return AccessRule(rtype, tuple(admissions), frozenset(patients) if patients is not None else None)


def include_admission(policy: AccessPolicy, request: FhirRequest) -> Admits | None:
    """Whether the principal may read a resource a search would ``_include``/``_revinclude``
    (None: the policy has no such check, everything is admitted). The backends apply it round by
    round, so an ``:iterate`` never walks on from a resource the principal may not read."""
    admits = getattr(policy, "admits_resource", None)
    if admits is None:
        return None
    check: Callable[[FhirRequest, dict[str, Any]], bool] = admits
    return lambda resource: check(request, resource)
