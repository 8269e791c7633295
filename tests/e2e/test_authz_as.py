"""A small OAuth 2.0 authorization server on 127.0.0.1 for the authz e2e tests (no tests here).

Realms (one issuer each, like Keycloak's) serve, under ``/realms/{name}/``:

- ``jwks`` — the realm's public signing keys (RFC 7517), counted, rotatable;
- ``token`` — SMART Backend Services (client_credentials with a ``private_key_jwt`` client
  assertion, RFC 7523): the assertion is verified against the registered client's public key,
  the requested scopes must be a subset of the client's, and an RS256 access token is issued;
- ``introspect`` — RFC 7662 for the opaque tokens the realm has issued, behind HTTP Basic
  client authentication of the resource server.

Tokens are signed with joserfc in-process; the FHIR server under test only ever talks HTTP to it.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

AUDIENCE = "https://fhir.test/r4"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RESOURCE_SERVER = ("fhirflow", "introspection-secret")


@dataclass
class Realm:
    name: str
    issuer: str
    keys: list[RSAKey] = field(default_factory=lambda: [RSAKey.generate_key(2048, auto_kid=True)])
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    opaque: dict[str, dict[str, Any]] = field(default_factory=dict)
    jwks_fetches: int = 0
    introspections: int = 0

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**k.as_dict(private=False), "use": "sig", "alg": "RS256"} for k in self.keys]}

    def rotate(self) -> None:
        """Publish a new signing key (the old one stays published, as IdPs do during a rotation)."""
        self.keys.insert(0, RSAKey.generate_key(2048, auto_kid=True))

    def mint(self, scope: str, *, lifetime: int = 300, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": claims.pop("sub", "user-1"),
            "client_id": claims.pop("client_id", "app-1"),
            "scope": scope,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        key = self.keys[0]
        return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "at+jwt"}, body, key, algorithms=["RS256"])

    def issue_opaque(self, scope: str, *, lifetime: int = 300, **claims: Any) -> str:
        token = uuid.uuid4().hex
        self.opaque[token] = {
            "active": True,
            "scope": scope,
            "client_id": claims.pop("client_id", "app-1"),
            "exp": int(time.time()) + lifetime,
            "iss": self.issuer,
            **claims,
        }
        return token

    def register_client(self, client_id: str, scopes: str) -> ECKey:
        key = ECKey.generate_key("P-256", auto_kid=True)
        self.clients[client_id] = {"jwk": key.as_dict(private=False), "scopes": set(scopes.split())}
        return key

    def token_endpoint(self, form: dict[str, str], url: str) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "client_credentials" or form.get("client_assertion_type") != ASSERTION_TYPE:
            return 400, {"error": "unsupported_grant_type"}
        assertion = form.get("client_assertion", "")
        try:
            unverified = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
            client = self.clients[unverified["iss"]]
            from joserfc.jwk import import_key

            claims = jwt.decode(assertion, import_key(client["jwk"]), algorithms=["ES256"]).claims
        except (JoseError, KeyError, ValueError, IndexError):
            return 401, {"error": "invalid_client"}
        if claims.get("sub") != claims.get("iss") or claims.get("aud") != url or claims.get("exp", 0) < time.time():
            return 401, {"error": "invalid_client"}
        requested = set(form.get("scope", "").split())
        if not requested or not requested <= client["scopes"]:
            return 400, {"error": "invalid_scope"}
        scope = " ".join(sorted(requested))
        token = self.mint(scope, sub=claims["iss"], client_id=claims["iss"])
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": 300, "scope": scope}

    def introspect(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        expected = "Basic " + base64.b64encode(":".join(RESOURCE_SERVER).encode()).decode()
        if authorization != expected:
            return 401, {"error": "invalid_client"}
        self.introspections += 1
        answer = self.opaque.get(form.get("token", ""))
        if answer is None or answer["exp"] < time.time():
            return 200, {"active": False}
        return 200, answer


class AuthorizationServer:
    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.realms: dict[str, Realm] = {}
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def realm(self, name: str) -> Realm:
        if name not in self.realms:
            self.realms[name] = Realm(name, f"{self.base_url}/realms/{name}")
        return self.realms[name]

    def url(self, realm: str, endpoint: str) -> str:
        return f"{self.base_url}/realms/{realm}/{endpoint}"

    def issuer_config(self, realm: str, *, tenant: str | None = None, introspection: bool = False) -> dict[str, Any]:
        """The ``issuers`` entry of FHIRFLOW_AUTH_CONFIG for one realm."""
        entry: dict[str, Any] = {"issuer": self.realm(realm).issuer, "audience": [AUDIENCE], "algorithms": ["RS256"]}
        if introspection:
            entry["introspection_endpoint"] = self.url(realm, "introspect")
            entry["introspection_client_id"], entry["introspection_client_secret"] = RESOURCE_SERVER
        else:
            entry["jwks_uri"] = self.url(realm, "jwks")
        if tenant:
            entry["tenant"] = tenant
        return entry

    def __enter__(self) -> AuthorizationServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the stdlib's signature)
                return

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> tuple[Realm | None, str]:
                parts = urlsplit(self.path).path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "realms" or parts[1] not in server.realms:
                    return None, ""
                return server.realms[parts[1]], parts[2]

            def do_GET(self) -> None:
                realm, endpoint = self._route()
                if realm is None or endpoint != "jwks":
                    self._answer(404, {"error": "not_found"})
                    return
                realm.jwks_fetches += 1
                self._answer(200, realm.jwks())

            def do_POST(self) -> None:
                realm, endpoint = self._route()
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if realm is None:
                    self._answer(404, {"error": "not_found"})
                elif endpoint == "token":
                    self._answer(*realm.token_endpoint(form, server.url(realm.name, "token")))
                elif endpoint == "introspect":
                    self._answer(*realm.introspect(form, self.headers.get("Authorization", "")))
                else:
                    self._answer(404, {"error": "not_found"})

        return Handler


def client_assertion(key: ECKey, client_id: str, token_url: str) -> str:
    """A SMART Backend Services client assertion (RFC 7523 §2.2)."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 300, "jti": uuid.uuid4().hex}
    return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["ES256"])
