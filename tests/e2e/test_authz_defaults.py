"""Safe authorization defaults over HTTP (issue 14, defect 9): a real embedded server with SMART
on and tokens from a real authorization server on 127.0.0.1, configured with nothing but issuers.

- The scope claim is split at U+0020 only (RFC 6749 §3.3): a tab or a no-break space inside it
  does not make a second scope.
- An issuer bound to no tenant may not name a tenant in the tenant claim unless its configuration
  lists that tenant (``tenants``).
- ``fhirUser=Practitioner/<anything>`` with ``user/`` scopes reads its own compartment, not every
  resource, unless ``admin_user_types`` says so.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.test_authz_as import AuthorizationServer

FHIR_JSON = "application/fhir+json"
TAG = uuid.uuid4().hex[:8]
PATIENT = f"pt-{TAG}"


@pytest.fixture(scope="module")
def idp() -> Iterator[AuthorizationServer]:
    with AuthorizationServer() as server:
        server.realm("main")
        server.realm("clinic-a")
        server.realm("shared")
        yield server


@pytest.fixture(scope="module")
def http(idp: AuthorizationServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    config = {
        "issuers": [
            idp.issuer_config("main"),
            idp.issuer_config("clinic-a", tenant="a"),
            idp.issuer_config("shared"),  # bound to no tenant, and given none to claim
        ],
        "tenant_claim": "tenant",
    }
    env = {"FHIRFLOW_AUTH_CONFIG": json.dumps(config)}
    data_dir = tmp_path_factory.mktemp("defaults")
    with (
        LocalServer(data_dir=data_dir, extra_args=("--auth", "smart"), env=env) as server,
        httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as client,
    ):
        patient = {"resourceType": "Patient", "id": PATIENT, "name": [{"family": "Secret"}]}
        for realm, path in (("main", f"/Patient/{PATIENT}"), ("clinic-a", f"/tenant/a/Patient/{PATIENT}")):
            admin = idp.realm(realm).mint("system/*.cruds")
            assert client.put(path, json=patient, headers=bearer(admin)).status_code == 201
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("separator", ["\t", "\n", "\u00a0", "\u2028", "\u3000"])
def test_the_scope_claim_is_split_at_spaces_only(http: httpx.Client, idp: AuthorizationServer, separator: str) -> None:
    token = idp.realm("main").mint(f"openid{separator}system/*.rs")
    reply = http.get(f"/Patient/{PATIENT}", headers=bearer(token))
    assert reply.status_code == 403, reply.text
    assert "Secret" not in reply.text
    spaced = idp.realm("main").mint("openid system/*.rs")  # the same scopes, separated as RFC 6749 says
    assert http.get(f"/Patient/{PATIENT}", headers=bearer(spaced)).status_code == 200


def test_an_unbound_issuer_cannot_claim_a_tenant_it_was_not_given(http: httpx.Client, idp: AuthorizationServer) -> None:
    claiming = idp.realm("shared").mint("system/*.rs", tenant="a")
    for path in (f"/tenant/a/Patient/{PATIENT}", f"/Patient/{PATIENT}"):
        reply = http.get(path, headers=bearer(claiming))
        assert reply.status_code == 401, (path, reply.text)
        assert "Secret" not in reply.text
    own = idp.realm("clinic-a").mint("system/*.rs")  # tenant a's own issuer
    assert http.get(f"/tenant/a/Patient/{PATIENT}", headers=bearer(own)).status_code == 200
    unclaimed = idp.realm("shared").mint("system/*.rs")  # no claim: the default tenant
    assert http.get(f"/Patient/{PATIENT}", headers=bearer(unclaimed)).status_code == 200


def test_a_practitioner_fhir_user_is_not_an_administrator_by_default(
    http: httpx.Client, idp: AuthorizationServer
) -> None:
    token = idp.realm("main").mint("user/*.rs", fhirUser=f"Practitioner/anyone-{TAG}")
    reply = http.get(f"/Patient/{PATIENT}", headers=bearer(token))
    assert reply.status_code == 404, reply.text
    assert "Secret" not in reply.text
    found = http.get("/Patient", params={"_id": PATIENT}, headers=bearer(token))
    assert found.status_code == 200
    assert found.json().get("total", 0) == 0
    assert "Secret" not in found.text
