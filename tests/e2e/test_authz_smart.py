"""SMART on FHIR end to end: the real embedded server (``fhirflow serve --auth smart``) against a
real authorization server on 127.0.0.1 (tests/e2e/test_authz_as.py), driven over HTTP with httpx.

Backend services (client_credentials + private_key_jwt → ``system/*.rs``), JWKS fetching and key
rotation, RFC 7662 introspection of opaque tokens, the token attacks over the wire, and the
cross-patient leak test; then the embedded development issuer with ``fhirflow token``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.test_authz_as import AuthorizationServer, client_assertion
from tests.unit.test_authz_kit import TestIssuer, rsa_key
from tests.unit.test_authz_leaks import chart, found_resources

FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module")
def idp() -> Iterator[AuthorizationServer]:
    with AuthorizationServer() as server:
        server.realm("main")
        server.realm("opaque")
        yield server


@pytest.fixture(scope="module")
def fhir(idp: AuthorizationServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    config = {
        "issuers": [idp.issuer_config("main"), idp.issuer_config("opaque", introspection=True)],
        "jwks_min_refresh_seconds": 1,
        "smart": {"token_endpoint": idp.url("main", "token"), "capabilities": ["client-confidential-asymmetric"]},
    }
    env = {"FHIRFLOW_AUTH_CONFIG": json.dumps(config)}
    with LocalServer(data_dir=tmp_path_factory.mktemp("smart"), extra_args=("--auth", "smart"), env=env) as server:
        yield server


@pytest.fixture
def http(fhir: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fhir.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def seed(http: httpx.Client, idp: AuthorizationServer, resources: list[dict[str, Any]]) -> None:
    admin = idp.realm("main").mint("system/*.cruds")
    for resource in resources:
        reply = http.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=bearer(admin))
        assert reply.status_code in (200, 201), reply.text


def test_backend_services_client_credentials_token_with_system_rs(http: httpx.Client, idp: AuthorizationServer) -> None:
    realm = idp.realm("main")
    key = realm.register_client("bulk-client", "system/*.rs")
    patient_id = f"bs-{uuid.uuid4().hex[:8]}"
    seed(http, idp, [{"resourceType": "Patient", "id": patient_id}])

    # The client discovers the token endpoint as a SMART client does, then asks for a token.
    discovery = http.get("/.well-known/smart-configuration")
    assert discovery.status_code == 200
    assert discovery.headers["content-type"] == "application/json"
    token_url = discovery.json()["token_endpoint"]
    grant = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(key, "bulk-client", token_url),
        },
    )
    assert grant.status_code == 200, grant.text
    token = grant.json()["access_token"]

    assert http.get(f"/Patient/{patient_id}", headers=bearer(token)).status_code == 200
    assert http.get("/Patient/_history", headers=bearer(token)).status_code == 200
    assert http.get("/_history", headers=bearer(token)).status_code == 200
    denied = http.put(
        f"/Patient/{patient_id}", json={"resourceType": "Patient", "id": patient_id}, headers=bearer(token)
    )
    assert denied.status_code == 403
    assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
    assert denied.json()["issue"][0]["code"] == "forbidden"


def test_the_jwks_is_fetched_once_and_a_rotated_key_is_picked_up(http: httpx.Client, idp: AuthorizationServer) -> None:
    realm = idp.realm("main")
    patient_id = f"rot-{uuid.uuid4().hex[:8]}"
    seed(http, idp, [{"resourceType": "Patient", "id": patient_id}])
    before = realm.jwks_fetches
    for _ in range(5):
        assert http.get(f"/Patient/{patient_id}", headers=bearer(realm.mint("system/*.rs"))).status_code == 200
    assert realm.jwks_fetches == before  # the keys are cached

    realm.rotate()
    time.sleep(1.1)  # the configured minimum interval between refreshes
    reply = http.get(f"/Patient/{patient_id}", headers=bearer(realm.mint("system/*.rs")))

    assert reply.status_code == 200
    assert realm.jwks_fetches == before + 1


def test_opaque_tokens_are_introspected_and_cached(http: httpx.Client, idp: AuthorizationServer) -> None:
    realm = idp.realm("opaque")
    tag = uuid.uuid4().hex[:8]
    mine, theirs = chart(f"me-{tag}", f"dr-{tag}", f"me-{tag}"), chart(f"them-{tag}", f"dr-{tag}", f"them-{tag}")
    seed(http, idp, [{"resourceType": "Practitioner", "id": f"dr-{tag}"}, *mine, *theirs])
    token = realm.issue_opaque("patient/*.rs", patient=f"me-{tag}")
    before = realm.introspections

    assert http.get(f"/Observation/obs-me-{tag}", headers=bearer(token)).status_code == 200
    assert http.get(f"/Observation/obs-them-{tag}", headers=bearer(token)).status_code == 404
    assert http.get(f"/Patient/me-{tag}", headers=bearer(token)).status_code == 200
    assert realm.introspections == before + 1  # one introspection, then the cache

    realm.opaque[token]["active"] = False  # revoked at the IdP: the answer stays cached for a bounded time
    assert http.get(f"/Patient/me-{tag}", headers=bearer(token)).status_code == 200
    fresh = realm.issue_opaque("patient/*.rs", patient=f"me-{tag}")
    realm.opaque[fresh]["active"] = False
    assert http.get(f"/Patient/me-{tag}", headers=bearer(fresh)).status_code == 401
    unknown = http.get(f"/Patient/me-{tag}", headers=bearer("not-an-issued-token"))
    assert unknown.status_code == 401
    assert unknown.json()["issue"][0]["code"] == "login"


def _attacks(idp: AuthorizationServer) -> dict[str, str]:
    realm = idp.realm("main")
    now = int(time.time())
    impostor = TestIssuer(issuer=realm.issuer, audience="https://fhir.test/r4", keys=[rsa_key("impostor")])
    key = realm.keys[0]
    confused = TestIssuer(issuer=realm.issuer, audience="https://fhir.test/r4", keys=[key])
    return {
        "expired": realm.mint("system/*.rs", exp=now - 3600, iat=now - 7200),
        "not yet valid": realm.mint("system/*.rs", nbf=now + 3600),
        "wrong issuer": TestIssuer(issuer="https://evil.test/", keys=[rsa_key("evil")]).token("system/*.rs"),
        "wrong audience": realm.mint("system/*.rs", aud="https://other.test/fhir"),
        "bad signature": impostor.token("system/*.rs", header={"kid": key.kid}),
        "alg none": confused.unsigned("system/*.rs"),
        "HS256 with the public key": _hs256_with(key, realm.issuer),
        "unknown kid": impostor.token("system/*.rs"),
        "malformed": "eyJhbGciOi.broken",
    }


def _hs256_with(key: Any, issuer: str) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}).encode())
    claims = {"iss": issuer, "aud": "https://fhir.test/r4", "scope": "system/*.cruds", "exp": now + 300}
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(key.as_pem(private=False), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_token_attacks_over_http_are_401_with_an_outcome(http: httpx.Client, idp: AuthorizationServer) -> None:
    for name, token in _attacks(idp).items():
        reply = http.get("/Patient/anyone", headers=bearer(token))

        assert reply.status_code == 401, (name, reply.text)
        assert reply.headers["www-authenticate"] == 'Bearer realm="fhirflow", error="invalid_token"', name
        assert reply.json()["issue"][0]["code"] == "login", name
    no_scope = http.get("/Patient/anyone", headers=bearer(idp.realm("main").mint("openid fhirUser")))
    assert no_scope.status_code == 403
    assert http.get("/Patient/anyone").status_code == 401


def test_cross_patient_leak_over_http(http: httpx.Client, idp: AuthorizationServer) -> None:
    tag = uuid.uuid4().hex[:8]
    mine, theirs = chart(f"me-{tag}", f"dr-{tag}", f"me-{tag}"), chart(f"them-{tag}", f"dr-{tag}", f"them-{tag}")
    seed(http, idp, [{"resourceType": "Practitioner", "id": f"dr-{tag}"}, *mine, *theirs])
    token = idp.realm("main").mint("patient/*.rs", patient=f"me-{tag}")
    own = {(r["resourceType"], r["id"]) for r in mine}
    paths = ["/_history", "/Observation/_history", "/Patient/_history"]
    for r in [*mine, *theirs, {"resourceType": "Practitioner", "id": f"dr-{tag}"}]:
        base = f"/{r['resourceType']}/{r['id']}"
        paths += [base, f"{base}/_history", f"{base}/_history/1"]
    seen: set[tuple[str, str]] = set()
    for path in paths:
        reply = http.get(path, headers=bearer(token))
        assert reply.status_code < 500, (path, reply.text)
        seen.update(found_resources(reply.json()))
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": p[1:]}} for p in paths],
    }
    seen.update(found_resources(http.post("/", json=batch, headers=bearer(token)).json()))

    mine_in_history = {(t, i) for t, i in seen if (t, i) in own}
    assert {f for f in seen if f not in own} == set()
    assert mine_in_history == own


# -- the embedded development issuer --------------------------------------------------------------


def test_embedded_mode_with_the_development_issuer_and_fhirflow_token(tmp_path: Path) -> None:
    def mint(*args: str) -> str:
        command = [sys.executable, "-m", "fhirflow.cli", "token", "--data-dir", str(tmp_path), *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()

    with (
        LocalServer(data_dir=tmp_path, extra_args=("--auth", "smart")) as server,
        httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as http,
    ):
        writer = bearer(mint("--scope", "patient/*.cruds", "--patient", "p1"))
        assert http.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1"}, headers=writer).status_code == 201
        assert http.put("/Patient/p2", json={"resourceType": "Patient", "id": "p2"}, headers=writer).status_code == 403
        reader = mint("--scope", "user/*.rs", "--fhir-user", "Patient/p1")
        assert http.get("/Patient/p1", headers=bearer(reader)).status_code == 200
        assert http.get("/Patient/p1").status_code == 401
        assert http.get("/.well-known/smart-configuration").json()["issuer"] == "urn:fhirflow:dev-issuer"
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["outcome"]["status"] for r in records if r["what"]["type"] == "Patient"] == [201, 403, 200, 401]


@pytest.mark.parametrize("auth", ["off", "smart"])
def test_the_embedded_mode_refuses_to_listen_beyond_loopback_without_a_real_issuer(tmp_path: Path, auth: str) -> None:
    command = [sys.executable, "-m", "fhirflow.cli", "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)]
    command += ["--auth", auth]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=_without_auth_env(), check=False)

    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr


def _without_auth_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FHIRFLOW_AUTH")}


def test_discovery_answers_json_whatever_the_accept_header(http: httpx.Client) -> None:
    reply = http.get("/.well-known/smart-configuration", headers={"Accept": "text/html"})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert "token_endpoint" in reply.json()


def test_a_deleted_resource_outside_the_compartment_does_not_reveal_it_existed(
    http: httpx.Client, idp: AuthorizationServer
) -> None:
    realm = idp.realm("main")
    admin = bearer(realm.mint("system/*.cruds"))
    mine, other = f"mine-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    seed(http, idp, [{"resourceType": "Patient", "id": mine}, {"resourceType": "Patient", "id": other}])
    assert http.delete(f"/Patient/{other}", headers=admin).status_code == 204
    patient_token = bearer(realm.mint("patient/*.rs", patient=mine))

    assert http.get(f"/Patient/{other}", headers=patient_token).status_code == 404
    assert http.get(f"/Patient/{other}/_history/2", headers=patient_token).status_code == 404
    assert http.get(f"/Patient/{other}", headers=admin).status_code == 410  # an unrestricted scope may know
