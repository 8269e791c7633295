"""SMART discovery and access-token algorithms over HTTP, against real servers in several configurations.

- ``/.well-known/smart-configuration`` (SMART App Launch 2.x conformance.html#metadata) and the
  CapabilityStatement's ``oauth-uris`` say what is configured, and nothing else: a backend-only
  deployment offers no launch, no authorization endpoint and no PKCE; one with an authorization
  endpoint offers the standalone launch with PKCE S256 and the user-facing scopes;
- access tokens signed with every asymmetric JOSE algorithm are accepted without configuring any;
  ``none`` and HS256 are refused with the generic 401, and the reason is in the server log and in
  the audit record only.
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
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from fhirflow.local.launcher import LocalServer

ISSUER = "https://idp.test/realm"
AUDIENCE = "https://fhir.test/r4"
TOKEN_URL = "https://idp.test/realm/token"
AUTHORIZE_URL = "https://idp.test/realm/authorize"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def _keys() -> dict[str, Any]:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa"})
    curves = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
    keys: dict[str, Any] = dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), rsa)
    keys.update({alg: ECKey.generate_key(crv, parameters={"kid": alg.lower()}) for alg, crv in curves.items()})
    keys["EdDSA"] = OKPKey.generate_key("Ed25519", parameters={"kid": "ed"})
    return keys


KEYS = _keys()


def _jwks() -> dict[str, Any]:
    unique = {key.kid: key for key in KEYS.values()}
    return {"keys": [{**key.as_dict(private=False), "use": "sig"} for key in unique.values()]}


def _server(tmp_path: Path, smart: dict[str, Any] | None, **env: str) -> LocalServer:
    config: dict[str, Any] = {"issuers": [{"issuer": ISSUER, "audience": [AUDIENCE], "jwks": _jwks()}]}
    if smart is not None:
        config["smart"] = smart
    return LocalServer(
        data_dir=tmp_path, extra_args=("--auth", "smart"), env={"FHIRFLOW_AUTH_CONFIG": json.dumps(config), **env}
    )


def _discover(server: LocalServer) -> tuple[dict[str, Any], dict[str, Any]]:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        reply = http.get("/.well-known/smart-configuration")
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/json"
        security = http.get("/metadata").json()["rest"][0]["security"]
    return reply.json(), security


def _oauth_uris(security: dict[str, Any]) -> dict[str, str]:
    [extension] = [e for e in security.get("extension", []) if e["url"] == OAUTH_URIS]
    return {e["url"]: e["valueUri"] for e in extension["extension"]}


def test_a_backend_services_deployment_offers_client_credentials_and_no_launch(tmp_path: Path) -> None:
    with _server(tmp_path, {"token_endpoint": TOKEN_URL}) as server:
        doc, security = _discover(server)

    assert doc["issuer"] == ISSUER
    assert doc["token_endpoint"] == TOKEN_URL
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert doc["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(doc["capabilities"]) == {
        "client-confidential-asymmetric",
        "permission-patient",
        "permission-user",
        "permission-v1",
        "permission-v2",
    }
    assert "system/*.rs" in doc["scopes_supported"]
    assert "system/*.read" in doc["scopes_supported"]
    assert not [s for s in doc["scopes_supported"] if s.startswith(("patient/", "user/", "launch"))]
    for absent in ("authorization_endpoint", "response_types_supported", "code_challenge_methods_supported"):
        assert absent not in doc, absent
    assert security["service"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
        "code": "SMART-on-FHIR",
    }
    assert _oauth_uris(security) == {"token": TOKEN_URL}


def test_an_authorization_endpoint_brings_the_standalone_launch_and_pkce(tmp_path: Path) -> None:
    env = {"FHIRFLOW_AUTH_TOKEN_URL": TOKEN_URL, "FHIRFLOW_AUTH_AUTHORIZE_URL": AUTHORIZE_URL}
    smart = {"revocation_endpoint": "https://idp.test/realm/revoke"}
    with _server(tmp_path, smart, **env) as server:
        doc, security = _discover(server)

    assert doc["authorization_endpoint"] == AUTHORIZE_URL
    assert doc["grant_types_supported"] == ["authorization_code", "client_credentials"]
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert {"launch-standalone", "context-standalone-patient", "client-confidential-asymmetric"} <= set(
        doc["capabilities"]
    )
    assert "launch-ehr" not in doc["capabilities"]  # no EHR launch context is served here
    assert {"launch/patient", "openid", "fhirUser", "patient/*.rs", "user/*.rs", "system/*.rs"} <= set(
        doc["scopes_supported"]
    )
    assert _oauth_uris(security) == {
        "authorize": AUTHORIZE_URL,
        "token": TOKEN_URL,
        "revoke": "https://idp.test/realm/revoke",
    }


def test_what_the_idp_states_wins_over_what_is_derived(tmp_path: Path) -> None:
    smart = {
        "token_endpoint": TOKEN_URL,
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "scopes_supported": ["system/Patient.rs"],
    }
    with _server(tmp_path, smart) as server:
        doc, _ = _discover(server)

    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert "client-confidential-symmetric" in doc["capabilities"]
    assert "client-confidential-asymmetric" not in doc["capabilities"]
    assert doc["scopes_supported"] == ["system/Patient.rs"]


def test_a_launch_capability_without_an_authorization_endpoint_stops_the_server_at_startup(tmp_path: Path) -> None:
    config = {
        "issuers": [{"issuer": ISSUER, "jwks": _jwks()}],
        "smart": {"token_endpoint": TOKEN_URL, "capabilities": ["launch-ehr"]},
    }
    command = [sys.executable, "-m", "fhirflow.cli", "serve", "--data-dir", str(tmp_path), "--auth", "smart"]
    env = {**_plain_env(), "FHIRFLOW_AUTH_CONFIG": json.dumps(config)}

    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)

    assert done.returncode != 0
    assert "need 'smart.authorization_endpoint'" in done.stderr


def _plain_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FHIRFLOW_AUTH")}


# -- tokens ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fhir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with _server(tmp_path_factory.mktemp("algs"), {"token_endpoint": TOKEN_URL}) as server:
        yield server


def _token(alg: str, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "svc",
        "client_id": "bulk",
        "scope": "system/*.rs",
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    key = KEYS[alg]
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "at+jwt"}, body, key, algorithms=[alg])


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # RFC 9864 names it Ed25519; IdPs still send EdDSA
@pytest.mark.parametrize("alg", sorted(KEYS))
def test_access_tokens_of_every_asymmetric_algorithm_are_accepted_by_default(fhir: LocalServer, alg: str) -> None:
    with httpx.Client(base_url=fhir.base_url, timeout=30) as http:
        reply = http.get("/Patient", headers={"Authorization": f"Bearer {_token(alg)}"})

    assert reply.status_code == 200, (alg, reply.text)


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(alg: str, secret: bytes = b"") -> str:
    import hashlib
    import hmac

    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "scope": "system/*.rs", "exp": now + 300, "jti": uuid.uuid4().hex}
    signing_input = f"{_b64(json.dumps({'alg': alg, 'kid': 'rsa'}).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing_input}.{_b64(signature)}"


def test_refused_tokens_are_explained_in_the_log_and_the_audit_record_never_to_the_client(fhir: LocalServer) -> None:
    refused = {
        "none": _unsigned("none"),
        "HS256": _unsigned("HS256", KEYS["RS256"].as_pem(private=False)),
        "expired": _token("ES384", exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    }
    answers = []
    with httpx.Client(base_url=fhir.base_url, timeout=30) as http:
        for name, token in refused.items():
            reply = http.get(f"/Patient/why-{name}", headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code == 401, (name, reply.text)
            assert reply.headers["www-authenticate"] == 'Bearer realm="fhirflow", error="invalid_token"'
            answers.append(reply.json()["issue"][0]["diagnostics"])

    assert set(answers) == {"The access token is not valid"}  # the same for every reason
    records = [json.loads(line) for line in (fhir.data_dir / "audit.jsonl").read_text().splitlines()]
    reasons = {r["what"]["id"]: r["outcome"].get("reason") for r in records if str(r["what"]["id"]).startswith("why-")}
    assert reasons == {
        "why-none": "algorithm-not-allowed",
        "why-HS256": "algorithm-not-allowed",
        "why-expired": "expired",
    }
    log = fhir.log_path.read_text()
    assert log.count("access token rejected: algorithm-not-allowed") == 2
    assert "access token rejected: expired" in log
