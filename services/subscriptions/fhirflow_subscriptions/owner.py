"""The re-check at every notification: may the subscription's owner still read this resource?

The owner context recorded at write time (fhirflow_subscriptions.hook.owner_context) is turned back
into a :class:`~fhirflow.authz.principal.Principal` and asked of the server's access policy, as a
read of the resource would be (Backport IG: servers SHOULD re-check authorization when sending).
A patient-context owner so receives only resources in that patient's compartment, and a payload
never carries a resource the owner could not read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhirflow.ports import AccessPolicy


def owner_may_read(policy: AccessPolicy, owner: Mapping[str, Any], resource: Mapping[str, Any] | None) -> bool:
    """True when authorization is off (no principal was recorded and the policy is AllowAll)."""
    from fhirflow.authz.policy import SmartPolicy
    from fhirflow.ports import AllowAll

    data = owner.get("principal")
    if data is None:
        return isinstance(policy, AllowAll)
    if resource is None:
        return False
    principal = _principal(data)
    rtype = str(resource.get("resourceType", ""))
    if isinstance(policy, SmartPolicy):
        return policy.admits(principal, "r", rtype, dict(resource), str(owner.get("base_url", "")))
    allowed = getattr(policy, "allowed", None)  # RBAC (GroupPolicy): by interaction and type
    return bool(allowed(principal, "read", rtype)) if callable(allowed) else False


def _principal(data: Mapping[str, Any]) -> Any:
    from fhirflow.authz.principal import Principal, parse_fhir_user
    from fhirflow.authz.scopes import parse_scopes

    return Principal(
        sub=data.get("sub"),
        client_id=data.get("client_id"),
        issuer=str(data.get("issuer", "")),
        scopes=parse_scopes(data.get("scopes", "")),
        expires_at=0.0,
        patient=data.get("patient"),
        fhir_user=parse_fhir_user(data.get("fhir_user")),
        tenant=data.get("tenant"),
        groups=tuple(data.get("groups", ())),
    )
