"""What the token that started an export may read, kept in the job and pushed into the worker's
queries (DESIGN.md §5: "export is limited to what the token may read").

At kick-off, each requested type goes through the access policy: ``authorize(request, "export",
type)`` (the interaction as a whole) and, when the policy can constrain searches,
``search_constraint(request, type, "r")`` (SMART: compartments and granular scopes; a
patient-context token gets its patient's compartment). The constraint is stored in the job as
:class:`~fhirflow_contracts.TypeAccess` records; the worker, which runs long after the token is
gone, turns them back into the search port's :class:`~fhirflow.search_ports.AccessRule` so the
backend filters in the query itself, exactly as a search by the same token would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fhirflow.errors import BadRequest, FhirError
from fhirflow.model import FhirRequest
from fhirflow.ports import AccessPolicy
from fhirflow.query.parser import parse
from fhirflow.search_ports import AccessRule, Admission

if TYPE_CHECKING:
    from fhirflow_contracts import ExportJob, TypeAccess


def readable_types(
    policy: AccessPolicy, request: FhirRequest, types: Sequence[str], *, explicit: bool
) -> tuple[list[str], list[TypeAccess] | None]:
    """The types the token may export and their constraints (None: none constrained).

    ``explicit`` types (``_type``) must all be readable, else 403; of the default types, those the
    token may not read are left out, and 403 only when none is left.
    """
    from fhirflow_contracts import ExportAdmission, TypeAccess

    if not types:
        return [], None  # nothing asked for (lenient handling ignored every type named)
    hook = getattr(policy, "search_constraint", None)
    readable: list[str] = []
    accesses: list[TypeAccess] = []
    refused: FhirError | None = None
    for rtype in types:
        try:
            policy.authorize(request, "export", rtype)
            constraint = hook(request, rtype, "r") if hook is not None else None
        except FhirError as error:
            if error.status != 403 or explicit:
                raise
            refused = error
            continue
        readable.append(rtype)
        if constraint is None:
            continue
        patients = getattr(constraint, "patients", None)
        accesses.append(
            TypeAccess(
                resource_type=rtype,
                alternatives=[
                    ExportAdmission(compartment=a.compartment, filters=list(a.filters)) for a in constraint.alternatives
                ],
                patients=sorted(patients) if patients is not None else None,
            )
        )
    if not readable:
        assert refused is not None, "no types to export means some were refused"
        raise refused
    return readable, accesses or None


def access_rules(job: ExportJob, types: Sequence[str]) -> tuple[AccessRule, ...] | None:
    """The job's constraint for a search over ``types`` (None: unconstrained)."""
    if job.access is None:
        return None
    by_type = {access.resource_type: access for access in job.access}
    rules: list[AccessRule] = []
    for rtype in types:
        access = by_type.get(rtype)
        if access is None:
            rules.append(AccessRule(rtype, (Admission(None),)))
            continue
        admissions = tuple(a for a in (_admission(rtype, alt) for alt in access.alternatives) if a is not None)
        patients = frozenset(access.patients) if access.patients is not None else None
        rules.append(AccessRule(rtype, admissions, patients))
    return tuple(rules)


def hop_rule(job: ExportJob, resource_type: str) -> AccessRule | None:
    """The rule for a type that a ``_typeFilter`` chain or ``_has`` looks at (None: unconstrained);
    the kick-off kept every constrained one (:func:`fhirflow.query.limits.limit_hops` applies them)."""
    if job.access is None or all(access.resource_type != resource_type for access in job.access):
        return None
    rules = access_rules(job, (resource_type,)) or ()
    return rules[0] if rules else None


def _admission(rtype: str, alternative: Any) -> Admission | None:
    compartment = (
        (str(alternative.compartment[0]), str(alternative.compartment[1])) if alternative.compartment else None
    )
    filters = [(str(name), str(value)) for name, value in alternative.filters]
    try:
        criteria = parse(rtype, filters, strict=True).criteria if filters else ()
    except BadRequest:
        return None  # a scope whose parameters cannot be evaluated admits nothing (as on read and search)
    return Admission(compartment, criteria)
