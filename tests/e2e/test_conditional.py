"""Conditional interactions over HTTP (http.html#ccreate, #cond-update, conditional delete and
patch; bundle.html and http.html#trules for ifNoneExist and conditional references): 16 clients
racing one conditional create make one resource; each outcome; bundles, batch and transaction,
where a failed condition leaves nothing behind; bad criteria are 400 OperationOutcomes."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import FHIR_JSON, JSON_PATCH, assert_outcome, unique

SYSTEM = "urn:e2e:mrn"
CLIENTS = 16


def patient(value: str, **fields: Any) -> dict[str, Any]:
    named = {"name": [{"family": "Conditional"}], **fields}  # other e2e tests read every Patient's name
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}], **named}


def by_identifier(value: str) -> str:
    return f"identifier={SYSTEM}|{value}"


def matching(client: httpx.Client, value: str, rtype: str = "Patient") -> list[dict[str, Any]]:
    reply = client.get(f"/{rtype}", params={"identifier": f"{SYSTEM}|{value}"})
    assert reply.status_code == 200, reply.text
    return [e["resource"] for e in reply.json().get("entry", [])]


def history_head(client: httpx.Client) -> Any:
    return client.get("/_history", params={"_count": 1}).json().get("entry")


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_entry(resource: dict[str, Any], full_url: str | None = None, if_none_exist: str | None = None) -> Any:
    request = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist is not None:
        request["ifNoneExist"] = if_none_exist
    entry: dict[str, Any] = {"resource": resource, "request": request}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def observation(subject: str, value: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": SYSTEM, "value": value}],
        "code": {"text": "weight"},
        "subject": {"reference": subject},
    }


# -- the race -----------------------------------------------------------------------------------------

SERVERS = 4
"""Server processes on one data directory: each gateway serves its requests one at a time, so the
16 clients race through SQLite across processes, as writers of one embedded database do."""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LocalServer]]:
    data_dir = tmp_path_factory.mktemp("fhirflow-shared")
    first = LocalServer(data_dir=data_dir).start()  # creates the database and keys alone
    others = [LocalServer(data_dir=data_dir) for _ in range(SERVERS - 1)]
    starters = [threading.Thread(target=other.start) for other in others]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join(timeout=90)
    try:
        assert all(o.process is not None and o.process.poll() is None for o in others), "a server did not start"
        yield [first, *others]
    finally:
        for running in (first, *others):
            running.stop()


ROUNDS = 3


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sixteen_concurrent_conditional_creates_make_one_resource(servers: list[LocalServer], round_: int) -> None:
    value = unique(f"race{round_}")
    start = threading.Barrier(CLIENTS)
    replies: list[httpx.Response] = []
    failures: list[str] = []
    lock = threading.Lock()

    def racer(n: int) -> None:
        base_url = servers[n % len(servers)].base_url
        with httpx.Client(base_url=base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as http:
            start.wait()
            try:
                reply = http.post(
                    "/Patient",
                    json=patient(value, name=[{"family": f"r{n}"}]),
                    headers={"If-None-Exist": by_identifier(value)},
                )
            except httpx.HTTPError as error:
                with lock:
                    failures.append(repr(error))
                return
            with lock:
                replies.append(reply)

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] * (CLIENTS - 1) + [201], [r.text[:200] for r in replies if r.status_code >= 300]
    ids = {r.json()["id"] for r in replies}
    assert len(ids) == 1
    with httpx.Client(base_url=servers[0].base_url, timeout=60) as client:
        assert [p["id"] for p in matching(client, value)] == list(ids)
        (winner,) = ids
        assert len(client.get(f"/Patient/{winner}/_history").json()["entry"]) == 1


# -- single interactions --------------------------------------------------------------------------------


def test_conditional_create_outcomes(client: httpx.Client) -> None:
    value = unique("cc")
    created = client.post("/Patient", json=patient(value), headers={"If-None-Exist": by_identifier(value)})
    assert created.status_code == 201, created.text
    found = client.post("/Patient", json=patient(value, gender="male"), headers={"If-None-Exist": by_identifier(value)})
    assert found.status_code == 200
    assert found.json() == created.json()
    client.post("/Patient", json=patient(value))
    assert_outcome(
        client.post("/Patient", json=patient(value), headers={"If-None-Exist": by_identifier(value)}),
        412,
        code="multiple-matches",
    )
    assert len(matching(client, value)) == 2


def test_conditional_update_delete_and_patch(client: httpx.Client) -> None:
    value = unique("cu")
    params = {"identifier": f"{SYSTEM}|{value}"}
    created = client.put("/Patient", params=params, json=patient(value, gender="male"))
    assert created.status_code == 201, created.text
    id_ = created.json()["id"]
    updated = client.put("/Patient", params=params, json=patient(value, gender="female"))
    assert updated.status_code == 200
    assert updated.json()["id"] == id_
    assert updated.headers["etag"] == 'W/"2"'
    wrong_id = client.put("/Patient", params=params, json=patient(value, id="someone-else"))
    assert_outcome(wrong_id, 400, expression="Patient.id")

    patched = client.patch(
        "/Patient",
        params=params,
        content=b'[{"op": "replace", "path": "/gender", "value": "other"}]',
        headers={"Content-Type": JSON_PATCH},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["gender"] == "other"

    deleted = client.delete("/Patient", params=params)
    assert deleted.status_code == 204
    assert client.get(f"/Patient/{id_}").status_code == 410
    assert client.delete("/Patient", params=params).status_code == 204  # nothing left to delete
    missing = client.patch("/Patient", params=params, content=b"[]", headers={"Content-Type": JSON_PATCH})
    assert_outcome(missing, 404)

    twins = unique("twins")
    for _ in range(2):
        client.post("/Patient", json=patient(twins))
    several = {"identifier": f"{SYSTEM}|{twins}"}
    assert_outcome(client.put("/Patient", params=several, json=patient(twins)), 412)
    assert_outcome(client.delete("/Patient", params=several), 412)
    assert len(matching(client, twins)) == 2


def test_bad_criteria_are_400_operation_outcomes(client: httpx.Client) -> None:
    before = history_head(client)
    assert_outcome(client.put("/Patient", json=patient(unique())), 400, code="invalid")
    assert_outcome(client.delete("/Patient", params={"nonsense": "1"}), 400, expression="nonsense")
    assert_outcome(
        client.post("/Patient", json=patient(unique()), headers={"If-None-Exist": "identifier=x&_count=1"}), 400
    )
    assert_outcome(
        client.patch("/Patient", params={"_sort": "name"}, content=b"[]", headers={"Content-Type": JSON_PATCH}), 400
    )
    assert history_head(client) == before


# -- bundles -------------------------------------------------------------------------------------------


def test_transaction_if_none_exist_resolves_to_the_existing_resource(client: httpx.Client) -> None:
    value = unique("tx")
    existing = client.post("/Patient", json=patient(value)).json()
    answer = client.post(
        "/",
        json=bundle(
            "transaction",
            post_entry(patient(value), "urn:uuid:3a1f1c0e-0000-4000-8000-000000000001", by_identifier(value)),
            post_entry(observation("urn:uuid:3a1f1c0e-0000-4000-8000-000000000001", value)),
        ),
    )
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["entry"]
    assert first["response"]["status"] == "200 OK"
    assert first["resource"]["id"] == existing["id"]
    assert second["response"]["status"].startswith("201")
    assert second["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert [p["id"] for p in matching(client, value)] == [existing["id"]]


def test_transaction_if_none_exist_creates_once(client: httpx.Client) -> None:
    value = unique("tx-new")
    full_url = "urn:uuid:3a1f1c0e-0000-4000-8000-000000000002"
    document = bundle(
        "transaction",
        post_entry(patient(value), full_url, f"Patient?{by_identifier(value)}"),
        post_entry(observation(full_url, value)),
    )
    first = client.post("/", json=document)
    assert first.status_code == 200, first.text
    created = first.json()["entry"][0]
    assert created["response"]["status"].startswith("201")
    again = client.post("/", json=document).json()["entry"]
    assert again[0]["response"]["status"] == "200 OK"
    assert again[0]["resource"]["id"] == created["resource"]["id"]
    assert len(matching(client, value)) == 1
    subjects = {o["subject"]["reference"] for o in matching(client, value, "Observation")}
    assert subjects == {f"Patient/{created['resource']['id']}"}


def test_transaction_conditional_references_and_urls(client: httpx.Client) -> None:
    value, gone, edited, patched = unique("ref"), unique("gone"), unique("edited"), unique("patched")
    target = client.post("/Patient", json=patient(value)).json()
    doomed = client.post("/Patient", json=patient(gone)).json()
    changed = client.post("/Patient", json=patient(edited, gender="male")).json()
    to_patch = client.post("/Patient", json=patient(patched, gender="male")).json()
    json_patch = base64.b64encode(b'[{"op": "replace", "path": "/gender", "value": "other"}]').decode()
    put_url = f"Patient?{by_identifier(edited)}"
    answer = client.post(
        "/",
        json=bundle(
            "transaction",
            post_entry(observation(f"Patient?{by_identifier(value)}", value)),
            {"request": {"method": "DELETE", "url": f"Patient?{by_identifier(gone)}"}},
            {
                "fullUrl": "urn:uuid:3a1f1c0e-0000-4000-8000-00000000000e",
                "resource": patient(edited, gender="female"),
                "request": {"method": "PUT", "url": put_url},
            },
            {
                "resource": {"resourceType": "Binary", "contentType": JSON_PATCH, "data": json_patch},
                "request": {"method": "PATCH", "url": f"Patient?{by_identifier(patched)}"},
            },
            post_entry(observation("urn:uuid:3a1f1c0e-0000-4000-8000-00000000000e", edited)),
        ),
    )
    assert answer.status_code == 200, answer.text
    obs, deleted, updated, patch_result, linked = answer.json()["entry"]
    assert obs["resource"]["subject"]["reference"] == f"Patient/{target['id']}"
    assert deleted["response"]["status"].startswith("204")
    assert client.get(f"/Patient/{doomed['id']}").status_code == 410
    assert updated["response"]["status"] == "200 OK"
    assert client.get(f"/Patient/{changed['id']}").json()["gender"] == "female"
    assert linked["resource"]["subject"]["reference"] == f"Patient/{changed['id']}"  # its fullUrl is the match
    assert patch_result["response"]["status"] == "200 OK"
    assert client.get(f"/Patient/{to_patch['id']}").json()["gender"] == "other"


def test_transaction_failing_a_condition_leaves_nothing(client: httpx.Client) -> None:
    twins, nobody, fresh = unique("twins"), unique("nobody"), unique("fresh")
    for _ in range(2):
        client.post("/Patient", json=patient(twins))
    before = history_head(client)
    ok = post_entry(patient(fresh), "urn:uuid:3a1f1c0e-0000-4000-8000-000000000003", by_identifier(fresh))
    cases = [
        (post_entry(observation(f"Patient?{by_identifier(nobody)}", fresh)), "matches no Patient"),
        (post_entry(observation(f"Patient?{by_identifier(twins)}", fresh)), "matches more than one Patient"),
        (post_entry(patient(twins), if_none_exist=by_identifier(twins)), "match more than one Patient"),
    ]
    for failing, message in cases:
        reply = client.post("/", json=bundle("transaction", ok, failing))
        body = assert_outcome(reply, 412, expression=None)
        assert any(message in i["diagnostics"] and "Bundle.entry[1]" in i["diagnostics"] for i in body["issue"]), body
        assert history_head(client) == before
    assert matching(client, fresh) == []

    bad = post_entry(patient(fresh), if_none_exist="nonsense=1")
    reply = client.post("/", json=bundle("transaction", ok, bad))
    assert_outcome(reply, 400, expression="Bundle.entry[1].request.ifNoneExist")
    twice = post_entry(patient(fresh), if_none_exist=by_identifier(fresh))
    assert_outcome(client.post("/", json=bundle("transaction", ok, twice)), 400)
    assert history_head(client) == before


def test_batch_conditional_entries_fail_alone(client: httpx.Client) -> None:
    value, nobody = unique("batch"), unique("nobody")
    existing = client.post("/Patient", json=patient(value)).json()
    answer = client.post(
        "/",
        json=bundle(
            "batch",
            post_entry(patient(value), if_none_exist=by_identifier(value)),
            post_entry(observation(f"Patient?{by_identifier(value)}", value)),
            post_entry(observation(f"Patient?{by_identifier(nobody)}", nobody)),
            post_entry(patient(nobody), if_none_exist="nonsense=1"),
        ),
    )
    assert answer.status_code == 200, answer.text
    found, linked, unresolved, bad = answer.json()["entry"]
    assert found["response"]["status"] == "200 OK"
    assert found["resource"]["id"] == existing["id"]
    assert linked["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert unresolved["response"]["status"].startswith("412")
    assert "Bundle.entry[2]" in unresolved["response"]["outcome"]["issue"][0]["diagnostics"]
    assert bad["response"]["status"].startswith("400")
    assert matching(client, nobody, "Observation") == []
    assert matching(client, nobody) == []
