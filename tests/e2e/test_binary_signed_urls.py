"""Binary content by signed URL in the embedded mode, over real HTTP: the local gateway plays S3
(fhirflow.binarycontent). A 50 MB Binary round-trips byte for byte without passing through the
API's body limit; altered, expired or misused URLs are 403; no URL is handed to a caller who may
not read the Binary."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhirflow.adapters.filesystem.signed_urls import SignedLocalBlobUrls
from fhirflow.local.launcher import LocalServer

FHIR_JSON = "application/fhir+json"
FIFTY_MB = 50 * 1024 * 1024
BODY_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("binary-direct")


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[LocalServer]:
    # A 1 MiB API body limit: the 50 MB below can only have travelled by the signed URLs.
    env = {"FHIRFLOW_BINARY_DIRECT": "true", "FHIRFLOW_BINARY_DIRECT_BYTES": str(BODY_LIMIT // 2)}
    args = ("--auth", "smart", "--max-body-bytes", str(BODY_LIMIT))
    with LocalServer(data_dir=data_dir, extra_args=args, env=env) as running:
        yield running


def mint(data_dir: Path, *args: str) -> dict[str, str]:
    command = [sys.executable, "-m", "fhirflow.cli", "token", "--data-dir", str(data_dir), *args]
    token = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def writer(data_dir: Path, server: LocalServer) -> dict[str, str]:
    return mint(data_dir, "--scope", "system/*.cruds")


@pytest.fixture
def http(server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=120) as client:
        yield client


def new_binary(http: httpx.Client, writer: dict[str, str], content_type: str = "video/mp4") -> tuple[str, str]:
    created = http.post("/Binary", json={"resourceType": "Binary", "contentType": content_type}, headers=writer)
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["presignedPutUrl"]


def test_a_fifty_megabyte_binary_round_trips_through_the_signed_urls(
    http: httpx.Client, writer: dict[str, str], server: LocalServer
) -> None:
    content = os.urandom(FIFTY_MB)
    id_, put_url = new_binary(http, writer)
    assert put_url.startswith(f"{server.base_url}/_blob/")
    assert httpx.put(put_url, content=content, timeout=120).status_code == 200

    native = http.get(f"/Binary/{id_}", headers={**writer, "Accept": "video/mp4"})
    assert native.status_code == 303
    fetched = httpx.get(native.headers["location"], timeout=120)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "video/mp4"
    assert len(fetched.content) == FIFTY_MB
    assert hashlib.sha256(fetched.content).digest() == hashlib.sha256(content).digest()

    as_json = http.get(f"/Binary/{id_}", headers={**writer, "Accept": FHIR_JSON})
    assert as_json.status_code == 200
    assert "data" not in as_json.json()
    assert httpx.get(as_json.json()["presignedGetUrl"], timeout=120).content == content

    followed = http.get(f"/Binary/{id_}", headers={**writer, "Accept": "*/*"}, follow_redirects=True)
    assert followed.content == content


def test_large_content_through_the_api_is_a_413_and_small_content_stays_inline(
    http: httpx.Client, writer: dict[str, str]
) -> None:
    large = http.post("/Binary", content=b"x" * (BODY_LIMIT // 2 + 1), headers={**writer, "Content-Type": "text/plain"})
    assert large.status_code == 413
    assert "presignedPutUrl" in large.json()["issue"][0]["diagnostics"]
    small = http.post("/Binary", content=b"hello", headers={**writer, "Content-Type": "text/plain"})
    assert small.status_code == 201
    read = http.get(f"/Binary/{small.json()['id']}", headers={**writer, "Accept": "text/plain"})
    assert (read.status_code, read.content) == (200, b"hello")


def test_altered_expired_and_misused_urls_are_403(
    http: httpx.Client, writer: dict[str, str], server: LocalServer, data_dir: Path
) -> None:
    id_, put_url = new_binary(http, writer, "text/plain")
    assert httpx.put(put_url, content=b"secret", timeout=30).status_code == 200
    get_url = http.get(f"/Binary/{id_}", headers={**writer, "Accept": "text/plain"}).headers["location"]
    assert httpx.get(get_url, timeout=30).content == b"secret"

    token = get_url.rsplit("/", 1)[1]
    payload, mac = token.split(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    other_key = payload[:-3] + ("x" if payload[-3] != "x" else "y") + payload[-2:]
    for bad in (f"{payload}.{flipped}", f"{other_key}.{mac}", payload, "garbage"):
        refused = httpx.get(f"{server.base_url}/_blob/{bad}", timeout=30)
        assert refused.status_code == 403, bad
        assert refused.json()["resourceType"] == "OperationOutcome"
    assert httpx.put(get_url, content=b"overwritten", timeout=30).status_code == 403  # a GET URL cannot upload
    assert httpx.get(put_url, timeout=30).status_code == 403  # nor a PUT URL download

    # Signed with the server's key an hour ago, for a minute: expired.
    past = SignedLocalBlobUrls.for_data_dir(data_dir, clock=lambda: time.time() - 3600)
    key = f"binary/default/{id_}/1"
    expired = past.download_url(key, content_type="text/plain", expires_in=60, origin=server.base_url)
    assert httpx.get(expired, timeout=30).status_code == 403
    fresh = SignedLocalBlobUrls.for_data_dir(data_dir).download_url(
        key, content_type="text/plain", expires_in=60, origin=server.base_url
    )
    assert httpx.get(fresh, timeout=30).content == b"secret"  # the same key, in time: the key is right
    assert httpx.get(get_url, timeout=30).content == b"secret"  # nothing was overwritten


def test_a_caller_who_may_not_read_the_binary_gets_no_url(
    http: httpx.Client, writer: dict[str, str], data_dir: Path
) -> None:
    id_, put_url = new_binary(http, writer, "text/plain")
    assert httpx.put(put_url, content=b"private", timeout=30).status_code == 200
    outsider = mint(data_dir, "--scope", "patient/*.rs", "--patient", "p1")  # Binary is in no compartment
    for accept in ("text/plain", FHIR_JSON):
        refused = http.get(f"/Binary/{id_}", headers={**outsider, "Accept": accept})
        assert refused.status_code == 404, refused.text
        assert "location" not in refused.headers
        assert "/_blob/" not in refused.text
    missing = http.get("/Binary/no-such-binary", headers={**outsider, "Accept": FHIR_JSON})
    assert missing.status_code == refused.status_code  # it learns nothing about existence
    cannot_write = mint(data_dir, "--scope", "system/*.rs")
    denied = http.post("/Binary", json={"resourceType": "Binary", "contentType": "text/plain"}, headers=cannot_write)
    assert denied.status_code == 403
    assert "presignedPutUrl" not in denied.text
