"""Version-aware updates (http.html#concurrency), conditional read (http.html#cread) and
``Prefer: return`` (http.html#ops) over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from tests.e2e.support import assert_outcome, create, etag_version, patient, put, read


def test_put_with_if_match_mismatch_is_412_and_changes_nothing(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))

    reply = put(client, {**original, "gender": "female"}, headers={"If-Match": 'W/"2"'})

    assert_outcome(reply, 412)
    current = read(client, "Patient", original["id"])
    assert current.json() == original
    assert etag_version(current) == 1
    assert [e["response"]["etag"] for e in client.get(f"/Patient/{original['id']}/_history").json()["entry"]] == [
        'W/"1"'
    ]


@pytest.mark.parametrize("etag", ['W/"1"', '"1"'])
def test_put_with_matching_if_match_succeeds(client: httpx.Client, etag: str) -> None:
    original = create(client, patient(gender="male"))

    reply = put(client, {**original, "gender": "female"}, headers={"If-Match": etag})

    assert reply.status_code == 200, reply.text
    assert etag_version(reply) == 2


def test_if_match_on_a_stale_version_after_an_update_is_412(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    assert put(client, {**original, "gender": "female"}, headers={"If-Match": 'W/"1"'}).status_code == 200

    reply = put(client, {**original, "gender": "other"}, headers={"If-Match": 'W/"1"'})

    assert_outcome(reply, 412)
    assert read(client, "Patient", original["id"]).json()["gender"] == "female"


def test_if_none_match_with_the_current_version_is_304(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))

    reply = read(client, "Patient", original["id"], headers={"If-None-Match": 'W/"1"'})

    assert reply.status_code == 304
    assert reply.content == b""


def test_if_none_match_with_an_old_version_returns_the_resource(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    updated = put(client, {**original, "gender": "female"}).json()

    reply = read(client, "Patient", original["id"], headers={"If-None-Match": 'W/"1"'})

    assert reply.status_code == 200
    assert reply.json() == updated
    assert etag_version(reply) == 2


def test_if_modified_since_in_the_future_is_304(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    future = format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)

    reply = read(client, "Patient", original["id"], headers={"If-Modified-Since": future})

    assert reply.status_code == 304
    assert reply.content == b""


def test_if_modified_since_its_own_last_modified_is_304(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    last_modified = read(client, "Patient", original["id"]).headers["last-modified"]

    reply = read(client, "Patient", original["id"], headers={"If-Modified-Since": last_modified})

    assert reply.status_code == 304


def test_if_modified_since_in_the_past_returns_the_resource(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    past = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)

    reply = read(client, "Patient", original["id"], headers={"If-Modified-Since": past})

    assert reply.status_code == 200
    assert reply.json() == original


@pytest.mark.parametrize("value", ["yesterday", "", "Sun, 99 Nov 2026 06:45:30 GMT"])
def test_an_invalid_if_modified_since_is_ignored(client: httpx.Client, value: str) -> None:
    # RFC 7232 §3.3: a recipient MUST ignore an If-Modified-Since that is not a valid HTTP-date.
    original = create(client, patient(gender="male"))

    reply = read(client, "Patient", original["id"], headers={"If-Modified-Since": value})

    assert reply.status_code == 200
    assert reply.json() == original


def test_conditional_read_of_a_deleted_resource_is_still_410(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    assert client.delete(f"/Patient/{original['id']}").status_code == 204

    reply = read(client, "Patient", original["id"], headers={"If-None-Match": 'W/"1"'})

    assert_outcome(reply, 410)


@pytest.mark.parametrize("operation", ["create", "update"])
def test_prefer_return_minimal_sends_no_body(client: httpx.Client, operation: str) -> None:
    headers = {"Prefer": "return=minimal"}
    if operation == "create":
        reply = client.post("/Patient", json=patient(gender="male"), headers=headers)
        status, version = 201, 1
    else:
        original = create(client, patient(gender="male"))
        reply = put(client, {**original, "gender": "female"}, headers=headers)
        status, version = 200, 2

    assert reply.status_code == status, reply.text
    assert reply.content == b""
    assert etag_version(reply) == version
    assert "last-modified" in reply.headers
    if operation == "create":
        assert "/_history/1" in reply.headers["location"]


@pytest.mark.parametrize("operation", ["create", "update"])
def test_prefer_return_representation_sends_the_resource(client: httpx.Client, operation: str) -> None:
    headers = {"Prefer": "return=representation"}
    if operation == "create":
        reply = client.post("/Patient", json=patient(gender="male"), headers=headers)
        assert reply.status_code == 201
    else:
        original = create(client, patient(gender="male"))
        reply = put(client, {**original, "gender": "female"}, headers=headers)
        assert reply.status_code == 200

    body = reply.json()
    assert body["resourceType"] == "Patient"
    assert body["meta"]["versionId"] == str(etag_version(reply))
    assert read(client, "Patient", body["id"]).json() == body


@pytest.mark.parametrize("operation", ["create", "update"])
def test_prefer_return_operation_outcome(client: httpx.Client, operation: str) -> None:
    headers = {"Prefer": "return=OperationOutcome"}
    if operation == "create":
        reply = client.post("/Patient", json=patient(gender="male"), headers=headers)
        assert reply.status_code == 201
        assert "location" in reply.headers
    else:
        original = create(client, patient(gender="male"))
        reply = put(client, {**original, "gender": "female"}, headers=headers)
        assert reply.status_code == 200

    body = reply.json()
    assert body["resourceType"] == "OperationOutcome"
    # A success: hints and warnings at most, never an error (http.html#ops).
    assert body["issue"]
    assert all(issue["severity"] in ("information", "warning") for issue in body["issue"])


def test_prefer_does_not_change_an_error_answer(client: httpx.Client) -> None:
    # "this setting only applies to successful interactions": a failure still carries an OperationOutcome.
    reply = client.post("/Patient", json=patient(gender="robot"), headers={"Prefer": "return=minimal"})

    assert_outcome(reply, 400, expression="Patient.gender")
