"""The embedded mode's development issuer: a key pair in the data directory, and tokens it signs.

``fhirflow serve --auth smart`` (without another issuer) trusts this key; ``fhirflow token`` mints
tokens with it. It is refused outside the embedded mode: in Lambda, or with any store but SQLite,
:func:`ensure_embedded` raises at startup, so the AWS configuration can never enable it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhirflow.settings import Settings

DEV_ISSUER = "urn:fhirflow:dev-issuer"
DEV_AUDIENCE = "urn:fhirflow:dev"
DEV_ALGORITHM = "ES256"
DEV_TENANT_CLAIM = "tenant"
KEY_FILE = "dev-issuer.jwk.json"
_LAMBDA_MARKERS = ("AWS_LAMBDA_FUNCTION_NAME", "AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT")


def ensure_embedded(settings: Settings) -> None:
    """Raise unless this process is the embedded mode (the development issuer's only home): not in
    Lambda, and on SQLite or a DynamoDB stand-in (an endpoint), never on a real AWS table."""
    in_lambda = any(os.environ.get(marker) for marker in _LAMBDA_MARKERS)
    local_store = settings.store == "sqlite" or (settings.store == "dynamodb" and settings.dynamodb_endpoint)
    if in_lambda or not local_store:
        raise RuntimeError(
            "The development issuer (FHIRFLOW_AUTH_DEV_ISSUER) is for the embedded mode only; "
            "configure a real issuer (FHIRFLOW_AUTH_ISSUER or FHIRFLOW_AUTH_CONFIG) in AWS"
        )


class DevIssuer:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / KEY_FILE

    def private_jwk(self) -> dict[str, Any]:
        """The signing key, created on first use (readable by its owner only)."""
        from fhirflow.secretfile import read_or_create

        def generate() -> bytes:
            from joserfc.jwk import ECKey

            key = ECKey.generate_key("P-256", auto_kid=True)
            return json.dumps(dict(key.as_dict(private=True))).encode()

        data: dict[str, Any] = json.loads(read_or_create(self.path, generate))
        return data

    def public_jwks(self) -> dict[str, Any]:
        private = self.private_jwk()
        public = {k: private[k] for k in ("kty", "crv", "x", "y", "kid") if k in private}
        return {"keys": [{**public, "alg": DEV_ALGORITHM, "use": "sig"}]}

    def mint(
        self,
        *,
        scope: str,
        patient: str | None = None,
        fhir_user: str | None = None,
        tenant: str | None = None,
        subject: str = "dev-user",
        client_id: str = "fhirflow-cli",
        groups: list[str] | None = None,
        lifetime: int = 3600,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """A signed access token (RFC 9068 shape) that a server using this issuer accepts."""
        from joserfc import jwt
        from joserfc.jwk import import_key

        private = self.private_jwk()
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": DEV_ISSUER,
            "aud": DEV_AUDIENCE,
            "sub": subject,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        if patient:
            claims["patient"] = patient
        if fhir_user:
            claims["fhirUser"] = fhir_user
        if tenant:
            claims[DEV_TENANT_CLAIM] = tenant
        if groups:
            claims["cognito:groups"] = groups
        claims.update(extra or {})
        header = {"alg": DEV_ALGORITHM, "kid": private["kid"], "typ": "at+jwt"}
        return jwt.encode(header, claims, import_key(private), algorithms=[DEV_ALGORITHM])
