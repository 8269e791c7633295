"""A 10 MB resource round-trips byte for byte in both modes, its body in the blob store (files
in the embedded mode, S3 with DynamoDB); a body over the configured maximum is a 413."""

from __future__ import annotations

import os
from typing import Any

import pytest

from fhirflow import runtime
from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from fhirflow_crud.app import build_app
from tests.support.lambda_http import call

TEN_MB = 10 * 1024 * 1024


@pytest.fixture(params=["sqlite", "dynamodb"])
def mode(request: pytest.FixtureRequest, tmp_path) -> tuple[str, Settings, Any]:
    if request.param == "sqlite":
        return "sqlite", Settings(store="sqlite", data_dir=tmp_path), None
    tables = request.getfixturevalue("shared_tables")
    moto = request.getfixturevalue("moto")
    settings = Settings(
        store="dynamodb",
        data_dir=tmp_path,
        dynamodb_table=tables.resources,
        dynamodb_ledger_table=tables.ledger,
        dynamodb_endpoint=tables.endpoint,
        blob_bucket=moto.bucket(),
    )
    return "dynamodb", settings, moto


def blob_count(mode: tuple[str, Settings, Any]) -> int:
    name, settings, moto = mode
    if name == "sqlite":
        return sum(1 for p in settings.blob_dir.rglob("*") if p.is_file())
    return int(moto.client("s3").list_objects_v2(Bucket=settings.blob_bucket).get("KeyCount", 0))


def test_a_ten_megabyte_binary_round_trips_byte_for_byte(mode, tenant: str) -> None:
    _, settings, _ = mode
    crud = build_app(build_dependencies(settings))
    content = os.urandom(TEN_MB)
    created = call(
        crud, "POST", f"/tenant/{tenant}/Binary", content, headers={"content-type": "application/octet-stream"}
    )
    assert created.status == 201, created.body[:300]
    id_ = created.json()["id"]
    assert created.headers["location"].endswith(f"/tenant/{tenant}/Binary/{id_}/_history/1")
    assert blob_count(mode) == 1

    native = call(crud, "GET", f"/tenant/{tenant}/Binary/{id_}", headers={"accept": "application/octet-stream"})
    assert native.status == 200
    assert native.headers["content-type"] == "application/octet-stream"
    assert native.body == content

    as_fhir = call(crud, "GET", f"/tenant/{tenant}/Binary/{id_}", headers={"accept": "application/fhir+json"})
    assert as_fhir.status == 200
    assert as_fhir.body == created.body  # the stored form, exactly as the create returned it
    vread = call(crud, "GET", f"/tenant/{tenant}/Binary/{id_}/_history/1", headers={"accept": "application/fhir+json"})
    assert vread.body == created.body
    history = call(crud, "GET", f"/tenant/{tenant}/Binary/{id_}/_history").json()
    assert history["entry"][0]["resource"]["data"] == as_fhir.json()["data"]


def test_a_large_json_resource_round_trips(mode, tenant: str) -> None:
    _, settings, _ = mode
    crud = build_app(build_dependencies(settings))
    # FHIR strings are limited to 1 MB each (datatypes.html#string): 20 notes of half a megabyte.
    notes = [
        {"text": f"{n} \u00e9t\u00e9 \u2603 " + "".join(chr(0x41 + (i + n) % 26) for i in range(TEN_MB // 20))}
        for n in range(20)
    ]
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "big"}, "note": notes}
    created = call(crud, "POST", f"/tenant/{tenant}/Observation", resource)
    assert created.status == 201, created.body[:300]
    assert len(created.body) > TEN_MB
    read = call(crud, "GET", f"/tenant/{tenant}/Observation/{created.json()['id']}")
    assert read.body == created.body
    assert read.json()["note"] == notes


def test_small_resources_stay_inline(mode, tenant: str) -> None:
    _, settings, _ = mode
    crud = build_app(build_dependencies(settings))
    assert call(crud, "POST", f"/tenant/{tenant}/Patient", {"resourceType": "Patient"}).status == 201
    assert blob_count(mode) == 0


def test_a_body_over_the_configured_maximum_is_413(mode, tenant: str) -> None:
    _, settings, _ = mode
    limited = Settings(**{**{f: getattr(settings, f) for f in settings.__slots__}, "max_body_bytes": 1000})
    crud = build_app(build_dependencies(limited))
    reply = call(crud, "POST", f"/tenant/{tenant}/Patient", {"resourceType": "Patient", "text": {"div": "x" * 2000}})
    assert reply.status == 413
    outcome = reply.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "too-costly"
    raw = call(
        crud, "POST", f"/tenant/{tenant}/Binary", b"\x00" * 1001, headers={"content-type": "application/octet-stream"}
    )
    assert raw.status == 413
    assert runtime.build_store(limited).current(tenant, "Binary", "x") is None
    assert blob_count(mode) == 0
