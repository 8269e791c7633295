"""Opaque, tamper-proof paging cursors: base64url(JSON) + HMAC-SHA256.

A client can hold and replay a cursor but cannot forge or alter one; a tampered cursor is
a 400, never a query on attacker-chosen positions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from fhirflow.errors import BadRequest


class CursorSigner:
    def __init__(self, secret: bytes | Callable[[], bytes]) -> None:
        """``secret``: the HMAC key, or a function that fetches it (from Secrets Manager in AWS),
        called once, when the first cursor is signed or checked: a request that pages nothing
        never waits for it."""
        self._loader = None if isinstance(secret, bytes) else secret
        self._key = secret if isinstance(secret, bytes) else b""

    @property
    def _secret(self) -> bytes:
        if self._loader is not None:
            self._key, self._loader = self._loader(), None
        return self._key

    @classmethod
    def from_secret_or_file(cls, secret: str | None, path: Path) -> CursorSigner:
        if secret:
            return cls(secret.encode())
        from fhirflow.secretfile import read_or_create

        return cls(read_or_create(path, lambda: secrets.token_bytes(32)))

    def encode(self, state: dict[str, Any]) -> str:
        payload = base64.urlsafe_b64encode(orjson.dumps(state)).rstrip(b"=")
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        return payload.decode() + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def decode(self, token: str, *, name: str = "_cursor") -> dict[str, Any]:
        payload, _, mac = token.partition(".")
        try:
            expected = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()[:16]
            given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
            if not hmac.compare_digest(expected, given):
                raise ValueError("signature mismatch")
            state = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, TypeError, UnicodeError, orjson.JSONDecodeError) as exc:
            raise BadRequest(f"{name} is not a valid paging cursor (expired or altered)", expression=name) from exc
        if not isinstance(state, dict):
            raise BadRequest(f"{name} is not a valid paging cursor", expression=name)
        return state
