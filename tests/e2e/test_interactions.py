"""create, read, vread, update, update-as-create and delete over HTTP (http://hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import (
    assert_outcome,
    create,
    etag_version,
    http_date,
    is_instant,
    parse_instant,
    patient,
    put,
    read,
    unique,
    without_meta,
)

CLIENT_META = {
    "versionId": "99",
    "lastUpdated": "2001-01-01T00:00:00Z",
    "tag": [{"system": "http://example.org/tags", "code": "e2e"}],
    "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
    "profile": ["http://example.org/StructureDefinition/e2e-patient"],
}


def test_create_assigns_id_and_version_and_keeps_client_meta(client: httpx.Client, server: LocalServer) -> None:
    # http.html#create: 201, Location [base]/[type]/[id]/_history/[vid], ETag and Last-Modified; the server
    # ignores a body id and meta.versionId/lastUpdated and populates them itself.
    before = datetime.now(UTC) - timedelta(seconds=5)
    sent = patient(id="client-chosen-id", meta=CLIENT_META, gender="female", birthDate="1970-01-02")
    reply = client.post("/Patient", json=sent)

    assert reply.status_code == 201, reply.text
    body = reply.json()
    new_id = body["id"]
    assert new_id != "client-chosen-id"
    assert reply.headers["location"] == f"{server.base_url}/Patient/{new_id}/_history/1"
    assert reply.headers["etag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1"
    assert is_instant(body["meta"]["lastUpdated"])
    stamped = parse_instant(body["meta"]["lastUpdated"])
    assert before <= stamped <= datetime.now(UTC) + timedelta(seconds=5)
    # Last-Modified carries meta.lastUpdated (to the second, the precision of an HTTP date).
    assert http_date(reply.headers["last-modified"]) == stamped.replace(microsecond=0)
    assert body["meta"]["tag"] == CLIENT_META["tag"]
    assert body["meta"]["security"] == CLIENT_META["security"]
    assert body["meta"]["profile"] == CLIENT_META["profile"]
    assert without_meta(body) == {**without_meta(sent), "id": new_id}

    # The body id is ignored, not used: nothing was stored under it.
    assert_outcome(read(client, "Patient", "client-chosen-id"), 404, code="not-found")


def test_create_with_the_id_of_an_existing_resource_does_not_touch_it(client: httpx.Client) -> None:
    existing = create(client, patient(gender="male"))
    again = create(client, patient(id=existing["id"], gender="female"))

    assert again["id"] != existing["id"]
    current = read(client, "Patient", existing["id"])
    assert current.status_code == 200
    assert current.json() == existing


def test_read_returns_the_stored_resource_with_version_headers(client: httpx.Client) -> None:
    created = create(client, patient(name=[{"family": "Read", "given": ["E2e"]}], active=True))

    reply = read(client, "Patient", created["id"])

    assert reply.status_code == 200
    assert reply.json() == created
    assert etag_version(reply) == 1
    assert http_date(reply.headers["last-modified"]) == parse_instant(created["meta"]["lastUpdated"]).replace(
        microsecond=0
    )


def test_read_of_an_unknown_id_is_404(client: httpx.Client) -> None:
    assert_outcome(read(client, "Patient", unique("never")), 404, code="not-found")


def test_vread_returns_each_version(client: httpx.Client) -> None:
    v1 = create(client, patient(gender="male"))
    v2 = put(client, {**v1, "gender": "female"}).json()

    first = client.get(f"/Patient/{v1['id']}/_history/1")
    second = client.get(f"/Patient/{v1['id']}/_history/2")

    assert first.status_code == 200
    assert first.json() == v1
    assert etag_version(first) == 1
    assert second.status_code == 200
    assert second.json() == v2
    assert second.json()["meta"]["versionId"] == "2"
    assert etag_version(second) == 2
    assert_outcome(client.get(f"/Patient/{v1['id']}/_history/3"), 404, code="not-found")
    assert_outcome(client.get(f"/Patient/{v1['id']}/_history/abc"), 404, code="not-found")
    assert_outcome(client.get(f"/Patient/{unique('never')}/_history/1"), 404, code="not-found")


def test_update_creates_a_new_version(client: httpx.Client) -> None:
    v1 = create(client, patient(gender="male", meta={"tag": CLIENT_META["tag"]}))
    sent = {**v1, "gender": "female", "meta": {**v1["meta"], "versionId": "77", "lastUpdated": "2001-01-01T00:00:00Z"}}

    reply = put(client, sent)

    # http.html#update: 200 when updated, with ETag (new versionId) and Last-Modified; the server ignores
    # the client's versionId and lastUpdated.
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert etag_version(reply) == 2
    assert body["meta"]["versionId"] == "2"
    assert parse_instant(body["meta"]["lastUpdated"]) > parse_instant(v1["meta"]["lastUpdated"])
    assert body["meta"]["tag"] == CLIENT_META["tag"]
    assert body["gender"] == "female"
    assert "last-modified" in reply.headers
    assert read(client, "Patient", v1["id"]).json() == body


def test_update_as_create_with_a_client_id(client: httpx.Client, server: LocalServer) -> None:
    id_ = unique("upsert")

    reply = put(client, patient(id=id_, gender="other"))

    # http.html#upsert and #update: 201 Created when the update created the resource.
    assert reply.status_code == 201, reply.text
    assert etag_version(reply) == 1
    assert reply.json()["id"] == id_
    assert reply.json()["meta"]["versionId"] == "1"
    assert reply.headers["location"] == f"{server.base_url}/Patient/{id_}/_history/1"
    assert read(client, "Patient", id_).json() == reply.json()


def test_delete_then_read_is_410(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))

    deleted = client.delete(f"/Patient/{created['id']}")

    # http.html#delete: 204 No Content with no payload (or 200 with one); later reads are 410 Gone.
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_outcome(read(client, "Patient", created["id"]), 410, code="deleted")
    # The deletion is version 2; a vread of it is 410 too (http.html#vread), the old version still reads.
    assert_outcome(client.get(f"/Patient/{created['id']}/_history/2"), 410)
    assert client.get(f"/Patient/{created['id']}/_history/1").json() == created


def test_delete_again_is_idempotent_and_writes_no_version(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    assert client.delete(f"/Patient/{created['id']}").status_code == 204
    versions_before = client.get(f"/Patient/{created['id']}/_history").json()["entry"]

    again = client.delete(f"/Patient/{created['id']}")

    # http.html#delete: deleting a deleted resource has no effect, 200 or 204.
    assert again.status_code == 204
    assert again.content == b""
    assert client.get(f"/Patient/{created['id']}/_history").json()["entry"] == versions_before
    assert len(versions_before) == 2
    assert_outcome(client.get(f"/Patient/{created['id']}/_history/3"), 404)


def test_delete_of_an_id_that_never_existed(client: httpx.Client) -> None:
    id_ = unique("never")

    reply = client.delete(f"/Patient/{id_}")

    # http.html#delete: "or if the resource does not exist at all": 200 or 204; and it stays unknown.
    assert reply.status_code == 204
    assert_outcome(read(client, "Patient", id_), 404, code="not-found")
    assert_outcome(client.get(f"/Patient/{id_}/_history"), 404)


def test_put_after_delete_brings_the_resource_back_as_a_new_version(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    assert client.delete(f"/Patient/{created['id']}").status_code == 204

    reply = put(client, patient(id=created["id"], gender="female"))

    # http.html#delete: deleted resources may be brought back to life by an update; it is created (201).
    assert reply.status_code == 201, reply.text
    assert etag_version(reply) == 3
    assert reply.json()["meta"]["versionId"] == "3"
    current = read(client, "Patient", created["id"])
    assert current.status_code == 200
    assert current.json()["gender"] == "female"
    assert etag_version(current) == 3


@pytest.mark.parametrize("vid", ["01", "\uff11"])
def test_vread_of_an_id_that_only_looks_like_a_version_is_404(client: httpx.Client, vid: str) -> None:
    created = create(client, patient(gender="male"))

    reply = client.get(f"/Patient/{created['id']}/_history/{vid}")

    assert_outcome(reply, 404)
