"""Content types (http://hl7.org/fhir/R4/http.html#mime-type): JSON only, XML refused."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.support import FHIR_JSON, assert_outcome, create, patient, read


def _media_type(reply: httpx.Response) -> str:
    return reply.headers["content-type"].split(";")[0].strip()


def test_default_is_fhir_json_in_utf8(bare_client: httpx.Client, client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))

    reply = bare_client.get(f"/Patient/{original['id']}")

    assert "accept" not in reply.request.headers
    assert reply.status_code == 200
    assert _media_type(reply) == FHIR_JSON
    # http.html#mime-type: responses SHALL set the charset to UTF-8.
    assert "charset=utf-8" in reply.headers["content-type"].lower().replace(" ", "")
    assert reply.json() == original


def test_create_without_content_type_is_read_as_fhir_json(bare_client: httpx.Client) -> None:
    reply = bare_client.post("/Patient", content=json.dumps(patient(gender="male")).encode())

    assert reply.status_code == 201, reply.text
    assert _media_type(reply) == FHIR_JSON


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/fhir+json", FHIR_JSON),
        ("application/json", "application/json"),
        ("*/*", FHIR_JSON),
        ("application/fhir+xml;q=0.9, application/fhir+json", FHIR_JSON),
        ("application/fhir+xml, application/fhir+json;q=0.5", FHIR_JSON),
        ("text/html;q=0.1, application/json;q=0.8", "application/json"),
        ("application/fhir+json; fhirVersion=4.0", FHIR_JSON),  # http.html#version-parameter
    ],
)
def test_accept_chooses_a_json_type(client: httpx.Client, accept: str, expected: str) -> None:
    original = create(client, patient(gender="male"))

    reply = read(client, "Patient", original["id"], headers={"Accept": accept})

    assert reply.status_code == 200, reply.text
    assert _media_type(reply) == expected
    assert reply.json() == original


@pytest.mark.parametrize("fmt", ["json", "application/fhir+json", "application/json"])
def test_format_parameter_json(client: httpx.Client, fmt: str) -> None:
    # http.html#mime-type: _format json, application/json and application/fhir+json mean the JSON format,
    # and _format overrides Accept.
    original = create(client, patient(gender="male"))

    reply = read(client, "Patient", original["id"], params={"_format": fmt}, headers={"Accept": "application/fhir+xml"})

    assert reply.status_code == 200, reply.text
    assert _media_type(reply) in (FHIR_JSON, "application/json")
    assert reply.json() == original


def test_pretty_true_indents(client: httpx.Client) -> None:
    original = create(client, patient(gender="male", name=[{"family": "Pretty", "given": ["Print"]}]))

    plain = read(client, "Patient", original["id"])
    pretty = read(client, "Patient", original["id"], params={"_pretty": "true"})

    assert "\n" not in plain.text
    assert "\n  " in pretty.text
    assert pretty.json() == plain.json() == original
    assert _media_type(pretty) == FHIR_JSON


def test_pretty_applies_to_error_outcomes_too(client: httpx.Client) -> None:
    reply = client.post("/Patient", params={"_pretty": "true"}, json=patient(gender="robot"))

    assert_outcome(reply, 400)
    assert "\n  " in reply.text


@pytest.mark.parametrize("accept", ["application/fhir+xml", "application/xml", "text/xml", "text/turtle"])
def test_xml_accept_is_406(client: httpx.Client, accept: str) -> None:
    original = create(client, patient(gender="male"))

    reply = read(client, "Patient", original["id"], headers={"Accept": accept})

    assert_outcome(reply, 406)


@pytest.mark.parametrize("fmt", ["xml", "application/fhir+xml", "text/xml", "ttl"])
def test_xml_format_is_406(client: httpx.Client, fmt: str) -> None:
    original = create(client, patient(gender="male"))

    assert_outcome(read(client, "Patient", original["id"], params={"_format": fmt}), 406)


def test_406_is_decided_before_any_write(client: httpx.Client) -> None:
    # An unacceptable Accept on a create must not leave a resource behind.
    marker = create(client, patient(gender="male"))

    reply = client.post("/Patient", json=patient(gender="female"), headers={"Accept": "application/fhir+xml"})

    assert_outcome(reply, 406)
    newest = client.get("/_history", params={"_count": 1}).json()["entry"][0]
    assert newest["fullUrl"].endswith(f"/Patient/{marker['id']}")


@pytest.mark.parametrize("content_type", ["application/fhir+xml", "application/xml", "text/xml"])
def test_xml_content_type_is_415(client: httpx.Client, content_type: str) -> None:
    xml = b'<Patient xmlns="http://hl7.org/fhir"><gender value="male"/></Patient>'

    created = client.post("/Patient", content=xml, headers={"Content-Type": content_type})
    updated = client.put("/Patient/xml-body", content=xml, headers={"Content-Type": content_type})

    assert_outcome(created, 415)
    assert_outcome(updated, 415)
    assert_outcome(read(client, "Patient", "xml-body"), 404)
