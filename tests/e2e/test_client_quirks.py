"""What common clients send beyond the letter of R4, honoured (issue 15, point 4).

- ``POST [type]?criteria`` (fhirpy's ``get_or_create``) is a conditional create: the query is read
  as ``If-None-Exist``, so a second call finds the first resource instead of creating a duplicate.
- JSON Merge Patch (RFC 7386, ``application/merge-patch+json``) is a PATCH form, validated like any.
- An update or patch that changes nothing writes no new version (``FHIRFLOW_SKIP_UNCHANGED_UPDATES``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import FHIR_JSON, assert_outcome, create, etag_version, history, patient, put, read, unique

MERGE_PATCH = "application/merge-patch+json"


def _merge_patch(client: httpx.Client, id_: str, document: Any, **headers: str) -> httpx.Response:
    return client.patch(
        f"/Patient/{id_}", content=json.dumps(document).encode(), headers={"Content-Type": MERGE_PATCH, **headers}
    )


def _count(client: httpx.Client, **params: str) -> int:
    reply = client.get("/Patient", params={**params, "_summary": "count"})
    assert reply.status_code == 200, reply.text
    total: int = reply.json()["total"]
    return total


# -- POST [type]?criteria ----------------------------------------------------------------------------


def test_post_with_criteria_in_the_url_creates_once(client: httpx.Client) -> None:
    value = unique("goc")
    body = patient(identifier=[{"system": "urn:quirks", "value": value}])
    first = client.post("/Patient", params={"identifier": f"urn:quirks|{value}"}, json=body)
    assert first.status_code == 201, first.text
    again = client.post("/Patient", params={"identifier": f"urn:quirks|{value}"}, json=body)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert _count(client, identifier=f"urn:quirks|{value}") == 1


def test_post_with_criteria_that_match_several_is_refused(client: httpx.Client) -> None:
    family = unique("Dup")
    create(client, patient(name=[{"family": family}]))
    create(client, patient(name=[{"family": family}]))
    reply = client.post("/Patient", params={"family:exact": family}, json=patient(name=[{"family": family}]))
    assert_outcome(reply, 412)
    assert _count(client, **{"family:exact": family}) == 2


def test_post_with_criteria_in_url_and_header_is_a_400(client: httpx.Client) -> None:
    value = unique("both")
    reply = client.post(
        "/Patient",
        params={"identifier": f"urn:quirks|{value}"},
        json=patient(),
        headers={"If-None-Exist": f"identifier=urn:quirks|{value}"},
    )
    assert_outcome(reply, 400, expression="If-None-Exist")
    assert _count(client, identifier=f"urn:quirks|{value}") == 0


def test_post_with_an_unknown_parameter_in_the_url_is_a_400(client: httpx.Client) -> None:
    reply = client.post("/Patient", params={"no-such-param": "x"}, json=patient())
    assert_outcome(reply, 400)


def test_post_with_only_format_parameters_is_a_plain_create(client: httpx.Client) -> None:
    reply = client.post("/Patient", params={"_format": "json", "_pretty": "true"}, json=patient())
    assert reply.status_code == 201, reply.text


# -- JSON Merge Patch --------------------------------------------------------------------------------


def test_merge_patch_sets_replaces_and_removes(client: httpx.Client) -> None:
    original = create(
        client, patient(gender="male", birthDate="1970-01-01", name=[{"family": "Before", "given": ["A"]}])
    )
    reply = _merge_patch(client, original["id"], {"gender": "female", "birthDate": None, "active": True})
    assert reply.status_code == 200, reply.text
    assert etag_version(reply) == 2
    current = read(client, "Patient", original["id"]).json()
    assert current["gender"] == "female"
    assert current["active"] is True
    assert "birthDate" not in current
    assert current["name"] == [{"family": "Before", "given": ["A"]}]


def test_merge_patch_result_is_validated(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    reply = _merge_patch(client, original["id"], {"gender": "sometimes"})
    assert_outcome(reply, (400, 422), expression="Patient.gender")
    assert read(client, "Patient", original["id"]).json() == original


def test_merge_patch_may_not_change_the_id(client: httpx.Client) -> None:
    original = create(client, patient())
    reply = _merge_patch(client, original["id"], {"id": "other"})
    assert_outcome(reply, (400, 422), expression="Patient.id")


def test_merge_patch_must_be_an_object(client: httpx.Client) -> None:
    original = create(client, patient())
    assert_outcome(_merge_patch(client, original["id"], ["gender"]), 400)
    bad = client.patch(f"/Patient/{original['id']}", content=b"{nope", headers={"Content-Type": MERGE_PATCH})
    assert_outcome(bad, 400)


def test_merge_patch_honours_if_match(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    reply = _merge_patch(client, original["id"], {"gender": "female"}, **{"If-Match": 'W/"7"'})
    assert_outcome(reply, 412)


def test_conditional_merge_patch(client: httpx.Client) -> None:
    value = unique("cmp")
    original = create(client, patient(identifier=[{"system": "urn:quirks", "value": value}]))
    reply = client.patch(
        "/Patient",
        params={"identifier": f"urn:quirks|{value}"},
        content=b'{"active": false}',
        headers={"Content-Type": MERGE_PATCH},
    )
    assert reply.status_code == 200, reply.text
    assert read(client, "Patient", original["id"]).json()["active"] is False


# -- updates that change nothing ---------------------------------------------------------------------


def test_unchanged_update_keeps_the_version(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    again = put(client, original)
    assert again.status_code == 200, again.text
    assert etag_version(again) == 1
    assert again.json()["meta"] == original["meta"]
    # versionId and lastUpdated in the body are the server's: changing only them changes nothing.
    stale = {**original, "meta": {"versionId": "9", "lastUpdated": "2001-01-01T00:00:00Z"}}
    assert etag_version(put(client, stale)) == 1
    assert len(history(client, f"/Patient/{original['id']}/_history")) == 1
    changed = put(client, {**original, "gender": "female"})
    assert etag_version(changed) == 2
    tagged = put(client, {**original, "gender": "female", "meta": {"tag": [{"code": "x"}]}})
    assert etag_version(tagged) == 3


def test_unchanged_patch_keeps_the_version(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    reply = _merge_patch(client, original["id"], {"gender": "male"})
    assert reply.status_code == 200, reply.text
    assert etag_version(reply) == 1
    assert len(history(client, f"/Patient/{original['id']}/_history")) == 1


def test_unchanged_update_still_checks_if_match(client: httpx.Client) -> None:
    original = create(client, patient(gender="male"))
    assert_outcome(put(client, original, headers={"If-Match": 'W/"5"'}), 412)


@pytest.fixture(scope="module")
def versioning_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    env = {"FHIRFLOW_SKIP_UNCHANGED_UPDATES": "false"}
    with (
        LocalServer(data_dir=tmp_path_factory.mktemp("every-update"), env=env) as server,
        httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as http,
    ):
        yield http


def test_unchanged_updates_version_when_configured(versioning_client: httpx.Client) -> None:
    original = create(versioning_client, patient(gender="male"))
    assert etag_version(put(versioning_client, original)) == 2
    assert etag_version(_merge_patch(versioning_client, original["id"], {"gender": "male"})) == 3


def test_plain_json_partial_resource_is_a_merge_patch(client: httpx.Client) -> None:
    """fhirpy's ``patch()`` sends the changed fields as ``application/json``; a FHIRPath Patch is
    always a Parameters resource, so anything else in plain JSON is read as a merge patch."""
    original = create(client, patient(gender="male", active=True))
    reply = client.patch(
        f"/Patient/{original['id']}",
        content=b'{"gender": "female", "active": null}',
        headers={"Content-Type": "application/json"},
    )
    assert reply.status_code == 200, reply.text
    current = read(client, "Patient", original["id"]).json()
    assert current["gender"] == "female"
    assert "active" not in current
    # application/fhir+json stays FHIRPath Patch only: a partial resource there is a 400.
    strict = client.patch(
        f"/Patient/{original['id']}", content=b'{"gender": "male"}', headers={"Content-Type": FHIR_JSON}
    )
    assert_outcome(strict, 400)
