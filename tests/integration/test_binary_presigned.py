"""A 50 MB Binary round-trips byte for byte through S3 presigned URLs (moto): created in JSON
without data, its bytes PUT to the answer's presignedPutUrl (FHIR Works on AWS's flow), read back
by the native read's 303 and by the JSON form's presignedGetUrl, never through the API."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests

from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from fhirflow_crud.app import build_app
from tests.support.lambda_http import call

FIFTY_MB = 50 * 1024 * 1024


@pytest.fixture
def crud(moto, tmp_path):  # type: ignore[no-untyped-def]
    settings = Settings(store="sqlite", data_dir=tmp_path, blob_bucket=moto.bucket(), binary_direct=True)
    return build_app(build_dependencies(settings))


def test_a_fifty_megabyte_binary_round_trips_through_presigned_urls(crud, tenant: str) -> None:
    content = os.urandom(FIFTY_MB)
    created = call(crud, "POST", f"/tenant/{tenant}/Binary", {"resourceType": "Binary", "contentType": "video/mp4"})
    assert created.status == 201, created.body[:300]
    put_url = created.json()["presignedPutUrl"]
    assert put_url.startswith("https://")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in put_url  # SigV4, which KMS-encrypted objects require
    assert requests.put(put_url, data=content, timeout=120).status_code == 200
    id_ = created.json()["id"]

    native = call(crud, "GET", f"/tenant/{tenant}/Binary/{id_}", headers={"accept": "video/mp4"})
    assert native.status == 303
    fetched = requests.get(native.headers["location"], timeout=120)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(fetched.content).digest() == hashlib.sha256(content).digest()
    assert len(fetched.content) == FIFTY_MB

    as_json = call(crud, "GET", f"/tenant/{tenant}/Binary/{id_}", headers={"accept": "application/fhir+json"})
    assert as_json.status == 200
    assert "data" not in as_json.json()
    assert requests.get(as_json.json()["presignedGetUrl"], timeout=120).content == content


def test_a_new_version_gets_its_own_upload_and_the_old_one_keeps_its_bytes(crud, tenant: str) -> None:
    created = call(crud, "POST", f"/tenant/{tenant}/Binary", {"resourceType": "Binary", "contentType": "text/plain"})
    id_ = created.json()["id"]
    assert requests.put(created.json()["presignedPutUrl"], data=b"first", timeout=30).status_code == 200
    again = {"resourceType": "Binary", "id": id_, "contentType": "text/plain"}
    updated = call(crud, "PUT", f"/tenant/{tenant}/Binary/{id_}", again)
    assert updated.status == 200
    assert requests.put(updated.json()["presignedPutUrl"], data=b"second", timeout=30).status_code == 200
    old = call(crud, "GET", f"/tenant/{tenant}/Binary/{id_}/_history/1", headers={"accept": "text/plain"})
    new = call(crud, "GET", f"/tenant/{tenant}/Binary/{id_}", headers={"accept": "text/plain"})
    assert requests.get(old.headers["location"], timeout=30).content == b"first"
    assert requests.get(new.headers["location"], timeout=30).content == b"second"


def test_small_binaries_stay_inline_and_large_inline_content_is_a_413(crud, tenant: str) -> None:
    small = call(crud, "POST", f"/tenant/{tenant}/Binary", b"hello", headers={"content-type": "text/plain"})
    assert small.status == 201
    assert "presignedPutUrl" not in small.json()
    read = call(crud, "GET", f"/tenant/{tenant}/Binary/{small.json()['id']}", headers={"accept": "text/plain"})
    assert (read.status, read.body) == (200, b"hello")

    large = call(
        crud, "POST", f"/tenant/{tenant}/Binary", b"x" * (5 * 1024 * 1024 + 1), headers={"content-type": "text/plain"}
    )
    assert large.status == 413
    assert "presignedPutUrl" in large.json()["issue"][0]["diagnostics"]


def test_a_conditional_create_that_finds_a_match_hands_out_no_upload_url(crud, tenant: str) -> None:
    body = {"resourceType": "Binary", "contentType": "text/plain"}
    created = call(crud, "POST", f"/tenant/{tenant}/Binary", body)
    assert "presignedPutUrl" in created.json()
    id_ = created.json()["id"]
    matched = call(crud, "POST", f"/tenant/{tenant}/Binary", body, headers={"if-none-exist": f"_id={id_}"})
    assert matched.status == 200
    assert "presignedPutUrl" not in matched.body.decode()
