"""Operations users of HAPI and Medplum expect (issue 15, point 3): Patient ``$everything``,
``$validate``, ``$meta``/``$meta-add``/``$meta-delete``, and a clear answer for operations this
server does not have."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.e2e.support import assert_outcome, create, etag_version, history, next_link, patient, read, unique

R4 = "http://hl7.org/fhir/OperationDefinition/"


def _observation(patient_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{patient_id}"},
        **fields,
    }


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") != "outcome"
    ]


def _all_pages(client: httpx.Client, reply: httpx.Response) -> list[str]:
    assert reply.status_code == 200, reply.text
    bundle = reply.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    found = _ids(bundle)
    while (url := next_link(bundle)) is not None:
        page = client.get(url)
        assert page.status_code == 200, page.text
        bundle = page.json()
        found += _ids(bundle)
    return found


@pytest.fixture
def record(client: httpx.Client) -> dict[str, Any]:
    """A patient with observations and a condition, and another patient's observation beside it."""
    subject = create(client, patient(name=[{"family": unique("Everything")}]))
    other = create(client, patient())
    observations = [create(client, _observation(subject["id"])) for _ in range(5)]
    condition = create(
        client,
        {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{subject['id']}"},
            "code": {"text": "c"},
        },
    )
    foreign = create(client, _observation(other["id"]))
    return {"patient": subject, "observations": observations, "condition": condition, "foreign": foreign}


# -- $everything ---------------------------------------------------------------------------------------


def test_patient_everything_returns_the_record_and_pages(client: httpx.Client, record: dict[str, Any]) -> None:
    pid = record["patient"]["id"]
    found = _all_pages(client, client.get(f"/Patient/{pid}/$everything", params={"_count": "2"}))
    expected = {f"Patient/{pid}", f"Condition/{record['condition']['id']}"} | {
        f"Observation/{o['id']}" for o in record["observations"]
    }
    assert set(found) == expected
    assert len(found) == len(expected), "no resource appears twice across pages"
    first = client.get(f"/Patient/{pid}/$everything", params={"_count": "2"}).json()
    assert first["total"] == len(expected)


def test_patient_everything_by_post(client: httpx.Client, record: dict[str, Any]) -> None:
    pid = record["patient"]["id"]
    body = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Condition"}]}
    reply = client.post(f"/Patient/{pid}/$everything", json=body)
    assert set(_all_pages(client, reply)) == {f"Condition/{record['condition']['id']}"}


def test_patient_everything_type_filter(client: httpx.Client, record: dict[str, Any]) -> None:
    pid = record["patient"]["id"]
    found = _all_pages(client, client.get(f"/Patient/{pid}/$everything", params={"_type": "Observation"}))
    assert set(found) == {f"Observation/{o['id']}" for o in record["observations"]}


def test_patient_everything_since(client: httpx.Client, record: dict[str, Any]) -> None:
    pid = record["patient"]["id"]
    time.sleep(0.05)
    since = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    time.sleep(0.05)
    later = create(client, _observation(pid))
    found = _all_pages(client, client.get(f"/Patient/{pid}/$everything", params={"_since": since}))
    assert found == [f"Observation/{later['id']}"]


def test_patient_everything_bad_input(client: httpx.Client, record: dict[str, Any]) -> None:
    pid = record["patient"]["id"]
    assert_outcome(client.get(f"/Patient/{pid}/$everything", params={"_since": "yesterday"}), 400, expression="_since")
    assert_outcome(client.get(f"/Patient/{pid}/$everything", params={"_type": "Nope"}), 400, expression="_type")
    assert_outcome(client.get(f"/Patient/{pid}/$everything", params={"colour": "red"}), 400, expression="colour")
    assert_outcome(
        client.get(f"/Patient/{pid}/$everything", params={"start": "2020"}),
        400,
        code="not-supported",
        expression="start",
    )
    assert_outcome(client.get("/Patient/no-such-patient/$everything"), 404)
    assert_outcome(client.get(f"/Observation/{pid}/$everything"), 400, code="not-supported")


def test_patient_type_everything_covers_every_patient(client: httpx.Client, record: dict[str, Any]) -> None:
    reply = client.get("/Patient/$everything", params={"_type": "Patient,Condition", "_count": "500"})
    found = set(_all_pages(client, reply))
    assert f"Patient/{record['patient']['id']}" in found
    assert f"Condition/{record['condition']['id']}" in found
    assert not any(i.startswith("Observation/") for i in found)


# -- $validate ---------------------------------------------------------------------------------------


def _issues(reply: httpx.Response) -> list[dict[str, Any]]:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["resourceType"] == "OperationOutcome"
    return [i for i in body["issue"] if i["severity"] in ("error", "fatal")]


def test_validate_a_valid_resource(client: httpx.Client) -> None:
    assert _issues(client.post("/Patient/$validate", json=patient(gender="male"))) == []


def test_validate_reports_errors_with_200_and_stores_nothing(client: httpx.Client) -> None:
    family = unique("Invalid")
    errors = _issues(client.post("/Patient/$validate", json=patient(gender="sometimes", name=[{"family": family}])))
    assert errors
    assert any("Patient.gender" in i.get("expression", []) for i in errors)
    valid = patient(name=[{"family": family}])
    assert _issues(client.post("/Patient/$validate", params={"mode": "create"}, json=valid)) == []
    count = client.get("/Patient", params={"family:exact": family, "_summary": "count"}).json()["total"]
    assert count == 0


def test_validate_with_parameters_and_modes(client: httpx.Client) -> None:
    stored = create(client, patient(gender="male"))
    pid = stored["id"]
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {**stored, "gender": "female"}},
            {"name": "mode", "valueCode": "update"},
        ],
    }
    assert _issues(client.post(f"/Patient/{pid}/$validate", json=body)) == []
    wrong_id = {**body, "parameter": [{"name": "resource", "resource": {**stored, "id": "x"}}, body["parameter"][1]]}
    errors = _issues(client.post(f"/Patient/{pid}/$validate", json=wrong_id))
    assert any("Patient.id" in i.get("expression", []) for i in errors)
    assert _issues(client.post(f"/Patient/{pid}/$validate", params={"mode": "delete"})) == []
    assert read(client, "Patient", pid).json() == stored
    assert_outcome(client.post("/Patient/unknown-one/$validate", params={"mode": "delete"}), 404)


def test_validate_refuses_what_it_cannot_do(client: httpx.Client) -> None:
    assert_outcome(client.post("/Patient/$validate", params={"mode": "update"}, json=patient()), 400, expression="mode")
    assert_outcome(client.post("/Patient/$validate", params={"mode": "bogus"}, json=patient()), 400, expression="mode")
    assert_outcome(
        client.post("/Patient/$validate", params={"profile": "http://example.org/p"}, json=patient()),
        400,
        code="not-supported",
        expression="profile",
    )
    assert_outcome(client.post("/Patient/$validate", json={"resourceType": "Observation"}), 400)
    assert_outcome(client.post("/Patient/$validate"), 400)


# -- $meta, $meta-add, $meta-delete --------------------------------------------------------------------


def _meta_parameters(**meta: Any) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": meta}]}


def _returned_meta(reply: httpx.Response) -> dict[str, Any]:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["resourceType"] == "Parameters"
    (parameter,) = body["parameter"]
    assert parameter["name"] == "return"
    meta: dict[str, Any] = parameter["valueMeta"]
    return meta


def test_meta_add_and_delete(client: httpx.Client) -> None:
    stored = create(client, patient(meta={"tag": [{"system": "urn:t", "code": "a"}]}))
    pid = stored["id"]
    assert _returned_meta(client.get(f"/Patient/{pid}/$meta")) == stored["meta"]

    added = _returned_meta(
        client.post(
            f"/Patient/{pid}/$meta-add",
            json=_meta_parameters(
                tag=[{"system": "urn:t", "code": "a", "display": "dup"}, {"system": "urn:t", "code": "b"}],
                security=[{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
                profile=["http://example.org/p"],
            ),
        )
    )
    assert [t["code"] for t in added["tag"]] == ["a", "b"], "a tag is its system+code: no duplicate"
    assert [s["code"] for s in added["security"]] == ["R"]
    assert added["profile"] == ["http://example.org/p"]
    current = read(client, "Patient", pid).json()
    assert current["meta"] == added
    tagged = client.get("/Patient", params={"_tag": "urn:t|b", "_id": pid}).json()
    assert [e["resource"]["id"] for e in tagged.get("entry", [])] == [pid], "the search index sees the new tag"

    again = client.post(f"/Patient/{pid}/$meta-add", json=_meta_parameters(tag=[{"system": "urn:t", "code": "b"}]))
    assert _returned_meta(again)["versionId"] == added["versionId"], "adding what is there changes nothing"

    removed = _returned_meta(
        client.post(
            f"/Patient/{pid}/$meta-delete",
            json=_meta_parameters(tag=[{"system": "urn:t", "code": "a"}], profile=["http://example.org/p"]),
        )
    )
    assert [t["code"] for t in removed["tag"]] == ["b"]
    assert "profile" not in removed
    versions = history(client, f"/Patient/{pid}/_history")
    assert len(versions) == int(removed["versionId"])
    first = _returned_meta(client.get(f"/Patient/{pid}/_history/1/$meta"))
    assert first == stored["meta"]


def test_meta_bad_input_names_the_element(client: httpx.Client) -> None:
    pid = create(client, patient())["id"]
    assert_outcome(
        client.post(f"/Patient/{pid}/$meta-add", json=_meta_parameters(versionId="3")),
        400,
        expression="Parameters.parameter[0].valueMeta.versionId",
    )
    assert_outcome(
        client.post(f"/Patient/{pid}/$meta-add", json=_meta_parameters(tag=[{"system": "urn:t"}])),
        400,
        expression="Parameters.parameter[0].valueMeta.tag[0]",
    )
    assert_outcome(client.post(f"/Patient/{pid}/$meta-add", json={"resourceType": "Parameters"}), 400)
    assert_outcome(client.post("/Patient/unknown-one/$meta-add", json=_meta_parameters(tag=[{"code": "x"}])), 404)
    assert_outcome(client.get("/Patient/unknown-one/$meta"), 404)
    assert etag_version(read(client, "Patient", pid)) == 1


# -- operations the server does not have ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/$everything"),
        ("POST", "/$frobnicate"),
        ("GET", "/Patient/$frobnicate"),
        ("POST", "/Patient/1/$frobnicate"),
        ("GET", "/Patient/1/_history/1/$frobnicate"),
    ],
)
def test_unknown_operation_is_not_supported(client: httpx.Client, method: str, path: str) -> None:
    reply = client.request(method, path, json={"resourceType": "Parameters"} if method == "POST" else None)
    body = assert_outcome(reply, 400, code="not-supported")
    operation = path.rsplit("/", 1)[1]
    assert operation in body["issue"][0]["diagnostics"]


def test_capability_statement_declares_the_operations(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
    patient_ops = {o["name"]: o["definition"] for o in by_type["Patient"].get("operation", [])}
    assert patient_ops["everything"] == R4 + "Patient-everything"
    for name, definition in [
        ("validate", "Resource-validate"),
        ("meta", "Resource-meta"),
        ("meta-add", "Resource-meta-add"),
        ("meta-delete", "Resource-meta-delete"),
    ]:
        assert patient_ops[name] == R4 + definition
        assert {o["name"] for o in by_type["Observation"]["operation"]} >= {name}
    assert "everything" not in {o["name"] for o in by_type["Observation"]["operation"]}


def test_operations_are_not_bundle_entries(client: httpx.Client) -> None:
    pid = create(client, patient())["id"]
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [{"code": "x"}]}}]}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": parameters, "request": {"method": "POST", "url": f"Patient/{pid}/$meta-add"}}],
    }
    assert_outcome(client.post("/", json=bundle), 400, expression="Bundle.entry[0].request")
    assert etag_version(read(client, "Patient", pid)) == 1
