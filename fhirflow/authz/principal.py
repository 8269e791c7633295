"""Who is calling: what the authenticator found in a valid token, parsed once per token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhirflow.authz.scopes import ScopeSet

# scopes-and-launch-context.html#scopes-for-requesting-identity-data: fhirUser is one of these.
FHIR_USER_TYPES = frozenset({"Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "Person"})


@dataclass(frozen=True, slots=True)
class Principal:
    """A validated caller. Holds claim *names* only, never the token or claim values beyond these."""

    sub: str | None
    client_id: str | None
    issuer: str
    scopes: ScopeSet = field(repr=False)
    expires_at: float
    """Seconds since the epoch (``exp``)."""
    patient: str | None = None
    """The ``patient`` launch context: a Patient id."""
    fhir_user: tuple[str, str] | None = None
    """The ``fhirUser`` claim as (type, id), e.g. ("Practitioner", "123")."""
    tenant: str | None = None
    """The tenant this token is bound to (issuer binding or tenant claim); None: the default tenant only."""
    groups: tuple[str, ...] = ()
    claim_names: frozenset[str] = frozenset()

    @property
    def fhir_user_reference(self) -> str | None:
        return f"{self.fhir_user[0]}/{self.fhir_user[1]}" if self.fhir_user else None

    def to_stored(self) -> dict[str, Any]:
        """The principal as background work keeps it (an async bundle's stored request): the
        validated claims that decide access, never the token, so nothing stored is a credential."""
        return {
            "sub": self.sub,
            "clientId": self.client_id,
            "issuer": self.issuer,
            "scopes": [scope.text for scope in self.scopes],
            "expiresAt": self.expires_at,
            "patient": self.patient,
            "fhirUser": list(self.fhir_user) if self.fhir_user else None,
            "tenant": self.tenant,
            "groups": list(self.groups),
            "claimNames": sorted(self.claim_names),
        }

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Principal:
        from fhirflow.authz.scopes import parse_scopes

        fhir_user = data.get("fhirUser")
        return cls(
            sub=data.get("sub"),
            client_id=data.get("clientId"),
            issuer=str(data["issuer"]),
            scopes=parse_scopes(list(data.get("scopes") or [])),
            expires_at=float(data["expiresAt"]),
            patient=data.get("patient"),
            fhir_user=(str(fhir_user[0]), str(fhir_user[1])) if fhir_user else None,
            tenant=data.get("tenant"),
            groups=tuple(data.get("groups") or ()),
            claim_names=frozenset(data.get("claimNames") or ()),
        )


def parse_fhir_user(value: object) -> tuple[str, str] | None:
    """``fhirUser`` is an absolute or relative URL of a Patient/Practitioner/RelatedPerson/Person."""
    if not isinstance(value, str) or not value:
        return None
    parts = [p for p in value.split("?", 1)[0].split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or parts[-2] not in FHIR_USER_TYPES:
        return None
    return parts[-2], parts[-1]


def parse_patient(value: object) -> str | None:
    """The ``patient`` context is an id; some servers send ``Patient/123``."""
    if not isinstance(value, str) or not value:
        return None
    return value.rsplit("/", 1)[-1] if value.startswith("Patient/") or "/Patient/" in value else value
