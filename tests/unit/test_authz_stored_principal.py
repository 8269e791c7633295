"""The principal an async bundle's stored request keeps instead of its token (issue 14, defect 9)."""

from __future__ import annotations

import orjson
import pytest

from fhirflow.authz.authenticator import StoredPrincipalAuthenticator
from fhirflow.authz.principal import Principal
from fhirflow.authz.scopes import parse_scopes
from fhirflow.errors import FhirError
from fhirflow.model import FhirRequest

PRINCIPAL = Principal(
    sub="alice",
    client_id="app",
    issuer="https://idp.test",
    scopes=parse_scopes("patient/Observation.rs?category=laboratory user/*.cruds"),
    expires_at=2_000.0,
    patient="p1",
    fhir_user=("Practitioner", "dr"),
    tenant="t1",
    groups=("g",),
    claim_names=frozenset({"sub", "scope"}),
)


def _request() -> FhirRequest:
    return FhirRequest(method="POST", path="/", route="/", tenant="default")


def test_the_stored_principal_round_trips_through_json() -> None:
    stored = orjson.loads(orjson.dumps(PRINCIPAL.to_stored()))
    again = Principal.from_stored(stored)
    assert again.to_stored() == PRINCIPAL.to_stored()
    assert [s.filters for s in again.scopes] == [(("category", "laboratory"),), ()]


def test_it_binds_the_tenant_and_expires_with_the_token() -> None:
    request = _request()
    assert StoredPrincipalAuthenticator(PRINCIPAL, clock=lambda: 1_000.0).authenticate(request) is PRINCIPAL
    assert request.tenant == "t1"
    with pytest.raises(FhirError) as expired:
        StoredPrincipalAuthenticator(PRINCIPAL, clock=lambda: 2_000.0).authenticate(_request())
    assert expired.value.status == 401
    with pytest.raises(FhirError) as missing:
        StoredPrincipalAuthenticator(None).authenticate(_request())
    assert missing.value.status == 401
