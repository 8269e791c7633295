"""The authz tests' kit: a test identity provider (keys, tokens, attack tokens) and an in-process
client that drives the real crud and bundle Applications with API Gateway events (no sockets).

It is imported by the other ``test_authz*`` modules and by the e2e tests; the few tests at the
bottom check that the attack tokens really are what their names say.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from fhirflow.http import Application
from fhirflow.local.gateway import build_event
from fhirflow.routes import ROUTE_TABLE
from fhirflow.runtime import Dependencies, build_dependencies
from fhirflow.settings import Settings

ISSUER = "https://idp.test/realm"
AUDIENCE = "https://fhir.test/r4"
LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


@cache
def rsa_key(name: str = "main") -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": f"rsa-{name}"})


@cache
def ec_key(name: str = "main") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": f"ec-{name}"})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TestIssuer:
    """Mints access tokens as an IdP would (RS256 by default), and the attacks on them."""

    issuer: str = ISSUER
    audience: str = AUDIENCE
    keys: list[Any] = field(default_factory=lambda: [rsa_key(), ec_key()])

    __test__ = False  # not a test class, whatever its name

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**k.as_dict(private=False), "use": "sig"} for k in self.keys]}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "user-1",
            "client_id": "app-1",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self,
        scope: str | None = "system/*.cruds",
        *,
        key: Any = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        key = key or self.keys[0]
        alg = "RS256" if isinstance(key, RSAKey) else "ES256"
        head = {"alg": alg, "kid": key.kid, "typ": "at+jwt", **(header or {})}
        head = {k: v for k, v in head.items() if v is not None}
        return jwt.encode(head, self.claims(scope=scope, **claims), key, algorithms=[alg])

    # -- attacks -----------------------------------------------------------------------------------

    def unsigned(self, scope: str = "system/*.cruds", alg: str = "none") -> str:
        header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        payload = b64(json.dumps(self.claims(scope=scope)).encode())
        return f"{header}.{payload}."

    def hs256_with_public_key(self, scope: str = "system/*.cruds") -> str:
        """The key-confusion attack: HMAC-signed with the RSA public key (PEM) as the secret."""
        public_pem = rsa_key().as_pem(private=False)
        header = b64(json.dumps({"alg": "HS256", "kid": rsa_key().kid, "typ": "JWT"}).encode())
        payload = b64(json.dumps(self.claims(scope=scope)).encode())
        signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{b64(signature)}"

    def tampered(self, scope: str = "patient/*.rs", **claims: Any) -> str:
        """A valid token whose claims were edited afterwards (a bad signature)."""
        header, _, signature = self.token(scope, **claims).split(".")
        payload = b64(json.dumps(self.claims(scope="system/*.cruds")).encode())
        return f"{header}.{payload}.{signature}"


def auth_settings(data_dir: Path, issuer: TestIssuer | None = None, *, mode: str = "smart", **config: Any) -> Settings:
    """Settings of a SMART (or RBAC) server that trusts ``issuer`` with its keys pinned (no JWKS fetch)."""
    issuer = issuer or TestIssuer()
    document: dict[str, Any] = {
        "issuers": [{"issuer": issuer.issuer, "audience": [issuer.audience], "jwks": issuer.jwks()}],
        **config,
    }
    return Settings(data_dir=data_dir, auth=mode, auth_config=json.dumps(document), audit="off")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def outcome_codes(self) -> list[str]:
        assert isinstance(self.body, dict), self.body
        assert self.body.get("resourceType") == "OperationOutcome", self.body
        return [issue["code"] for issue in self.body["issue"]]


class InProcessClient:
    """Requests through the real Applications, as the local gateway would send them."""

    def __init__(self, deps: Dependencies) -> None:
        from fhirflow_bundle.app import build_app as build_bundle
        from fhirflow_crud.app import build_app as build_crud

        self.deps = deps
        self.apps: dict[str, Application] = {"crud": build_crud(deps), "bundle": build_bundle(deps)}
        from fhirflow_export.app import build_app as build_export
        from fhirflow_search.app import build_app as build_search

        self.apps["search"] = build_search(deps)
        self.apps["export"] = build_export(deps)
        from fhirflow_subscriptions.app import build_app as build_subscriptions

        self.apps["subscriptions"] = build_subscriptions(deps)

    def drain_exports(self) -> int:
        """Run the queued export work now, as the embedded worker loop would in the background."""
        from fhirflow_export.local import export_drainer

        return export_drainer(self.deps).drain()

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        route, params = ROUTE_TABLE.match(method, path)
        raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers = {"host": "fhir.test", "content-type": "application/fhir+json", **(headers or {})}
        if token is not None:
            all_headers["authorization"] = f"Bearer {token}"
        scope = {
            "method": method,
            "path": path,
            "query_string": urlencode(query or {}).encode(),
            "headers": [(k.encode(), v.encode()) for k, v in all_headers.items()],
            "client": ("192.0.2.10", 50000),
            "scheme": "http",
        }
        event = build_event(scope, raw, resource=route.pattern, path_params=params)
        result = self.apps[route.service].resolve(event)
        text = result.get("body") or ""
        if result.get("isBase64Encoded"):
            text = base64.b64decode(text).decode()
        reply_headers = dict(result.get("headers") or {})
        if "ndjson" in reply_headers.get("Content-Type", ""):  # a bulk export file: one resource per line
            return Reply(result["statusCode"], reply_headers, [json.loads(line) for line in text.splitlines() if line])
        return Reply(result["statusCode"], reply_headers, json.loads(text) if text else None)

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> Reply:
        return self.request("GET", path, token=token, **kwargs)


def smart_client(
    data_dir: Path, issuer: TestIssuer | None = None, *, mode: str = "smart", **config: Any
) -> InProcessClient:
    return InProcessClient(build_dependencies(auth_settings(data_dir, issuer, mode=mode, **config)))


# -- the kit's own checks ----------------------------------------------------------------------------


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")

    def pad(segment: str) -> str:
        return segment + "=" * (-len(segment) % 4)

    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(payload))),
        signature,
    )


def test_attack_tokens_have_the_shape_their_names_say() -> None:
    issuer = TestIssuer()

    none_header, _, none_signature = _parts(issuer.unsigned())
    hs_header, _, _ = _parts(issuer.hs256_with_public_key())
    _, tampered_claims, _ = _parts(issuer.tampered("patient/*.rs"))

    assert none_header["alg"] == "none"
    assert none_signature == ""
    assert hs_header["alg"] == "HS256"
    assert hs_header["kid"] == rsa_key().kid
    assert tampered_claims["scope"] == "system/*.cruds"


def test_a_minted_token_verifies_with_the_published_key() -> None:
    issuer = TestIssuer()
    token = issuer.token("patient/*.rs", patient="p1")

    decoded = jwt.decode(token, rsa_key(), algorithms=["RS256"])

    assert decoded.claims["scope"] == "patient/*.rs"
    assert decoded.claims["patient"] == "p1"
