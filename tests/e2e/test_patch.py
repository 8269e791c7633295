"""patch (http://hl7.org/fhir/R4/http.html#patch): JSON Patch and FHIRPath Patch.

The patched document is processed as an update: it is validated, versioned, version-aware with
If-Match, and answers as an update does (Prefer included). A failing JSON Patch ``test`` is 422.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.support import FHIR_JSON, JSON_PATCH, assert_outcome, create, etag_version, patient, read, unique


def _json_patch(client: httpx.Client, id_: str, ops: Any, **headers: str) -> httpx.Response:
    return client.patch(
        f"/Patient/{id_}", content=json.dumps(ops).encode(), headers={"Content-Type": JSON_PATCH, **headers}
    )


def _fhirpath_patch(
    client: httpx.Client, id_: str, *operations: list[dict[str, Any]], **headers: str
) -> httpx.Response:
    body = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": op} for op in operations]}
    return client.patch(f"/Patient/{id_}", json=body, headers={"Content-Type": FHIR_JSON, **headers})


def _unchanged(client: httpx.Client, before: dict[str, Any]) -> None:
    current = read(client, before["resourceType"], before["id"])
    assert current.status_code == 200
    assert current.json() == before


def test_json_patch_applies_and_bumps_the_version(client: httpx.Client) -> None:
    original = create(client, patient(gender="male", name=[{"family": "Before"}]))

    reply = _json_patch(
        client,
        original["id"],
        [
            {"op": "test", "path": "/gender", "value": "male"},
            {"op": "replace", "path": "/gender", "value": "female"},
            {"op": "add", "path": "/birthDate", "value": "1980-05-06"},
            {"op": "replace", "path": "/name/0/family", "value": "After"},
        ],
    )

    assert reply.status_code == 200, reply.text
    assert etag_version(reply) == 2
    body = reply.json()
    assert body["meta"]["versionId"] == "2"
    assert body["gender"] == "female"
    assert body["birthDate"] == "1980-05-06"
    assert body["name"] == [{"family": "After"}]
    assert read(client, "Patient", original["id"]).json() == body


def test_fhirpath_patch_applies_and_bumps_the_version(client: httpx.Client) -> None:
    original = create(client, patient(gender="male", active=True))

    reply = _fhirpath_patch(
        client,
        original["id"],
        [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.gender"},
            {"name": "value", "valueCode": "female"},
        ],
        [
            {"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": "Patient"},
            {"name": "name", "valueString": "birthDate"},
            {"name": "value", "valueDate": "1990-01-02"},
        ],
        [{"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": "Patient.active"}],
    )

    assert reply.status_code == 200, reply.text
    assert etag_version(reply) == 2
    body = reply.json()
    assert body["gender"] == "female"
    assert body["birthDate"] == "1990-01-02"
    assert "active" not in body
    assert read(client, "Patient", original["id"]).json() == body


def test_patch_with_matching_if_match_succeeds(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))

    reply = _json_patch(
        client, original["id"], [{"op": "replace", "path": "/gender", "value": "other"}], **{"If-Match": 'W/"1"'}
    )

    assert reply.status_code == 200, reply.text
    assert etag_version(reply) == 2


def test_patch_producing_an_invalid_resource_is_rejected(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))

    reply = _json_patch(client, original["id"], [{"op": "replace", "path": "/gender", "value": "robot"}])

    assert_outcome(reply, (400, 422), expression="Patient.gender")
    _unchanged(client, original)


def test_fhirpath_patch_producing_an_invalid_resource_is_rejected(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))

    reply = _fhirpath_patch(
        client,
        original["id"],
        [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.gender"},
            {"name": "value", "valueCode": "robot"},
        ],
    )

    assert_outcome(reply, (400, 422), expression="Patient.gender")
    _unchanged(client, original)


def test_patch_that_removes_the_id_is_rejected(client: httpx.Client) -> None:
    # The result is processed as an update, and an update without an id is a 400 (http.html#update).
    original = create(client, patient(gender="male"))

    reply = _json_patch(client, original["id"], [{"op": "remove", "path": "/id"}])

    assert_outcome(reply, (400, 422))
    _unchanged(client, original)


def test_failing_test_operation_is_422(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))

    reply = _json_patch(
        client,
        original["id"],
        [{"op": "replace", "path": "/gender", "value": "female"}, {"op": "test", "path": "/gender", "value": "male"}],
    )

    assert_outcome(reply, 422)
    _unchanged(client, original)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(b'[{"op": "replace", "path": "/gender", ', id="not-json"),
        pytest.param(b'{"op": "replace", "path": "/gender", "value": "female"}', id="object-not-array"),
        pytest.param(b'[{"op": "frobnicate", "path": "/gender"}]', id="unknown-op"),
        pytest.param(b'[{"op": "replace", "value": "female"}]', id="no-path"),
        pytest.param(b'[{"op": "replace", "path": "gender", "value": "female"}]', id="path-not-a-pointer"),
        pytest.param(b'[{"op": "replace", "path": "/gender"}]', id="replace-without-value"),
        pytest.param(b'[{"op": "move", "path": "/gender"}]', id="move-without-from"),
        pytest.param(b"[42]", id="op-not-object"),
        pytest.param(b"", id="empty"),
    ],
)
def test_malformed_json_patch_is_400(client: httpx.Client, document: bytes) -> None:
    original = create(client, patient(gender="male"))

    reply = client.patch(f"/Patient/{original['id']}", content=document, headers={"Content-Type": JSON_PATCH})

    assert_outcome(reply, 400)
    _unchanged(client, original)


@pytest.mark.parametrize(
    "ops",
    [
        pytest.param([{"op": "replace", "path": "/birthDate", "value": "2000-01-01"}], id="replace-missing"),
        pytest.param([{"op": "remove", "path": "/name/3"}], id="remove-missing-index"),
    ],
)
def test_json_patch_on_a_missing_target_fails(client: httpx.Client, ops: list[dict[str, Any]]) -> None:
    # RFC 6902 §4.3/§4.2: the target location MUST exist for replace and remove; an error, not a 5xx.
    original = create(client, patient(gender="male"))

    assert_outcome(_json_patch(client, original["id"], ops), (400, 422))
    _unchanged(client, original)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"resourceType": "Patient", "gender": "female"}, id="not-parameters"),
        pytest.param({"resourceType": "Parameters", "parameter": [{"name": "operation"}]}, id="no-parts"),
        pytest.param(
            {
                "resourceType": "Parameters",
                "parameter": [
                    {
                        "name": "operation",
                        "part": [{"name": "type", "valueCode": "smash"}, {"name": "path", "valueString": "Patient"}],
                    }
                ],
            },
            id="unknown-type",
        ),
        pytest.param(
            {
                "resourceType": "Parameters",
                "parameter": [
                    {
                        "name": "operation",
                        "part": [
                            {"name": "type", "valueCode": "replace"},
                            {"name": "path", "valueString": "Patient.(("},
                        ],
                    }
                ],
            },
            id="bad-fhirpath",
        ),
    ],
)
def test_malformed_fhirpath_patch_is_rejected(client: httpx.Client, body: dict[str, Any]) -> None:
    original = create(client, patient(gender="male"))

    reply = client.patch(f"/Patient/{original['id']}", json=body, headers={"Content-Type": FHIR_JSON})

    assert_outcome(reply, (400, 422))
    _unchanged(client, original)


def test_patch_with_if_match_mismatch_is_412(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))

    reply = _json_patch(
        client, original["id"], [{"op": "replace", "path": "/gender", "value": "female"}], **{"If-Match": 'W/"7"'}
    )

    assert_outcome(reply, 412)
    _unchanged(client, original)


def test_patch_of_a_deleted_resource_is_410(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    assert client.delete(f"/Patient/{original['id']}").status_code == 204

    reply = _json_patch(client, original["id"], [{"op": "replace", "path": "/gender", "value": "female"}])

    assert_outcome(reply, 410, code="deleted")
    assert_outcome(read(client, "Patient", original["id"]), 410)


def test_patch_of_an_unknown_resource_is_404(client: httpx.Client) -> None:
    id_ = unique("never")

    reply = _json_patch(client, id_, [{"op": "add", "path": "/gender", "value": "female"}])

    assert_outcome(reply, 404, code="not-found")
    assert_outcome(read(client, "Patient", id_), 404)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml-patch+xml"])
def test_patch_with_an_unsupported_content_type_is_415(client: httpx.Client, content_type: str) -> None:
    original = create(client, patient(gender="male"))

    reply = client.patch(
        f"/Patient/{original['id']}",
        content=b'[{"op": "replace", "path": "/gender", "value": "female"}]',
        headers={"Content-Type": content_type},
    )

    assert_outcome(reply, 415)
    _unchanged(client, original)


@pytest.mark.parametrize(
    ("prefer", "expect"),
    [("return=minimal", "empty"), ("return=representation", "resource"), ("return=OperationOutcome", "outcome")],
)
def test_patch_honours_prefer(client: httpx.Client, prefer: str, expect: str) -> None:
    original = create(client, patient(gender="male"))

    reply = _json_patch(
        client, original["id"], [{"op": "replace", "path": "/gender", "value": "female"}], Prefer=prefer
    )

    assert reply.status_code == 200, reply.text
    assert etag_version(reply) == 2
    if expect == "empty":
        assert reply.content == b""
    elif expect == "resource":
        assert reply.json() == read(client, "Patient", original["id"]).json()
    else:
        assert reply.json()["resourceType"] == "OperationOutcome"
        assert all(i["severity"] in ("information", "warning") for i in reply.json()["issue"])
