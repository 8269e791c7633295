"""The new write paths (JSON Merge Patch, ``$meta-add``/``$meta-delete``, ``$validate``) with
patient-, user- and granular-scoped tokens: a resource outside the token's reach answers exactly
as one that does not exist, and nothing about it is changed or told (issue 14's rules, issue 15)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e import test_authz_write_leaks as leaks
from tests.e2e.test_authz_as import AuthorizationServer
from tests.e2e.test_authz_write_leaks import (
    TOKEN_KINDS,
    World,
    assert_same,
    bearer,
    hidden_observations,
    token_for,
    unknown,
)

# The leak suite's servers and world (a module's fixtures are used where they are named).
idp, fhir, http, world = leaks.idp, leaks.fhir, leaks.http, leaks.world

MERGE_PATCH = "application/merge-patch+json"


def _version(http: httpx.Client, world: World, id_: str) -> str:
    version: str = http.get(f"/Observation/{id_}", headers=world.admin).json()["meta"]["versionId"]
    return version


@pytest.mark.parametrize("kind", TOKEN_KINDS)
@pytest.mark.parametrize(
    "document", [{"status": "not-a-status"}, {"status": "amended"}, {"valueQuantity": None}], ids=str
)
def test_merge_patch_answers_a_hidden_resource_as_one_that_does_not_exist(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str, document: dict[str, object]
) -> None:
    token = token_for(kind, world, idp)
    headers = {**token, "Content-Type": MERGE_PATCH}
    body = json.dumps(document).encode()
    nobody = unknown("obs")
    missing = http.patch(f"/Observation/{nobody}", content=body, headers=headers)
    assert missing.status_code == 404
    for hidden_id in hidden_observations(kind, world):
        before = _version(http, world, hidden_id)
        hidden = http.patch(f"/Observation/{hidden_id}", content=body, headers=headers)
        assert_same(hidden, missing, hidden_id, nobody)
        assert _version(http, world, hidden_id) == before


@pytest.mark.parametrize("kind", TOKEN_KINDS)
@pytest.mark.parametrize("operation", ["$meta-add", "$meta-delete", "$meta"])
def test_meta_operations_answer_a_hidden_resource_as_one_that_does_not_exist(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str, operation: str
) -> None:
    token = token_for(kind, world, idp)
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "meta", "valueMeta": {"tag": [{"system": "urn:leak", "code": "x"}]}}],
    }
    nobody = unknown("obs")
    missing = http.post(f"/Observation/{nobody}/{operation}", json=parameters, headers=token)
    assert missing.status_code == 404, missing.text
    for hidden_id in hidden_observations(kind, world):
        before = _version(http, world, hidden_id)
        hidden = http.post(f"/Observation/{hidden_id}/{operation}", json=parameters, headers=token)
        assert_same(hidden, missing, hidden_id, nobody)
        assert _version(http, world, hidden_id) == before


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_validate_for_update_or_delete_of_a_hidden_resource_reveals_nothing(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str
) -> None:
    token = token_for(kind, world, idp)
    nobody = unknown("obs")
    missing = http.post(f"/Observation/{nobody}/$validate", params={"mode": "delete"}, headers=token)
    assert missing.status_code == 404, missing.text
    for hidden_id in hidden_observations(kind, world):
        hidden = http.post(f"/Observation/{hidden_id}/$validate", params={"mode": "delete"}, headers=token)
        assert_same(hidden, missing, hidden_id, nobody)


def test_everything_of_another_patient_is_unknown(http: httpx.Client, idp: AuthorizationServer, world: World) -> None:
    token = token_for("patient", world, idp)
    hidden = http.get(f"/Patient/{world.them}/$everything", headers=token)
    nobody = unknown("patient")
    missing = http.get(f"/Patient/{nobody}/$everything", headers=token)
    assert_same(hidden, missing, world.them, nobody)
    own = http.get(f"/Patient/{world.me}/$everything", headers=token, params={"_count": "100"})
    assert own.status_code == 200, own.text
    subjects = {
        e["resource"].get("subject", {}).get("reference")
        for e in own.json()["entry"]
        if e["resource"]["resourceType"] == "Observation"
    }
    assert subjects == {f"Patient/{world.me}"}


def test_validate_needs_the_scope_of_the_write_it_checks(
    http: httpx.Client, idp: AuthorizationServer, world: World
) -> None:
    read_only = bearer(idp.realm("main").mint("patient/Observation.rs", patient=world.me))
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    for mode in ("create", "update", "delete"):
        target = "/Observation/$validate" if mode == "create" else f"/Observation/obs-me-{world.tag}/$validate"
        reply = http.post(target, params={"mode": mode}, json=body, headers=read_only)
        assert reply.status_code == 403, (mode, reply.text)
    writer = bearer(idp.realm("main").mint("patient/Observation.cruds", patient=world.me))
    mine = {**body, "subject": {"reference": f"Patient/{world.me}"}}
    ok = http.post("/Observation/$validate", params={"mode": "create"}, json=mine, headers=writer)
    assert ok.status_code == 200, ok.text


def test_an_unknown_operation_still_needs_a_token(http: httpx.Client) -> None:
    assert http.get("/Patient/$frobnicate").status_code == 401
