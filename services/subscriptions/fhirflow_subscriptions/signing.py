"""Standard Webhooks signatures (https://www.standardwebhooks.com/, spec "Signature scheme").

Each notification carries ``webhook-id`` (stable across retries: the consumer's de-duplication
key), ``webhook-timestamp`` (Unix seconds of this attempt, so a consumer can refuse replays) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``. Signing the id and
the timestamp with the body is what makes a captured request useless to replay, unlike signing the
body alone. Several space-separated signatures let a subscriber rotate its secret: during the
overlap both the old and the new secret verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
from collections.abc import Sequence

from fhirflow.errors import BadRequest

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix, not a secret)
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ValueError if it is not one (24-64 bytes of base64)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError("a signing secret is whsec_ followed by base64") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"a signing secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return key


def validate_secret(secret: str, *, expression: str) -> None:
    """Refuse a client-supplied secret that is not a Standard Webhooks secret (400 naming the
    element; the diagnostics never repeat the value)."""
    try:
        secret_key(secret)
    except ValueError as exc:
        raise BadRequest(f"Invalid signing secret: {exc}", expression=expression) from exc


def sign(message_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """One ``v1,<base64>`` signature of ``{id}.{timestamp}.{body}``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(message_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The three Standard Webhooks headers, one signature per secret (rotation). With no secret
    the signature header is left out rather than sent empty."""
    headers = {"webhook-id": message_id, "webhook-timestamp": str(int(timestamp))}
    if secrets:
        headers["webhook-signature"] = " ".join(sign(message_id, timestamp, body, secret) for secret in secrets)
    return headers
