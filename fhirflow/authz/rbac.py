"""Role-based access: groups in the token (``cognito:groups``) → allowed interactions and types.

The alternative to SMART scopes for deployments like FWoA's Cognito one. The rules are data
(``rbac_rules`` in ``FHIRFLOW_AUTH_CONFIG``)::

    {"version": 1,
     "groupRules": {"practitioner": {"interactions": ["read", "create", ...], "resources": "*"},
                    "auditor": {"interactions": ["read", "vread", "search-type"], "resources": ["Patient"]}}}

Interactions are FHIR restful-interaction codes as the route table names them (``read``,
``vread``, ``update``, ``patch``, ``delete``, ``create``, ``history-instance``, ``history-type``,
``history-system``, ``search-type``, ``search-system``), ``export`` for a bulk export kick-off (per
exported type; FWoA's practitioners have it), and ``reindex`` for the administrative
``$reindex`` (none of the default groups has it: name it in an admin group's rules). A request is
allowed when one of the caller's groups allows the interaction on the type; bundle entries are
checked one by one.
There are no compartments in RBAC: a group that may read a type reads all of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhirflow.authz import challenges
from fhirflow.authz.policy import AccessConstraint, check_tenant, principal_of
from fhirflow.authz.principal import Principal
from fhirflow.model import FhirRequest
from fhirflow.ports import ResourceVersion

FWOA_FINANCIAL_TYPES = (
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "Claim",
    "ClaimResponse",
    "Invoice",
    "PaymentNotice",
    "PaymentReconciliation",
    "Account",
    "ChargeItem",
    "ChargeItemDefinition",
    "Contract",
    "ExplanationOfBenefit",
    "InsurancePlan",
)

FWOA_RULES: dict[str, Any] = {
    # FHIR Works on AWS's default RBACRules (practitioner / non-practitioner / auditor), in this
    # server's interaction names; patch and the history interactions go with update and read.
    "version": 1,
    "groupRules": {
        "practitioner": {
            "interactions": [
                "create",
                "read",
                "vread",
                "update",
                "patch",
                "delete",
                "history-instance",
                "history-type",
                "search-type",
                "transaction",
                "batch",
                "export",  # FWoA let practitioners start system and group bulk exports
            ],
            "resources": "*",
        },
        "non-practitioner": {"interactions": ["read", "vread", "search-type"], "resources": list(FWOA_FINANCIAL_TYPES)},
        "auditor": {"interactions": ["read", "vread", "search-type"], "resources": ["Patient"]},
    },
}
_WRITES = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True, slots=True)
class GroupRule:
    interactions: frozenset[str]
    resources: frozenset[str] | None
    """None: every type."""

    def allows(self, interaction: str, resource_type: str | None) -> bool:
        if interaction not in self.interactions:
            return False
        return resource_type is None or self.resources is None or resource_type in self.resources


def parse_rules(data: Mapping[str, Any]) -> dict[str, GroupRule]:
    if data.get("version") not in (1, 1.0):
        raise ValueError("rbac_rules: 'version' must be 1")
    groups = data.get("groupRules")
    if not isinstance(groups, dict):
        raise ValueError("rbac_rules: 'groupRules' must be an object of group name → rule")
    rules: dict[str, GroupRule] = {}
    for name, rule in groups.items():
        interactions = rule.get("interactions") if isinstance(rule, dict) else None
        resources = rule.get("resources") if isinstance(rule, dict) else None
        if not isinstance(interactions, list) or not all(isinstance(i, str) for i in interactions):
            raise ValueError(f"rbac_rules: group '{name}' needs a list of 'interactions'")
        if resources == "*":
            types = None
        elif isinstance(resources, list) and all(isinstance(r, str) for r in resources):
            types = frozenset(resources)
        else:
            raise ValueError(f"rbac_rules: group '{name}' needs 'resources': a list of types or '*'")
        rules[name] = GroupRule(frozenset(interactions), types)
    return rules


class GroupPolicy:
    """The :class:`fhirflow.ports.AccessPolicy` for group-based access."""

    def __init__(self, rules: Mapping[str, Any] | None = None) -> None:
        self.rules = parse_rules(rules if rules is not None else FWOA_RULES)

    def allowed(self, principal: Principal, interaction: str, resource_type: str | None) -> bool:
        for group in principal.groups:
            rule = self.rules.get(group)
            if rule is not None and rule.allows(interaction, resource_type):
                return True
        return False

    def authorize(self, request: FhirRequest, interaction: str, resource_type: str | None) -> None:
        principal = principal_of(request)
        check_tenant(request, principal)
        if interaction in ("capabilities", "smart-configuration", "transaction", "batch"):
            return  # bundle entries are authorized one by one
        if not self.allowed(principal, interaction, resource_type):
            raise challenges.insufficient_scope("The caller's groups do not allow this interaction")

    def check_read(self, request: FhirRequest, version: ResourceVersion) -> None:
        return None  # authorize() checked the type; groups have no compartments

    def visible(self, request: FhirRequest, version: ResourceVersion) -> bool:
        if request.resource_id:
            interaction = "history-instance"
        elif request.resource_type:
            interaction = "history-type"
        else:
            interaction = "history-system"
        return self.allowed(principal_of(request), interaction, version.type)

    def knows(self, request: FhirRequest, version: ResourceVersion) -> bool:
        return True  # authorize() checked the type; groups have no compartments

    def knows_holder(self, request: FhirRequest, resource_type: str, id_: str) -> bool:
        return True  # groups have no compartments: nothing of a type it may use is hidden from it

    def check_write(
        self,
        request: FhirRequest,
        resource_type: str,
        id_: str,
        new: dict[str, Any] | None,
        current: ResourceVersion | None,
    ) -> None:
        interaction = _WRITES.get(request.method)
        if interaction is None or not self.allowed(principal_of(request), interaction, resource_type):
            raise challenges.insufficient_scope("The caller's groups do not allow this interaction")

    def search_constraint(
        self, request: FhirRequest, resource_type: str | None, permission: str = "s"
    ) -> AccessConstraint | None:
        interaction = "search-type" if resource_type else "search-system"
        self.authorize(request, interaction, resource_type)
        return None
