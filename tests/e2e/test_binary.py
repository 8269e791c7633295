"""Binary over REST (http://hl7.org/fhir/R4/binary.html#rest): FHIR JSON when a FHIR type is asked
for, the raw content with its own Content-Type otherwise; raw bodies are accepted on create/update."""

from __future__ import annotations

import base64
import os

import httpx
import pytest

from tests.e2e.support import FHIR_JSON, assert_outcome, create, etag_version, unique

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def _media_type(reply: httpx.Response) -> str:
    return reply.headers["content-type"].split(";")[0].strip()


def test_binary_from_json_form_reads_back_as_fhir_json(client: httpx.Client) -> None:
    created = create(
        client, {"resourceType": "Binary", "contentType": "application/pdf", "data": base64.b64encode(PDF).decode()}
    )

    reply = client.get(f"/Binary/{created['id']}", headers={"Accept": FHIR_JSON})

    assert reply.status_code == 200
    assert _media_type(reply) == FHIR_JSON
    body = reply.json()
    assert body == created
    assert body["contentType"] == "application/pdf"
    assert base64.b64decode(body["data"]) == PDF


@pytest.mark.parametrize(
    "accept", ["application/pdf", "*/*", "application/*", "application/pdf;q=0.9, text/plain;q=0.1"]
)
def test_binary_reads_back_raw_when_accept_is_its_content_type(client: httpx.Client, accept: str) -> None:
    created = create(
        client, {"resourceType": "Binary", "contentType": "application/pdf", "data": base64.b64encode(PDF).decode()}
    )

    reply = client.get(f"/Binary/{created['id']}", headers={"Accept": accept})

    assert reply.status_code == 200, reply.text
    assert _media_type(reply) == "application/pdf"
    assert reply.content == PDF
    assert etag_version(reply) == 1


def test_binary_from_raw_bytes_round_trips_byte_for_byte(client: httpx.Client) -> None:
    content = os.urandom(4096) + b"\x00\xff\xfe" + bytes(range(256))

    reply = client.post("/Binary", content=content, headers={"Content-Type": "image/png"})

    assert reply.status_code == 201, reply.text
    assert etag_version(reply) == 1
    id_ = reply.headers["location"].split("/Binary/")[1].split("/")[0]
    raw = client.get(f"/Binary/{id_}", headers={"Accept": "image/png"})
    assert raw.status_code == 200
    assert _media_type(raw) == "image/png"
    assert raw.content == content
    as_json = client.get(f"/Binary/{id_}", headers={"Accept": FHIR_JSON})
    assert as_json.status_code == 200
    assert as_json.json()["resourceType"] == "Binary"
    assert as_json.json()["contentType"] == "image/png"
    assert base64.b64decode(as_json.json()["data"]) == content


def test_binary_raw_text_keeps_its_bytes(client: httpx.Client) -> None:
    content = "naïve café ✓\r\n  trailing spaces  \n".encode()

    reply = client.post("/Binary", content=content, headers={"Content-Type": "text/plain; charset=utf-8"})

    assert reply.status_code == 201, reply.text
    id_ = reply.headers["location"].split("/Binary/")[1].split("/")[0]
    raw = client.get(f"/Binary/{id_}", headers={"Accept": "text/plain"})
    assert raw.status_code == 200
    assert _media_type(raw) == "text/plain"
    assert raw.content == content


def test_binary_put_of_raw_bytes_creates_and_updates(client: httpx.Client) -> None:
    id_ = unique("bin")

    first = client.put(f"/Binary/{id_}", content=b"one", headers={"Content-Type": "application/octet-stream"})
    second = client.put(f"/Binary/{id_}", content=b"two", headers={"Content-Type": "application/octet-stream"})

    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert etag_version(second) == 2
    assert client.get(f"/Binary/{id_}", headers={"Accept": "*/*"}).content == b"two"
    assert client.get(f"/Binary/{id_}/_history/1", headers={"Accept": "application/octet-stream"}).content == b"one"


def test_binary_vread_as_json(client: httpx.Client) -> None:
    created = create(
        client, {"resourceType": "Binary", "contentType": "text/csv", "data": base64.b64encode(b"a,b\n1,2\n").decode()}
    )

    reply = client.get(f"/Binary/{created['id']}/_history/1", headers={"Accept": FHIR_JSON})

    assert reply.status_code == 200
    assert reply.json() == created


def test_binary_with_an_accept_it_cannot_satisfy_is_406(client: httpx.Client) -> None:
    created = create(
        client, {"resourceType": "Binary", "contentType": "image/png", "data": base64.b64encode(b"png").decode()}
    )

    assert_outcome(client.get(f"/Binary/{created['id']}", headers={"Accept": "application/pdf"}), 406)


def test_binary_read_of_unknown_id_is_404_whatever_accept(client: httpx.Client) -> None:
    assert_outcome(client.get(f"/Binary/{unique('never')}", headers={"Accept": "image/png"}), 404)


def test_format_overrides_accept_on_a_binary_read(client: httpx.Client) -> None:
    # binary.html#rest: _format overrides Accept and means the FHIR format.
    created = create(
        client, {"resourceType": "Binary", "contentType": "image/png", "data": base64.b64encode(b"png").decode()}
    )

    reply = client.get(f"/Binary/{created['id']}", params={"_format": "json"}, headers={"Accept": "image/png"})

    assert reply.status_code == 200
    assert reply.json() == created


def test_security_context_header_is_kept(client: httpx.Client) -> None:
    # binary.html#rest: X-Security-Context carries Binary.securityContext.reference in the native form.
    reply = client.post(
        "/Binary", content=b"secret", headers={"Content-Type": "text/plain", "X-Security-Context": "Patient/p-1"}
    )
    assert reply.status_code == 201, reply.text
    id_ = reply.headers["location"].split("/Binary/")[1].split("/")[0]

    as_json = client.get(f"/Binary/{id_}", headers={"Accept": FHIR_JSON}).json()
    raw = client.get(f"/Binary/{id_}", headers={"Accept": "text/plain"})

    assert as_json["securityContext"] == {"reference": "Patient/p-1"}
    assert raw.headers["x-security-context"] == "Patient/p-1"
    assert raw.content == b"secret"


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("application/json", b'{"hello": "world", "n": 1}'),
        ("application/fhir+json", b'{"resourceType": "Patient", "gender": "male"}'),
        ("application/fhir+xml", b'<Patient xmlns="http://hl7.org/fhir"><gender value="male"/></Patient>'),
    ],
)
def test_fhir_and_json_content_that_is_not_a_binary_is_stored_as_is(
    client: httpx.Client, content_type: str, content: bytes
) -> None:
    # binary.html#rest: "the data is accepted as is and treated as the content of a Binary, including when the
    # content type is application/fhir+xml or application/fhir+json, except ... where the content is actually a
    # Binary resource".
    reply = client.post("/Binary", content=content, headers={"Content-Type": content_type})

    assert reply.status_code == 201, reply.text
    id_ = reply.headers["location"].split("/Binary/")[1].split("/")[0]
    as_json = client.get(f"/Binary/{id_}", headers={"Accept": FHIR_JSON}).json()
    assert as_json["contentType"] == content_type
    assert base64.b64decode(as_json["data"]) == content
