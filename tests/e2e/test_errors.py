"""Every client error is a 4xx with an OperationOutcome (issue code, diagnostics and, where one
applies, the FHIRPath expression of the offending element); none is a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.support import (
    JSON_PATCH,
    SMALL_BODY_LIMIT,
    assert_outcome,
    create,
    etag_version,
    patient,
    put,
    read,
    unique,
)


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(
    "body", [b'{"resourceType": "Patient", ', b"{'resourceType': 'Patient'}", b"\xff\xfe\x00", b"{}{}", b"   "]
)
def test_malformed_json_is_400(client: httpx.Client, method: str, body: bytes) -> None:
    url = "/Patient" if method == "POST" else f"/Patient/{unique('bad')}"

    assert_outcome(client.request(method, url, content=body), 400)


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize("body", ["[]", '[{"resourceType": "Patient"}]', '"Patient"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_400(client: httpx.Client, method: str, body: str) -> None:
    url = "/Patient" if method == "POST" else f"/Patient/{unique('bad')}"

    assert_outcome(client.request(method, url, content=body.encode()), 400)


@pytest.mark.parametrize("resource_type", ["Observation", "patient", None, 42, "Nonsense"])
def test_resource_type_must_match_the_url(client: httpx.Client, resource_type: object) -> None:
    body = {"gender": "male"} if resource_type is None else {"resourceType": resource_type, "gender": "male"}
    id_ = unique("rt")

    assert_outcome(client.post("/Patient", json=body), 400)
    assert_outcome(client.put(f"/Patient/{id_}", json={**body, "id": id_}), 400)
    assert_outcome(read(client, "Patient", id_), 404)


def test_body_id_different_from_url_id_is_400(client: httpx.Client) -> None:
    existing = create(client, patient(gender="male"))

    reply = client.put(f"/Patient/{existing['id']}", json={**existing, "id": "someone-else", "gender": "female"})

    # http.html#update: the id must equal the [id] in the URL, else 400.
    assert_outcome(reply, 400, expression="Patient.id")
    assert read(client, "Patient", existing["id"]).json() == existing
    assert_outcome(read(client, "Patient", "someone-else"), 404)


def test_missing_id_on_put_is_400(client: httpx.Client) -> None:
    id_ = unique("noid")

    reply = client.put(f"/Patient/{id_}", json=patient(gender="male"))

    assert_outcome(reply, 400, expression="Patient.id")
    assert_outcome(read(client, "Patient", id_), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/Foo/1"),
        ("POST", "/Foo"),
        ("PUT", "/Foo/1"),
        ("DELETE", "/Foo/1"),
        ("PATCH", "/Foo/1"),
        ("GET", "/Foo/_history"),
        ("GET", "/Foo/1/_history"),
        ("GET", "/Foo/1/_history/1"),
        ("GET", "/patient/1"),  # URLs are case sensitive (http.html#general)
        ("GET", "/Resource/1"),  # abstract types are not resource endpoints
        ("GET", "/DomainResource/1"),
    ],
)
def test_unknown_resource_type_is_404(client: httpx.Client, method: str, path: str) -> None:
    body = json.dumps({"resourceType": path.split("/")[1], "id": "1"}).encode()
    headers = {"Content-Type": JSON_PATCH} if method == "PATCH" else {}
    content = b"[]" if method == "PATCH" else body

    assert_outcome(client.request(method, path, content=content, headers=headers), 404, code="not-found")


def test_version_conflict_is_412(client: httpx.Client) -> None:
    existing = create(client, patient(gender="male"))
    put(client, {**existing, "gender": "female"})

    reply = put(client, {**existing, "gender": "other"}, headers={"If-Match": 'W/"1"'})

    assert_outcome(reply, 412)
    assert read(client, "Patient", existing["id"]).json()["gender"] == "female"


@pytest.mark.parametrize("if_match", ["3", "W/3", "*x", 'W/"abc"', ""])
def test_malformed_if_match_is_400(client: httpx.Client, if_match: str) -> None:
    # An If-Match that is not a version ETag cannot be checked; it must not be ignored (a blind write).
    existing = create(client, patient(gender="male"))

    reply = put(client, {**existing, "gender": "female"}, headers={"If-Match": if_match})

    assert_outcome(reply, (400, 412))
    assert read(client, "Patient", existing["id"]).json() == existing


def test_read_of_a_deleted_resource_is_410(client: httpx.Client) -> None:
    existing = create(client, patient(gender="male"))
    client.delete(f"/Patient/{existing['id']}")

    reply = read(client, "Patient", existing["id"])

    assert_outcome(reply, 410, code="deleted")
    # http.html#read: a server MAY include the ETag of the deletion on the 410.
    if "etag" in reply.headers:
        assert etag_version(reply) == 2


def test_unknown_id_is_404(client: httpx.Client) -> None:
    id_ = unique("never")
    assert_outcome(read(client, "Patient", id_), 404, code="not-found")
    assert_outcome(client.get(f"/Patient/{id_}/_history/1"), 404, code="not-found")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_unsupported_media_type_is_415(client: httpx.Client, content_type: str) -> None:
    body = json.dumps(patient(gender="male")).encode()
    id_ = unique("media")

    assert_outcome(client.post("/Patient", content=body, headers={"Content-Type": content_type}), 415)
    assert_outcome(client.put(f"/Patient/{id_}", content=body, headers={"Content-Type": content_type}), 415)
    assert_outcome(read(client, "Patient", id_), 404)


@pytest.mark.parametrize("path", ["/metadata", "/Patient/_history", "/_history"])
def test_unacceptable_accept_is_406(client: httpx.Client, path: str) -> None:
    assert_outcome(client.get(path, headers={"Accept": "application/fhir+xml"}), 406)


def test_body_over_the_limit_is_413(small_client: httpx.Client) -> None:
    resource = patient(gender="male", name=[{"family": "x" * (SMALL_BODY_LIMIT * 2)}])
    before = small_client.get("/_history", params={"_count": 1}).json().get("entry", [])

    reply = small_client.post("/Patient", json=resource)

    assert "content-length" in reply.request.headers
    assert_outcome(reply, 413)
    assert small_client.get("/_history", params={"_count": 1}).json().get("entry", []) == before


def test_streamed_body_over_the_limit_is_413(small_client: httpx.Client) -> None:
    # No Content-Length: the limit is enforced on the bytes as they arrive, not only on the declared size.
    def chunks() -> Iterator[bytes]:
        yield b'{"resourceType": "Patient", "name": [{"family": "'
        for _ in range(10):
            yield b"y" * 200
        yield b'"}]}'

    reply = small_client.post("/Patient", content=chunks())

    assert "content-length" not in reply.request.headers
    assert_outcome(reply, 413)


def test_body_under_the_limit_is_accepted_by_the_small_server(small_client: httpx.Client) -> None:
    reply = small_client.post("/Patient", json=patient(gender="male"))

    assert reply.status_code == 201, reply.text


def test_patch_over_the_limit_is_413(small_client: httpx.Client) -> None:
    created = small_client.post("/Patient", json=patient(gender="male")).json()
    ops = [{"op": "add", "path": "/name", "value": [{"family": "z" * (SMALL_BODY_LIMIT * 2)}]}]

    reply = small_client.patch(
        f"/Patient/{created['id']}", content=json.dumps(ops).encode(), headers={"Content-Type": JSON_PATCH}
    )

    assert_outcome(reply, 413)
    assert small_client.get(f"/Patient/{created['id']}").json() == created


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        (patient(gender="robot"), "Patient.gender"),
        (patient(foo="bar"), "Patient.foo"),
        (patient(birthDate="yesterday"), "Patient.birthDate"),
        (patient(active="true"), "Patient.active"),
        (patient(name={"family": "x"}), "Patient.name"),
        (patient(name=[{"given": "x"}]), "Patient.name[0].given"),
        ({"resourceType": "Observation", "code": {"text": "x"}}, "Observation.status"),
        (
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueFoo": 1},
            "Observation.valueFoo",
        ),
    ],
)
def test_invalid_resource_is_400_with_expression(client: httpx.Client, resource: dict, expression: str) -> None:
    rtype = resource["resourceType"]
    id_ = unique("invalid")

    assert_outcome(client.post(f"/{rtype}", json=resource), 400, expression=expression)
    assert_outcome(client.put(f"/{rtype}/{id_}", json={**resource, "id": id_}), 400, expression=expression)
    assert_outcome(read(client, rtype, id_), 404)


@pytest.mark.parametrize("bad_id", ["a_b", "x" * 65, "a%20b", "%C3%A9t%C3%A9", "a:b"])
def test_invalid_id_in_the_url(client: httpx.Client, bad_id: str) -> None:
    body = json.dumps(patient(id=bad_id, gender="male")).encode()

    # An id that can never be valid (datatypes.html#id: [A-Za-z0-9\-\.]{1,64}) is a 400 on a write ...
    assert_outcome(client.put(f"/Patient/{bad_id}", content=body), 400)
    assert_outcome(client.delete(f"/Patient/{bad_id}"), 400)
    assert_outcome(client.patch(f"/Patient/{bad_id}", content=b"[]", headers={"Content-Type": JSON_PATCH}), (400, 404))
    # ... and on a read it names nothing that exists.
    assert_outcome(client.get(f"/Patient/{bad_id}"), (400, 404))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/Patient/abc"),
        ("PUT", "/_history"),  # PUT/PATCH [type] are conditional update/patch; the literal _history wins
        ("PATCH", "/_history"),
        ("DELETE", "/metadata"),
        ("POST", "/metadata"),
        ("PUT", "/Patient/abc/_history"),
        ("DELETE", "/Patient/abc/_history/1"),
        ("DELETE", "/Patient/_history"),  # the literal _history wins over {id}: not a delete of id "_history"
        ("POST", "/_history"),
    ],
)
def test_unsupported_method_on_a_route_is_405(client: httpx.Client, method: str, path: str) -> None:
    assert_outcome(client.request(method, path, content=b"{}"), 405)


@pytest.mark.parametrize("path", ["/Patient/a/b/c/d", "/Patient/a/_history/1/extra", "/Patient/a/_historyx"])
def test_unknown_path_is_404(client: httpx.Client, path: str) -> None:
    assert_outcome(client.get(path), 404)
