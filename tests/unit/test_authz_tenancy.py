"""Multi-tenancy: the tenant from the path and/or the token (issuer binding or tenant claim), which
must agree; per-tenant issuers; nothing of tenant A visible with a tenant B token."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from tests.unit.test_authz_kit import InProcessClient, TestIssuer, ec_key, rsa_key

A = TestIssuer(issuer="https://idp.test/tenant-a", keys=[rsa_key("a")])
B = TestIssuer(issuer="https://idp.test/tenant-b", keys=[rsa_key("b")])
SHARED = TestIssuer(issuer="https://idp.test/shared", keys=[ec_key("shared")])


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> InProcessClient:
    config = {
        "issuers": [
            {"issuer": A.issuer, "audience": A.audience, "jwks": A.jwks(), "tenant": "a"},
            {"issuer": B.issuer, "audience": B.audience, "jwks": B.jwks(), "tenant": "b"},
            {
                "issuer": SHARED.issuer,
                "audience": SHARED.audience,
                "jwks": SHARED.jwks(),
                "algorithms": ["ES256"],
                "tenants": ["b"],  # the tenants its tenant claim may name
            },
        ],
        "tenant_claim": "tenant",
    }
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("tenancy"), auth="smart", auth_config=json.dumps(config), audit="off"
    )
    return InProcessClient(build_dependencies(settings))


def _seed(client: InProcessClient, tenant: str, token: str) -> dict[str, Any]:
    body = {"resourceType": "Patient", "id": f"only-in-{tenant}", "active": True}
    reply = client.request("PUT", f"/tenant/{tenant}/Patient/{body['id']}", token=token, body=body)
    assert reply.status in (200, 201), reply.body
    return reply.body


def test_a_token_works_in_its_own_tenant_only(client: InProcessClient) -> None:
    token_a = A.token("system/*.cruds")
    _seed(client, "a", token_a)

    assert client.get("/tenant/a/Patient/only-in-a", token_a).status == 200
    reply = client.get("/tenant/b/Patient/only-in-a", token_a)
    assert reply.status == 403
    assert reply.outcome_codes == ["forbidden"]
    assert client.get("/tenant/default/Patient/only-in-a", token_a).status == 403


def test_without_a_path_prefix_the_request_takes_the_tokens_tenant(client: InProcessClient) -> None:
    token_a = A.token("system/*.cruds")
    _seed(client, "a", token_a)

    assert client.get("/Patient/only-in-a", token_a).status == 200
    assert client.get("/Patient/only-in-a", B.token("system/*.cruds")).status == 404


def test_nothing_of_tenant_a_is_visible_to_a_tenant_b_token(client: InProcessClient) -> None:
    token_a, token_b = A.token("system/*.cruds"), B.token("system/*.cruds")
    _seed(client, "a", token_a)
    _seed(client, "b", token_b)

    assert client.get("/tenant/b/Patient/only-in-a", token_b).status == 404
    assert client.get("/tenant/b/Patient/only-in-a/_history", token_b).status == 404
    assert client.get("/tenant/b/Patient/only-in-a/_history/1", token_b).status == 404
    for path in ("/tenant/b/_history", "/tenant/b/Patient/_history", "/_history"):
        ids = {e["resource"]["id"] for e in client.get(path, token_b).body["entry"] if "resource" in e}
        assert "only-in-a" not in ids, path
        assert "only-in-b" in ids, path
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Patient/only-in-a"}}],
    }
    reply = client.request("POST", "/tenant/b", token=token_b, body=batch)
    assert reply.body["entry"][0]["response"]["status"].startswith("404")
    # and writing "into" tenant a from tenant b creates b's own resource, never touches a's
    body = {"resourceType": "Patient", "id": "only-in-a", "active": False}
    assert client.request("PUT", "/tenant/b/Patient/only-in-a", token=token_b, body=body).status == 201
    assert client.get("/tenant/a/Patient/only-in-a", token_a).body["active"] is True


def test_locations_carry_the_tenant_base(client: InProcessClient) -> None:
    token_a = A.token("system/*.cruds")
    reply = client.request("POST", "/tenant/a/Patient", token=token_a, body={"resourceType": "Patient"})

    assert reply.status == 201
    assert reply.headers["Location"].startswith("http://fhir.test/tenant/a/Patient/")


def test_a_tenant_claim_selects_the_tenant_and_must_agree_with_the_issuer(client: InProcessClient) -> None:
    _seed(client, "a", A.token("system/*.cruds"))
    claimed_b = SHARED.token("system/*.rs", tenant="b")

    assert client.get("/tenant/b/Patient/only-in-b", claimed_b).status in (200, 404)
    assert client.get("/tenant/a/Patient/only-in-a", claimed_b).status == 403
    # issuer A's tokens belong to tenant a: a tenant claim saying otherwise makes the token invalid
    assert client.get("/tenant/a/Patient/only-in-a", A.token("system/*.rs", tenant="b")).status == 401
    assert client.get("/tenant/a/Patient/only-in-a", A.token("system/*.rs", tenant="a")).status == 200


def test_an_unbound_issuer_may_claim_only_the_tenants_it_is_configured_for(client: InProcessClient) -> None:
    _seed(client, "a", A.token("system/*.cruds"))

    assert client.get("/Patient/only-in-a", SHARED.token("system/*.rs", tenant="a")).status == 401
    assert client.get("/tenant/a/Patient/only-in-a", SHARED.token("system/*.rs", tenant="a")).status == 401


def test_a_token_bound_to_no_tenant_reaches_the_default_tenant_only(client: InProcessClient) -> None:
    unbound = SHARED.token("system/*.cruds")

    assert client.get("/tenant/a/Patient/only-in-a", unbound).status == 403
    assert client.get("/Patient/only-in-a", unbound).status == 404  # the default tenant has no such patient
    assert client.get("/tenant/default/Patient/nothing", unbound).status == 404


@pytest.mark.parametrize("claimed", ["a#Patient#x", "", "../b", "x" * 65, 7])
def test_a_malformed_tenant_claim_makes_the_token_invalid(client: InProcessClient, claimed: Any) -> None:
    reply = client.get("/Patient/x", SHARED.token("system/*.rs", tenant=claimed))

    assert reply.status == 401


def test_the_tenant_claim_is_checked_by_the_one_tenant_rule_paths_use(
    client: InProcessClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One definition of what a tenant id looks like (``fhirflow.pathparams.TENANT``): tightening it
    tightens the tenant claim too; the authenticator keeps no pattern of its own to drift apart."""
    import re

    from fhirflow import pathparams
    from fhirflow.authz import authenticator

    assert not [name for name, value in vars(authenticator).items() if isinstance(value, re.Pattern)]
    assert client.get("/tenant/b/Patient/x", SHARED.token("system/*.rs", tenant="b")).status == 404
    monkeypatch.setattr(pathparams, "TENANT", re.compile(r"[a-z]{2,63}"))  # now "b" is no tenant anywhere
    assert client.get("/tenant/b/Patient/x", SHARED.token("system/*.rs")).status == 400  # the path check
    assert client.get("/Patient/x", SHARED.token("system/*.rs", tenant="b")).status == 401  # the claim check
