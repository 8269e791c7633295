"""Compressed answers over real HTTP (RFC 9110 §8.4, §12.5.3): gzip for clients that accept it,
text types only, from 1 KiB up (what API Gateway's minimumCompressionSize does in AWS), and
``Vary: Accept-Encoding`` so caches keep the forms apart.

httpx decodes gzip itself, so each test reads the raw bytes off the wire as well as the decoded body.
"""

from __future__ import annotations

import gzip
import os

import httpx

from tests.e2e.support import FHIR_JSON


def _raw(client: httpx.Client, path: str, *, encoding: str, accept: str = FHIR_JSON) -> tuple[httpx.Response, bytes]:
    """The answer and the bytes exactly as the server sent them."""
    request = client.build_request("GET", path, headers={"Accept-Encoding": encoding, "Accept": accept})
    reply = client.send(request, stream=True)
    try:
        raw = b"".join(reply.iter_raw())
    finally:
        reply.close()
    return reply, raw


def _vary(reply: httpx.Response) -> list[str]:
    return [f.strip().lower() for f in reply.headers.get("vary", "").split(",")]


def test_metadata_is_gzipped_for_a_client_that_accepts_gzip(client: httpx.Client) -> None:
    plain, plain_raw = _raw(client, "/metadata", encoding="identity")
    packed, packed_raw = _raw(client, "/metadata", encoding="gzip, deflate")

    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert packed_raw[:2] == b"\x1f\x8b"
    assert int(packed.headers["content-length"]) == len(packed_raw)
    assert len(packed_raw) * 5 < len(plain_raw)  # JSON shrinks well: 631 KB → 35 KB
    assert gzip.decompress(packed_raw) == plain_raw
    assert "accept-encoding" in _vary(plain)
    assert "accept-encoding" in _vary(packed)
    # and a client that decodes gzip itself (httpx does) reads the same CapabilityStatement
    decoded = client.get("/metadata", headers={"Accept-Encoding": "gzip"})
    assert decoded.headers["content-encoding"] == "gzip"
    assert decoded.json()["resourceType"] == "CapabilityStatement"
    assert decoded.content == plain_raw


def test_search_bundles_are_gzipped(client: httpx.Client) -> None:
    family = f"Gzip{os.getpid()}"
    for _ in range(6):
        client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": family, "given": ["A" * 100]}]})
    reply, raw = _raw(client, f"/Patient?family={family}", encoding="gzip")
    assert reply.status_code == 200
    assert reply.headers["content-encoding"] == "gzip"
    bundle = httpx.Response(200, content=gzip.decompress(raw)).json()
    assert bundle["resourceType"] == "Bundle"
    assert len(bundle["entry"]) == 6


def test_gzip_refused_by_q_zero_or_not_offered_gets_identity(client: httpx.Client) -> None:
    for encoding in ("gzip;q=0", "br", "identity"):
        reply, raw = _raw(client, "/metadata", encoding=encoding)
        assert "content-encoding" not in reply.headers, encoding
        assert raw[:1] == b"{"


def test_small_answers_go_uncompressed_but_still_vary(client: httpx.Client) -> None:
    created = client.post("/Patient", json={"resourceType": "Patient", "gender": "female"})
    reply, raw = _raw(client, created.headers["location"].split("/_history")[0], encoding="gzip")
    assert reply.status_code == 200
    assert len(raw) < 1024
    assert "content-encoding" not in reply.headers
    assert "accept-encoding" in _vary(reply)


def test_error_answers_say_they_vary(client: httpx.Client) -> None:
    reply, raw = _raw(client, "/Patient/no-such-patient-for-gzip", encoding="gzip")
    assert reply.status_code == 404
    assert raw[:1] == b"{"  # a short OperationOutcome: under the minimum size
    assert "accept-encoding" in _vary(reply)


def test_binary_content_in_its_own_type_is_not_compressed(client: httpx.Client) -> None:
    content = bytes(range(256)) * 16  # 4 KiB of PNG-ish bytes
    created = client.post("/Binary", content=content, headers={"Content-Type": "image/png"})
    assert created.status_code == 201, created.text
    location = created.headers["location"].split("/_history")[0]
    reply, raw = _raw(client, location, encoding="gzip", accept="image/png")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("image/png")
    assert "content-encoding" not in reply.headers
    assert "accept-encoding" not in _vary(reply)
    assert raw == content
