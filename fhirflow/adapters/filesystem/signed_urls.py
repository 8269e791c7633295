"""``SignedLocalBlobUrls``: the embedded mode's presigned URLs, served by the local gateway.

A URL is ``{origin}/_blob/{token}``; the token is base64url(JSON of key, method, expiry, content
type) and an HMAC-SHA256 of it under a key kept in the data directory, so every server process on
that directory signs and checks the same way. The gateway checks the signature, the method and the
expiry before it touches a file (S3 answers a bad or expired signature with 403, and so does it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from fhirflow.adapters.filesystem.blobs import FileBlobStore
from fhirflow.errors import Forbidden

URL_PREFIX = "/_blob/"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token allows: one method on one key."""

    key: str
    method: str
    content_type: str


class SignedLocalBlobUrls:
    url_prefix = URL_PREFIX

    def __init__(self, store: FileBlobStore, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._secret = secret
        self._clock = clock

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, clock: Callable[[], float] = time.time) -> SignedLocalBlobUrls:
        from fhirflow.secretfile import read_or_create

        secret = read_or_create(data_dir / "blob-url.key", lambda: secrets.token_bytes(32))
        return cls(FileBlobStore(data_dir / "blobs"), secret, clock=clock)

    def upload_url(self, key: str, *, expires_in: int, origin: str) -> str:
        return self._url(origin, key, "PUT", "", expires_in)

    def download_url(self, key: str, *, content_type: str, expires_in: int, origin: str) -> str:
        return self._url(origin, key, "GET", content_type, expires_in)

    def exists(self, key: str) -> bool:
        return self.store.path_of(key).is_file()

    def _url(self, origin: str, key: str, method: str, content_type: str, expires_in: int) -> str:
        claims = {"k": key, "m": method, "c": content_type, "e": int(self._clock()) + expires_in}
        payload = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=")
        mac = base64.urlsafe_b64encode(self._mac(payload)).rstrip(b"=")
        return f"{origin}{URL_PREFIX}{payload.decode()}.{mac.decode()}"

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def check(self, token: str, method: str) -> Grant:
        """The grant of a token presented with ``method``; Forbidden when it is altered, expired or
        for another method (the same answer for each, as S3 gives)."""
        payload, _, mac = token.partition(".")
        try:
            given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
            if not hmac.compare_digest(self._mac(payload.encode("ascii")), given):
                raise ValueError("signature mismatch")
            claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            grant = Grant(str(claims["k"]), str(claims["m"]), str(claims["c"]))
            expires = int(claims["e"])
        except (ValueError, TypeError, KeyError, UnicodeError, orjson.JSONDecodeError) as exc:
            raise Forbidden("The signed URL is not valid") from exc
        if expires < self._clock():
            raise Forbidden("The signed URL has expired")
        if grant.method != method:
            raise Forbidden(f"The signed URL allows {grant.method}, not {method}")
        return grant

    def begin_upload(self, key: str) -> Upload:
        return Upload(self.store.path_of(key))


class Upload:
    """Bytes written aside as they arrive, then renamed into place: a reader never sees half an
    upload, and a failed one leaves nothing behind."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        fd, self._tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        self._handle = os.fdopen(fd, "wb")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self.size += len(chunk)

    def commit(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._handle.close()
        Path(self._tmp).unlink(missing_ok=True)
