"""Conditional create, update, delete and patch on the embedded store, through the real crud
Application (no sockets): each outcome of http.html#ccreate, #cond-update, conditional delete and
conditional patch, the uniqueness key behind race-freedom, and stale keys."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from fhirflow.conditional import parse_query_string
from fhirflow.model import FhirRequest
from fhirflow.ports import Change, Claim, ClaimTaken, ResourceVersion
from fhirflow.runtime import Dependencies, build_dependencies
from fhirflow.settings import Settings
from fhirflow_crud import conditional
from tests.unit.test_authz_kit import InProcessClient, Reply, TestIssuer, smart_client

SYSTEM = "urn:test:mrn"


@pytest.fixture
def deps(tmp_path: Path) -> Dependencies:
    return build_dependencies(Settings(data_dir=tmp_path, audit="off"))


@pytest.fixture
def api(deps: Dependencies) -> InProcessClient:
    return InProcessClient(deps)


def mrn() -> str:
    return uuid.uuid4().hex[:12]


def patient(value: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}], **fields}


def criteria(value: str) -> str:
    return f"identifier={SYSTEM}|{value}"


def post(api: InProcessClient, body: dict[str, Any], value: str | None = None, **headers: str) -> Reply:
    if value is not None:
        headers["If-None-Exist"] = criteria(value)
    return api.request("POST", "/Patient", body=body, headers=headers)


def versions(api: InProcessClient, id_: str) -> int:
    return len(api.get(f"/Patient/{id_}/_history").body.get("entry", []))


def patients_with(api: InProcessClient, value: str) -> list[dict[str, Any]]:
    bundle = api.get("/Patient", query={"identifier": f"{SYSTEM}|{value}"}).body
    return [e["resource"] for e in bundle.get("entry", [])]


def assert_outcome(reply: Reply, status: int, fragment: str) -> None:
    assert reply.status == status, reply.body
    assert reply.body["resourceType"] == "OperationOutcome"
    text = " ".join(i["diagnostics"] for i in reply.body["issue"])
    assert fragment in text, text


# -- conditional create ---------------------------------------------------------------------------------


def test_conditional_create_creates_when_nothing_matches(api: InProcessClient) -> None:
    value = mrn()
    reply = post(api, patient(value, gender="male"), value)
    assert reply.status == 201
    assert reply.body["gender"] == "male"
    assert [p["id"] for p in patients_with(api, value)] == [reply.body["id"]]


def test_conditional_create_answers_200_with_the_one_match_and_writes_nothing(api: InProcessClient) -> None:
    value = mrn()
    first = post(api, patient(value, gender="male"), value).body
    again = post(api, patient(value, gender="female"), value)
    assert again.status == 200
    assert again.body == first  # the stored resource, not the one sent
    assert again.headers["ETag"] == 'W/"1"'
    assert again.headers["Location"].endswith(f"/Patient/{first['id']}/_history/1")
    assert versions(api, first["id"]) == 1
    assert len(patients_with(api, value)) == 1


def test_conditional_create_honours_prefer_return_on_a_match(api: InProcessClient) -> None:
    value = mrn()
    first = post(api, patient(value), value).body
    minimal = post(api, patient(value), value, Prefer="return=minimal")
    assert minimal.status == 200
    assert minimal.body is None
    assert f"/Patient/{first['id']}/" in minimal.headers["Location"]
    outcome = post(api, patient(value), value, Prefer="return=OperationOutcome")
    assert outcome.status == 200
    assert outcome.body["resourceType"] == "OperationOutcome"


def test_conditional_create_with_several_matches_is_412(api: InProcessClient) -> None:
    value = mrn()
    post(api, patient(value))
    post(api, patient(value))
    reply = post(api, patient(value), value)
    assert_outcome(reply, 412, "match more than one Patient")
    assert len(patients_with(api, value)) == 2


def test_the_create_takes_the_uniqueness_key(api: InProcessClient, deps: Dependencies) -> None:
    value = mrn()
    created = post(api, patient(value), value).body
    key = parse_query_string("Patient", criteria(value)).key("default")
    assert deps.store.claim_owner("default", "Patient", key) == created["id"]


def test_a_key_is_found_when_the_index_has_not_caught_up(tmp_path: Path) -> None:
    """DynamoDB's index trails the table: the key, not the search, finds the resource."""
    api = InProcessClient(build_dependencies(Settings(data_dir=tmp_path, index_on_write=False, audit="off")))
    value = mrn()
    first = post(api, patient(value), value)
    assert first.status == 201
    assert patients_with(api, value) == []  # nothing indexed
    again = post(api, patient(value), value)
    assert again.status == 200
    assert again.body["id"] == first.body["id"]


def test_the_loser_of_a_race_answers_with_the_winner(deps: Dependencies, api: InProcessClient) -> None:
    """Both looked and found nothing; the other committed first: this one's claim fails, it looks
    again and answers 200 with the winner, as if its search had found it."""
    value = mrn()
    request = FhirRequest(
        method="POST",
        path="/Patient",
        route="/{type}",
        path_params={"type": "Patient"},
        headers={"content-type": "application/fhir+json", "if-none-exist": criteria(value)},
        body=b'{"resourceType": "Patient", "identifier": [{"system": "%s", "value": "%s"}]}'
        % (SYSTEM.encode(), value.encode()),
        base_url="http://fhir.test",
    )
    looked = conditional.resolve(deps, request, conditional.header_criteria(request))
    assert looked.matches == ()
    winner = post(api, patient(value), value)
    assert winner.status == 201
    reply = conditional.create(deps, request, resolution=looked)
    assert reply.status == 200
    assert reply.body_resource()["id"] == winner.body["id"]  # type: ignore[index]
    assert len(patients_with(api, value)) == 1


def test_a_claim_that_does_not_hold_commits_nothing(deps: Dependencies) -> None:
    key = uuid.uuid4().hex
    body = b'{"resourceType": "Patient"}'
    first = ResourceVersion("default", "Patient", "a" + key[:8], 1, 1, False, "POST", body)
    second = ResourceVersion("default", "Patient", "b" + key[:8], 1, 1, False, "POST", body)
    deps.store.commit([Change(first, None, "", Claim(key))])
    with pytest.raises(ClaimTaken) as caught:
        deps.store.commit([Change(second, None, "", Claim(key))])
    assert caught.value.owner == first.id
    assert deps.store.current("default", "Patient", second.id) is None
    with pytest.raises(ClaimTaken):  # a compare-and-set on the wrong owner fails too
        deps.store.commit([Change(second, None, "", Claim(key, replaces="someone-else"))])
    assert deps.store.current("default", "Patient", second.id) is None
    deps.store.commit([Change(second, None, "", Claim(key, replaces=first.id))])
    assert deps.store.claim_owner("default", "Patient", key) == second.id


def test_a_key_whose_owner_was_deleted_does_not_block(api: InProcessClient, deps: Dependencies) -> None:
    value = mrn()
    first = post(api, patient(value), value).body
    assert api.request("DELETE", f"/Patient/{first['id']}").status == 204
    again = post(api, patient(value), value)
    assert again.status == 201
    assert again.body["id"] != first["id"]
    key = parse_query_string("Patient", criteria(value)).key("default")
    assert deps.store.claim_owner("default", "Patient", key) == again.body["id"]
    assert post(api, patient(value), value).body["id"] == again.body["id"]


def test_a_key_whose_owner_no_longer_matches_does_not_block(tmp_path: Path) -> None:
    # Without the index, only the key and the owner's stored body can tell: the owner changed.
    api = InProcessClient(build_dependencies(Settings(data_dir=tmp_path, index_on_write=False, audit="off")))
    value = mrn()
    first = post(api, patient(value), value).body
    changed = {**first, "identifier": [{"system": SYSTEM, "value": "other-" + value}]}
    assert api.request("PUT", f"/Patient/{first['id']}", body=changed).status == 200
    again = post(api, patient(value), value)
    assert again.status == 201
    assert again.body["id"] != first["id"]


def test_a_stale_key_with_a_chained_criterion_is_checked_against_the_index(api: InProcessClient) -> None:
    org = api.request("POST", "/Organization", body={"resourceType": "Organization", "name": "Acme " + mrn()}).body
    name = org["name"]
    headers = {"If-None-Exist": f"organization.name={name}"}
    body = {"resourceType": "Patient", "managingOrganization": {"reference": f"Organization/{org['id']}"}}
    first = api.request("POST", "/Patient", body=body, headers=headers)
    assert first.status == 201
    assert api.request("POST", "/Patient", body=body, headers=headers).body["id"] == first.body["id"]
    moved = {**first.body, "managingOrganization": {"reference": "Organization/elsewhere"}}
    assert api.request("PUT", f"/Patient/{first.body['id']}", body=moved).status == 200
    again = api.request("POST", "/Patient", body=body, headers=headers)
    assert again.status == 201
    assert again.body["id"] != first.body["id"]


# -- conditional update -----------------------------------------------------------------------------------


def put(api: InProcessClient, body: dict[str, Any], query: dict[str, str], **headers: str) -> Reply:
    return api.request("PUT", "/Patient", body=body, query=query, headers=headers)


def test_conditional_update_without_a_match_creates_with_a_server_id(api: InProcessClient) -> None:
    value = mrn()
    reply = put(api, patient(value, gender="male"), {"identifier": f"{SYSTEM}|{value}"})
    assert reply.status == 201
    assert reply.body["gender"] == "male"
    assert [p["id"] for p in patients_with(api, value)] == [reply.body["id"]]


def test_conditional_update_without_a_match_takes_the_bodys_id(api: InProcessClient) -> None:
    value = mrn()
    id_ = "cu-" + value
    reply = put(api, patient(value, id=id_), {"identifier": f"{SYSTEM}|{value}"})
    assert reply.status == 201
    assert reply.body["id"] == id_


def test_conditional_update_updates_the_one_match(api: InProcessClient) -> None:
    value = mrn()
    first = post(api, patient(value, gender="male")).body
    reply = put(api, patient(value, gender="female"), {"identifier": f"{SYSTEM}|{value}"})
    assert reply.status == 200
    assert reply.body["id"] == first["id"]
    assert reply.body["meta"]["versionId"] == "2"
    assert api.get(f"/Patient/{first['id']}").body["gender"] == "female"
    with_id = put(api, patient(value, id=first["id"], gender="other"), {"identifier": f"{SYSTEM}|{value}"})
    assert with_id.status == 200
    assert with_id.body["meta"]["versionId"] == "3"


def test_conditional_update_honours_if_match(api: InProcessClient) -> None:
    value = mrn()
    post(api, patient(value))
    stale = put(api, patient(value, gender="male"), {"identifier": f"{SYSTEM}|{value}"}, **{"If-Match": 'W/"7"'})
    assert_outcome(stale, 412, "If-Match")


def test_conditional_update_with_another_id_in_the_body_is_400(api: InProcessClient) -> None:
    value = mrn()
    first = post(api, patient(value)).body
    reply = put(api, patient(value, id="not-" + first["id"]), {"identifier": f"{SYSTEM}|{value}"})
    assert_outcome(reply, 400, "is not the id of the Patient the criteria match")
    assert versions(api, first["id"]) == 1


def test_conditional_update_with_several_matches_is_412(api: InProcessClient) -> None:
    value = mrn()
    ids = [post(api, patient(value)).body["id"] for _ in range(2)]
    reply = put(api, patient(value, gender="male"), {"identifier": f"{SYSTEM}|{value}"})
    assert_outcome(reply, 412, "match more than one Patient")
    assert all(versions(api, id_) == 1 for id_ in ids)


def test_conditional_update_as_create_takes_the_same_key(tmp_path: Path) -> None:
    api = InProcessClient(build_dependencies(Settings(data_dir=tmp_path, index_on_write=False, audit="off")))
    value = mrn()
    created = put(api, patient(value), {"identifier": f"{SYSTEM}|{value}"})
    assert created.status == 201
    # Unindexed, so only the key can say it exists: a conditional create finds it...
    assert post(api, patient(value), value).body["id"] == created.body["id"]
    # ... and a second conditional update updates it instead of creating another.
    again = put(api, patient(value, gender="male"), {"identifier": f"{SYSTEM}|{value}"})
    assert again.status == 200
    assert again.body["id"] == created.body["id"]


# -- conditional delete and patch -----------------------------------------------------------------------


def test_conditional_delete(api: InProcessClient) -> None:
    value = mrn()
    nothing = api.request("DELETE", "/Patient", query={"identifier": f"{SYSTEM}|{value}"})
    assert nothing.status == 204
    first = post(api, patient(value)).body
    deleted = api.request("DELETE", "/Patient", query={"identifier": f"{SYSTEM}|{value}"})
    assert deleted.status == 204
    assert deleted.headers["ETag"] == 'W/"2"'
    assert api.get(f"/Patient/{first['id']}").status == 410


def test_conditional_delete_with_several_matches_is_412_and_deletes_nothing(api: InProcessClient) -> None:
    value = mrn()
    ids = [post(api, patient(value)).body["id"] for _ in range(2)]
    reply = api.request("DELETE", "/Patient", query={"identifier": f"{SYSTEM}|{value}"})
    assert_outcome(reply, 412, "deletes one resource at a time")
    assert all(api.get(f"/Patient/{id_}").status == 200 for id_ in ids)


JSON_PATCH = b'[{"op": "replace", "path": "/gender", "value": "female"}]'


def patch(api: InProcessClient, value: str) -> Reply:
    return api.request(
        "PATCH",
        "/Patient",
        body=JSON_PATCH,
        query={"identifier": f"{SYSTEM}|{value}"},
        headers={"content-type": "application/json-patch+json"},
    )


def test_conditional_patch(api: InProcessClient) -> None:
    value = mrn()
    assert_outcome(patch(api, value), 404, "nothing to patch")
    first = post(api, patient(value, gender="male")).body
    reply = patch(api, value)
    assert reply.status == 200
    assert reply.body["id"] == first["id"]
    assert reply.body["gender"] == "female"
    post(api, patient(value))
    assert_outcome(patch(api, value), 412, "match more than one Patient")


# -- bad criteria ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "query", "headers", "fragment"),
    [
        ("POST", {}, {"If-None-Exist": ""}, "needs search criteria"),
        ("POST", {}, {"If-None-Exist": "nonsense=1"}, "Unknown search parameter 'nonsense'"),
        ("POST", {}, {"If-None-Exist": "identifier=x&_count=1"}, "'_count'"),
        ("PUT", {}, {}, "needs search criteria"),
        ("PUT", {"_format": "json"}, {}, "needs search criteria"),
        ("PUT", {"nonsense": "1"}, {}, "Unknown search parameter 'nonsense'"),
        ("DELETE", {}, {}, "needs search criteria"),
        ("DELETE", {"identifier": "x", "_sort": "name"}, {}, "'_sort'"),
        ("PATCH", {"gender:unknown-modifier": "x"}, {}, "Unknown modifier"),
        ("PUT", {"identifier:in": "http://vs"}, {}, "terminology"),
    ],
)
def test_bad_criteria_are_400_and_write_nothing(
    api: InProcessClient, method: str, query: dict[str, str], headers: dict[str, str], fragment: str
) -> None:
    before = len(api.get("/_history").body.get("entry", []))
    body: Any = patient(mrn()) if method in ("POST", "PUT") else JSON_PATCH if method == "PATCH" else None
    if method == "PATCH":
        headers = {**headers, "content-type": "application/json-patch+json"}
    reply = api.request(method, "/Patient", body=body, query=query, headers=headers)
    assert_outcome(reply, 400, fragment)
    assert len(api.get("/_history").body.get("entry", [])) == before


# -- authorization ---------------------------------------------------------------------------------------


def test_conditional_create_needs_search_as_well_as_create(tmp_path: Path) -> None:
    issuer = TestIssuer()
    client = smart_client(tmp_path, issuer)
    value = mrn()
    headers = {"If-None-Exist": criteria(value)}
    create_only = issuer.token("system/Patient.c")
    denied = client.request("POST", "/Patient", token=create_only, body=patient(value), headers=headers)
    assert denied.status == 403
    assert client.request("POST", "/Patient", token=create_only, body=patient(value)).status == 201  # plain create
    both = issuer.token("system/Patient.cs")
    assert client.request("POST", "/Patient", token=both, body=patient(value), headers=headers).status == 200
    search_only = issuer.token("system/Patient.rs")
    reply = client.request("PUT", "/Patient", token=search_only, body=patient(value), query={"identifier": value})
    assert reply.status == 403


# -- the CapabilityStatement -------------------------------------------------------------------------------


def test_the_capability_statement_claims_the_conditional_interactions(api: InProcessClient) -> None:
    from fhirflow.capabilities import CONDITIONAL_PATCH_EXTENSION

    statement = api.get("/metadata").body
    patient_entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert patient_entry["conditionalCreate"] is True
    assert patient_entry["conditionalUpdate"] is True
    assert patient_entry["conditionalDelete"] == "single"
    assert {"url": CONDITIONAL_PATCH_EXTENSION, "valueBoolean": True} in patient_entry["extension"]


def test_a_key_held_by_a_resource_the_client_may_not_see_does_not_tell_it_exists(tmp_path: Path) -> None:
    """Conditional criteria are evaluated only over what the caller may read (issue 14): a key held by
    a hidden resource neither blocks the caller's create nor answers differently from an unused one."""
    issuer = TestIssuer()
    client = smart_client(tmp_path, issuer)
    value = mrn()
    full = issuer.token("system/Patient.cruds")
    owner = client.request(
        "POST", "/Patient", token=full, body=patient(value, gender="male"), headers={"If-None-Exist": criteria(value)}
    )
    assert owner.status == 201
    females_only = issuer.token("system/Patient.cs?gender=female")
    replies = [
        client.request(
            "POST",
            "/Patient",
            token=females_only,
            body=patient(v, gender="female"),
            headers={"If-None-Exist": criteria(v)},
        )
        for v in (value, mrn())
    ]
    assert [reply.status for reply in replies] == [201, 201], replies[0].body
    assert owner.body["id"] not in str(replies[0].body)  # nothing of the hidden resource is shown
    again = client.request(
        "POST",
        "/Patient",
        token=females_only,
        body=patient(value, gender="female"),
        headers={"If-None-Exist": criteria(value)},
    )
    assert again.status == 200  # unique among what this client may see
    assert again.body["id"] == replies[0].body["id"]
    everyone = client.get("/Patient", token=full, query={"identifier": f"{SYSTEM}|{value}"}).body
    assert sorted(e["resource"]["id"] for e in everyone.get("entry", [])) == sorted(
        [owner.body["id"], replies[0].body["id"]]
    )


def test_a_transactions_conditional_update_creates_and_its_full_url_resolves(api: InProcessClient) -> None:
    value = mrn()
    full_url = f"urn:uuid:{uuid.uuid4()}"
    document = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": full_url,
                "resource": patient(value),
                "request": {"method": "PUT", "url": f"Patient?{criteria(value)}"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": full_url},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    first = api.request("POST", "/", body=document)
    assert first.status == 200, first.body
    created, observation = first.body["entry"]
    assert created["response"]["status"].startswith("201")
    assert observation["resource"]["subject"]["reference"] == f"Patient/{created['resource']['id']}"
    again = api.request("POST", "/", body=document).body["entry"]
    assert again[0]["response"]["status"] == "200 OK"
    assert again[0]["resource"]["id"] == created["resource"]["id"]
    # The same content again: an update that changes nothing keeps the version (skip_unchanged_updates).
    assert again[0]["resource"]["meta"]["versionId"] == "1"
    assert [p["id"] for p in patients_with(api, value)] == [created["resource"]["id"]]


def test_conditional_delete_of_several_when_configured(tmp_path: Path) -> None:
    api = InProcessClient(build_dependencies(Settings(data_dir=tmp_path, audit="off", conditional_delete_max=30)))
    twins, crowd = mrn(), mrn()
    twin_ids = [post(api, patient(twins)).body["id"] for _ in range(3)]
    crowd_ids = [post(api, patient(crowd)).body["id"] for _ in range(31)]
    assert api.request("DELETE", "/Patient", query={"identifier": f"{SYSTEM}|{twins}"}).status == 204
    assert all(api.get(f"/Patient/{id_}").status == 410 for id_ in twin_ids)
    assert api.get(f"/Patient/{twin_ids[0]}/_history").body["entry"][0]["request"]["method"] == "DELETE"
    too_many = api.request("DELETE", "/Patient", query={"identifier": f"{SYSTEM}|{crowd}"})
    assert too_many.status == 412
    assert "more than 30" in str(too_many.body)
    assert all(api.get(f"/Patient/{id_}").status == 200 for id_ in crowd_ids)  # none was deleted
    api.request("DELETE", f"/Patient/{crowd_ids[0]}")
    assert api.request("DELETE", "/Patient", query={"identifier": f"{SYSTEM}|{crowd}"}).status == 204  # 30: two commits
    assert all(api.get(f"/Patient/{id_}").status == 410 for id_ in crowd_ids)
    assert api.request("DELETE", "/Patient", query={"identifier": f"{SYSTEM}|{crowd}"}).status == 204  # none left
    statement = api.get("/metadata").body["rest"][0]["resource"][0]
    assert statement["conditionalDelete"] == "multiple"


def test_conditional_delete_is_single_by_default(api: InProcessClient) -> None:
    assert api.get("/metadata").body["rest"][0]["resource"][0]["conditionalDelete"] == "single"
    value = mrn()
    for _ in range(2):
        post(api, patient(value))
    assert api.request("DELETE", "/Patient", query={"identifier": f"{SYSTEM}|{value}"}).status == 412
