"""batch and transaction over HTTP: Synthea patients as single transactions, atomicity,
concurrency between transactions, and malformed bundles refused with the entry named."""

from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "synthea"
FILES = sorted(p for p in SYNTHEA.glob("*.json"))


def _patient(name: str = "Test") -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": name}], "gender": "female"}


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _system_history_head(client: httpx.Client) -> Any:
    return client.get("/_history", params={"_count": 1}).json().get("entry")


def _issue_expressions(reply: httpx.Response) -> list[str]:
    return [e for issue in reply.json()["issue"] for e in issue.get("expression", [])]


@pytest.mark.slow
def test_every_synthea_patient_loads_as_one_transaction(client: httpx.Client) -> None:
    if not FILES:
        pytest.skip(f"no Synthea bundles at {SYNTHEA}")
    for path in FILES:
        bundle = json.loads(path.read_text())
        reply = client.post("/", content=path.read_bytes(), headers={"Prefer": "return=minimal"})
        assert reply.status_code == 200, f"{path.name}: {reply.text[:500]}"
        answer = reply.json()
        assert answer["type"] == "transaction-response"
        assert len(answer["entry"]) == len(bundle["entry"])
        locations = [e["response"]["location"] for e in answer["entry"]]
        assert all(e["response"]["status"].startswith("201") for e in answer["entry"])
        # Spot-check: every reference of the patient's resources resolves, and no urn:uuid is left.
        for location in locations[:: max(1, len(locations) // 25)]:
            url = location.split("/_history")[0]
            resource = client.get(url, headers={"Accept": "application/fhir+json"}).json()
            text = json.dumps(resource)
            assert "urn:uuid:" not in text, f"{path.name}: {url} still has a urn:uuid reference"
            for ref in re.findall(r'"reference": "([^"#][^"]*)"', text):
                assert client.get(f"/{ref}").status_code == 200, f"{path.name}: {url} → {ref} does not resolve"


def test_transaction_rewrites_references_everywhere(client: httpx.Client) -> None:
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": patient_url},
        "extension": [{"url": "http://example.org/ext", "valueReference": {"reference": patient_url}}],
        "contained": [
            {
                "resourceType": "Provenance",
                "id": "p1",
                "recorded": "2024-01-01T00:00:00Z",
                "target": [{"reference": patient_url}],
                "agent": [{"who": {"reference": patient_url}}],
            }
        ],
    }
    reply = client.post("/", json=_transaction(_post(observation), _post(_patient(), patient_url)))
    assert reply.status_code == 200, reply.text
    entries = reply.json()["entry"]
    obs, pat = entries[0]["resource"], entries[1]["resource"]
    expected = f"Patient/{pat['id']}"
    assert obs["subject"]["reference"] == expected
    assert obs["extension"][0]["valueReference"]["reference"] == expected
    assert obs["contained"][0]["target"][0]["reference"] == expected
    assert entries[1]["response"]["location"].startswith(f"{client.base_url}/Patient/{pat['id']}/_history/1")


def test_a_transaction_with_an_invalid_last_entry_leaves_nothing(client: httpx.Client) -> None:
    before = _system_history_head(client)
    bad = {"resourceType": "Patient", "gender": "robot"}
    reply = client.post("/", json=_transaction(_post(_patient("A")), _post(_patient("B")), _post(bad)))
    assert reply.status_code == 400
    assert "Bundle.entry[2].resource.gender" in _issue_expressions(reply)
    assert _system_history_head(client) == before


def test_a_transaction_failing_a_condition_leaves_nothing(client: httpx.Client) -> None:
    existing = client.post("/Patient", json=_patient("Cond")).json()
    before = _system_history_head(client)
    update = {**existing, "active": True}
    entries = [
        _post(_patient("C1")),
        {"resource": update, "request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"7"'}},
    ]
    reply = client.post("/", json=_transaction(*entries))
    assert reply.status_code == 412, reply.text
    assert _system_history_head(client) == before


def test_batch_entries_fail_alone(client: httpx.Client) -> None:
    bad = {"resourceType": "Patient", "gender": "robot"}
    reply = client.post("/", json=_transaction(_post(_patient("ok")), _post(bad), kind="batch"))
    assert reply.status_code == 200
    statuses = [e["response"]["status"] for e in reply.json()["entry"]]
    assert statuses[0].startswith("201")
    assert statuses[1].startswith("400")
    assert reply.json()["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_transaction_get_entries_see_the_transactions_writes(client: httpx.Client) -> None:
    existing = client.post("/Patient", json=_patient("Before")).json()
    entries = [
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
        {"resource": {**existing, "gender": "male"}, "request": {"method": "PUT", "url": f"Patient/{existing['id']}"}},
    ]
    reply = client.post("/", json=_transaction(*entries))
    assert reply.status_code == 200, reply.text
    read = reply.json()["entry"][0]
    assert read["response"]["status"].startswith("200")
    assert read["resource"]["gender"] == "male"  # GET runs after PUT (transaction.html processing order)


def test_two_transactions_on_one_resource_never_mix(client: httpx.Client, server: Any) -> None:
    target = client.post("/Patient", json=_patient("Race")).json()
    outcomes: list[int] = []

    def run(marker: str) -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as own:
            body = _transaction(
                _post(_patient(f"side-{marker}")),
                {
                    "resource": {**target, "name": [{"family": marker}]},
                    "request": {"method": "PUT", "url": f"Patient/{target['id']}", "ifMatch": 'W/"1"'},
                },
            )
            outcomes.append(own.post("/", json=body).status_code)

    run_id = uuid.uuid4().hex[:8]  # the shared server holds other tests' Patients too
    threads = [threading.Thread(target=run, args=(f"T{i}-{run_id}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) in ([200, 409], [200, 412]), outcomes
    history = client.get(f"/Patient/{target['id']}/_history").json()["entry"]
    assert len(history) == 2  # the original and exactly one transaction's update
    winner = history[0]["resource"]["name"][0]["family"]
    loser = f"T1-{run_id}" if winner == f"T0-{run_id}" else f"T0-{run_id}"

    def sides(marker: str) -> int:
        found = client.get("/Patient", params={"family:exact": f"side-{marker}", "_total": "accurate"})
        return int(found.json()["total"])

    assert sides(winner) == 1
    assert sides(loser) == 0, "the losing transaction's create must not be visible"


BAD_BUNDLES: list[tuple[str, Any, int, str]] = [
    ("not a bundle", {"resourceType": "Patient"}, 400, "Bundle"),
    ("wrong type", {"resourceType": "Bundle", "type": "collection", "entry": []}, 400, "Bundle.type"),
    ("entry without request", _transaction({"resource": _patient()}), 400, "Bundle.entry[0].request"),
    (
        "fullUrl used twice",
        _transaction(
            _post(_patient(), "urn:uuid:0b5d2b3c-0000-4000-8000-000000000001"),
            _post(_patient(), "urn:uuid:0b5d2b3c-0000-4000-8000-000000000001"),
        ),
        400,
        "Bundle.entry[1].fullUrl",
    ),
    (
        "reference to an undefined urn:uuid",
        _transaction(
            _post(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": "urn:uuid:0b5d2b3c-0000-4000-8000-00000000dead"},
                }
            )
        ),
        400,
        "Bundle.entry[0]",
    ),
    (
        "nested transaction",
        _transaction({"resource": _transaction(), "request": {"method": "POST", "url": "Bundle"}}),
        400,
        "Bundle.entry[0].resource",
    ),
    (
        "bad method",
        _transaction({"request": {"method": "FETCH", "url": "Patient"}}),
        400,
        "Bundle.entry[0].request.method",
    ),
    (
        "absolute url",
        _transaction({"request": {"method": "GET", "url": "http://elsewhere.example/Patient/1"}}),
        400,
        "Bundle.entry[0].request.url",
    ),
]


@pytest.mark.parametrize(("case", "body", "status", "expression"), BAD_BUNDLES, ids=[c[0] for c in BAD_BUNDLES])
def test_bad_bundles_are_refused_naming_the_entry(
    client: httpx.Client, case: str, body: Any, status: int, expression: str
) -> None:
    before = _system_history_head(client)
    reply = client.post("/", json=body)
    assert reply.status_code == status, reply.text
    assert reply.json()["resourceType"] == "OperationOutcome"
    assert any(e.startswith(expression) for e in _issue_expressions(reply)), _issue_expressions(reply)
    assert _system_history_head(client) == before


def test_batch_entry_referencing_another_entry_is_refused(client: httpx.Client) -> None:
    patient_url = "urn:uuid:0b5d2b3c-0000-4000-8000-0000000000aa"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": patient_url},
    }
    reply = client.post("/", json=_transaction(_post(_patient(), patient_url), _post(observation), kind="batch"))
    assert reply.status_code == 200
    second = reply.json()["entry"][1]["response"]
    assert second["status"].startswith("400")
    assert "Bundle.entry[1]" in json.dumps(second["outcome"])


def test_search_entries_run_in_batches_and_transactions(client: httpx.Client) -> None:
    family = f"Searchable{uuid.uuid4().hex[:8]}"
    created = client.post("/Patient", json=_patient(family)).json()
    search = {"request": {"method": "GET", "url": f"Patient?family={family}"}}
    for kind in ("batch", "transaction"):
        reply = client.post("/", json=_transaction(search, kind=kind))
        assert reply.status_code == 200, reply.text
        entry = reply.json()["entry"][0]
        assert entry["response"]["status"].startswith("200")
        assert entry["resource"]["type"] == "searchset"
        assert [e["resource"]["id"] for e in entry["resource"]["entry"]] == [created["id"]]


def test_an_entry_failure_names_the_entry_once(client: httpx.Client) -> None:
    reply = client.post("/", json=_transaction({"request": {"method": "PATCH", "url": "Patient"}}, kind="batch"))
    assert reply.status_code == 200
    diagnostics = reply.json()["entry"][0]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert diagnostics.startswith("Bundle.entry[0]: ")
    assert diagnostics.count("Bundle.entry[0]") == 1
