"""The local gateway's S3 part: GET and PUT on the signed URLs of
:class:`~fhirflow.adapters.filesystem.signed_urls.SignedLocalBlobUrls`, streamed to and from the
blob files so that a Binary far larger than the API's body limit never sits in memory whole."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fhirflow import jsonio
from fhirflow.adapters.filesystem.signed_urls import URL_PREFIX, SignedLocalBlobUrls
from fhirflow.errors import FhirError, MethodNotAllowed, NotFound, PayloadTooLarge, outcome_for

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_UPLOAD_BYTES = 5 * 1024**3
"""S3's limit for one PUT."""
CHUNK = 1024 * 1024


async def serve_signed(urls: SignedLocalBlobUrls, scope: Scope, receive: Receive, send: Send) -> None:
    token = scope["path"][len(URL_PREFIX) :]
    try:
        if scope["method"] == "GET":
            await _download(urls, token, send)
        elif scope["method"] == "PUT":
            await _upload(urls, token, receive)
            await _send(send, 200, [], b"")
        else:
            raise MethodNotAllowed(f"A signed URL takes GET or PUT, not {scope['method']}")
    except FhirError as error:
        body = jsonio.dumps(outcome_for(error))
        await _send(send, error.status, [(b"content-type", b"application/fhir+json; charset=utf-8")], body)


async def _download(urls: SignedLocalBlobUrls, token: str, send: Send) -> None:
    grant = urls.check(token, "GET")
    path = urls.store.path_of(grant.key)
    try:
        handle = path.open("rb")
    except FileNotFoundError as exc:
        raise NotFound("Nothing was uploaded to this URL") from exc
    loop = asyncio.get_running_loop()
    with handle:
        size = path.stat().st_size
        headers = [
            (b"content-type", (grant.content_type or "application/octet-stream").encode("latin-1")),
            (b"content-length", str(size).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        while True:
            chunk = await loop.run_in_executor(None, handle.read, CHUNK)
            if not chunk:
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _upload(urls: SignedLocalBlobUrls, token: str, receive: Receive) -> None:
    grant = urls.check(token, "PUT")
    upload = urls.begin_upload(grant.key)
    loop = asyncio.get_running_loop()
    try:
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            if upload.size + len(chunk) > MAX_UPLOAD_BYTES:
                raise PayloadTooLarge(f"An upload is at most {MAX_UPLOAD_BYTES} bytes")
            if chunk:
                upload.write(chunk)
            if not message.get("more_body", False):
                break
        await loop.run_in_executor(None, upload.commit)
    except BaseException:
        upload.abort()
        raise


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
