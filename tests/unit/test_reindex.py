"""``$reindex`` through the real Applications (in process, no sockets) with the embedded adapters:
kick-off, status, the background job (run here by calling the worker's drain, as the worker loop
does), leases and resumption, writes during a job, and what is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from fhirflow_search.app import reindex_parts
from fhirflow_search.reindex import ReindexRunner
from tests.unit.test_authz_kit import InProcessClient, Reply

EYE = "http://example.org/eye-colour"
PREFIX = "/tenant/reindex"


def eye_colour(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/eye-colour",
        "name": "EyeColour",
        "status": "active",
        "description": "Eye colour",
        "code": "eye-colour",
        "base": ["Patient"],
        "type": "token",
        "expression": f"Patient.extension.where(url='{EYE}').value",
        **changes,
    }


def patient(colour: str | None = None, family: str = "Doe") -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": family}]}
    if colour:
        resource["extension"] = [{"url": EYE, "valueCode": colour}]
    return resource


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, audit="off")


@pytest.fixture
def client(settings: Settings) -> InProcessClient:
    return InProcessClient(build_dependencies(settings))


def put(client: InProcessClient, resource: dict[str, Any], id_: str) -> Reply:
    reply = client.request("PUT", f"{PREFIX}/{resource['resourceType']}/{id_}", body={**resource, "id": id_})
    assert reply.status in (200, 201), reply.body
    return reply


def ids(reply: Reply) -> list[str]:
    assert reply.status == 200, reply.body
    return sorted(
        e["resource"]["id"] for e in reply.body.get("entry", []) if e.get("search", {}).get("mode") == "match"
    )


def warnings(reply: Reply) -> list[str]:
    outcomes = [
        e["resource"] for e in reply.body.get("entry", []) if e["resource"]["resourceType"] == "OperationOutcome"
    ]
    return [issue["diagnostics"] for outcome in outcomes for issue in outcome["issue"]]


def kick_off(client: InProcessClient, path: str = "/$reindex", **kwargs: Any) -> str:
    reply = client.request("POST", f"{PREFIX}{path}", **kwargs)
    assert reply.status == 202, reply.body
    location = reply.headers["Content-Location"]
    assert f"{PREFIX}/_reindex/" in location
    return location.split("fhir.test", 1)[1]


def run_to_end(runner: ReindexRunner) -> int:
    batches = 0
    while (done := runner.drain()) > 0:  # each call does at most max_batches; ends with nothing to do
        batches += done
    return batches


def parameters(reply: Reply) -> dict[str, list[Any]]:
    assert reply.body["resourceType"] == "Parameters"
    out: dict[str, list[Any]] = {}
    for p in reply.body["parameter"]:
        value = next(v for k, v in p.items() if k.startswith("value"))
        out.setdefault(p["name"], []).append(value)
    return out


def test_a_new_parameter_becomes_searchable_on_older_data_after_a_reindex(
    client: InProcessClient, settings: Settings
) -> None:
    for id_, colour in (("p1", "blue"), ("p2", "blue"), ("p3", "brown"), ("p4", None)):
        put(client, patient(colour), id_)
    assert client.request("PUT", f"{PREFIX}/SearchParameter/eye", body={**eye_colour(), "id": "eye"}).status == 201

    lenient = client.get(f"{PREFIX}/Patient", query={"eye-colour": "blue"})
    assert ids(lenient) == ["p1", "p2", "p3", "p4"]  # the parameter was ignored...
    assert any("eye-colour" in w for w in warnings(lenient))  # ...and the answer says so
    strict = client.get(f"{PREFIX}/Patient", query={"eye-colour": "blue"}, headers={"prefer": "handling=strict"})
    assert strict.status == 400
    assert strict.body["issue"][0]["expression"] == ["eye-colour"]

    status = kick_off(client)
    queued = client.get(status)
    assert queued.status == 202
    assert queued.headers["X-Progress"] == "queued"
    assert parameters(queued)["status"] == ["queued"]

    run_to_end(ReindexRunner(reindex_parts(settings), batch_size=2, max_batches=1))

    done = client.get(status)
    assert done.status == 200
    result = parameters(done)
    assert result["status"] == ["completed"]
    assert result["processed"] == result["total"] == [5]  # four patients and the SearchParameter
    assert result["searchable"] == ["Patient.eye-colour"]
    assert ids(client.get(f"{PREFIX}/Patient", query={"eye-colour": "blue"})) == ["p1", "p2"]
    assert ids(client.get(f"{PREFIX}/Patient", query={"eye-colour": "brown"})) == ["p3"]
    assert ids(client.get(f"{PREFIX}/Patient", query={"eye-colour:missing": "true"})) == ["p4"]

    put(client, patient("blue"), "p5")  # a write after the reindex is found without another
    assert ids(client.get(f"{PREFIX}/Patient", query={"eye-colour": "blue"})) == ["p1", "p2", "p5"]

    metadata = client.get(f"{PREFIX}/metadata").body
    rest = metadata["rest"][0]
    patient_params = next(r for r in rest["resource"] if r["type"] == "Patient")["searchParam"]
    assert {"name": "eye-colour", "type": "token", "definition": eye_colour()["url"]} in patient_params
    assert any(op["name"] == "reindex" for op in rest["operation"])
    other_tenant = client.get("/metadata").body["rest"][0]
    assert "eye-colour" not in {p["name"] for r in other_tenant["resource"] for p in r.get("searchParam", [])}


def test_writes_during_a_job_end_up_indexed_with_the_new_parameter(client: InProcessClient, settings: Settings) -> None:
    for n in range(6):
        put(client, patient("blue"), f"p{n}")
    put(client, eye_colour(), "eye")
    status = kick_off(client, "/Patient/$reindex")
    runner = ReindexRunner(reindex_parts(settings), batch_size=2, max_batches=1)
    runner.drain()  # pins the catalog state
    runner.drain()  # p0, p1

    put(client, patient("green"), "p0")  # already walked: its write indexes it
    put(client, patient("green"), "p5")  # not walked yet: the batch meets the new version
    put(client, patient("green"), "p9")  # new
    run_to_end(runner)

    assert parameters(client.get(status))["status"] == ["completed"]
    assert ids(client.get(f"{PREFIX}/Patient", query={"eye-colour": "green"})) == ["p0", "p5", "p9"]
    assert ids(client.get(f"{PREFIX}/Patient", query={"eye-colour": "blue"})) == ["p1", "p2", "p3", "p4"]


def test_a_job_left_by_a_dead_worker_is_taken_over_when_its_lease_ends(
    client: InProcessClient, settings: Settings
) -> None:
    for n in range(5):
        put(client, patient("blue"), f"p{n}")
    put(client, eye_colour(), "eye")
    status = kick_off(client, "/Patient/$reindex")
    now = [1_000_000]
    parts = reindex_parts(settings)
    first = ReindexRunner(parts, batch_size=2, max_batches=2, lease_ms=60_000, clock=lambda: now[0], worker="first")
    second = ReindexRunner(parts, batch_size=2, max_batches=100, lease_ms=60_000, clock=lambda: now[0], worker="second")

    assert first.drain() == 2  # then the first worker dies
    assert second.drain() == 0  # its lease still holds
    now[0] += 60_001
    assert second.drain() > 0

    result = parameters(client.get(status))
    assert result["status"] == ["completed"]
    assert result["processed"] == result["total"] == [5]
    assert first.drain() == 0  # the job is done; nothing to claim
    assert ids(client.get(f"{PREFIX}/Patient", query={"eye-colour": "blue"})) == ["p0", "p1", "p2", "p3", "p4"]


def test_url_makes_only_that_parameter_searchable(client: InProcessClient, settings: Settings) -> None:
    put(client, {**patient("blue"), "birthDate": "1970-01-01"}, "p1")
    put(client, eye_colour(), "eye")
    born = eye_colour(
        url="http://example.org/SearchParameter/born", code="born", type="date", expression="Patient.birthDate"
    )
    put(client, born, "born")

    body = {"resourceType": "Parameters", "parameter": [{"name": "url", "valueUri": born["url"]}]}
    status = kick_off(client, body=body)
    run_to_end(ReindexRunner(reindex_parts(settings)))

    assert parameters(client.get(status))["searchable"] == ["Patient.born"]
    assert ids(client.get(f"{PREFIX}/Patient", query={"born": "1970"})) == ["p1"]
    strict = {"prefer": "handling=strict"}
    assert client.get(f"{PREFIX}/Patient", query={"eye-colour": "blue"}, headers=strict).status == 400


@pytest.mark.parametrize(
    ("path", "query", "body", "status", "words"),
    [
        ("/$reindex", {"_type": "Nonsense"}, None, 400, "not a resource type"),
        ("/$reindex", {"url": "http://example.org/none"}, None, 400, "no active SearchParameter"),
        ("/$reindex", {"everything": "true"}, None, 400, "Unknown $reindex parameter"),
        ("/Patient/$reindex", {"_type": "Observation"}, None, 400, "system-level"),
        ("/$reindex", None, {"resourceType": "Patient"}, 400, "Parameters"),
        ("/$reindex", None, {"resourceType": "Parameters", "parameter": [{"name": "url"}]}, 400, "value"),
        ("/Nonsense/$reindex", None, None, 404, "not a FHIR R4 resource type"),
    ],
)
def test_a_bad_kick_off_is_refused(
    client: InProcessClient, path: str, query: dict[str, str] | None, body: Any, status: int, words: str
) -> None:
    reply = client.request("POST", f"{PREFIX}{path}", query=query, body=body)

    assert reply.status == status, reply.body
    assert words in reply.body["issue"][0]["diagnostics"]


def test_a_job_is_seen_by_its_tenant_only(client: InProcessClient) -> None:
    status = kick_off(client)
    job = status.rsplit("/", 1)[1]

    assert client.get(status).status == 202
    assert client.get(f"/tenant/other/_reindex/{job}").status == 404
    assert client.get(f"{PREFIX}/_reindex/{'0' * 32}").status == 404
    assert client.get(f"{PREFIX}/_reindex/not-a-job!").status == 404


@pytest.mark.parametrize(
    ("changes", "element"),
    [
        ({"expression": "Patient.extension.where(url = 'x'"}, "SearchParameter.expression"),
        ({"code": "birthdate"}, "SearchParameter.code"),
        ({"base": ["NotAType"]}, "SearchParameter.base"),
    ],
)
def test_a_searchparameter_the_server_cannot_index_is_a_400(
    client: InProcessClient, changes: dict[str, Any], element: str
) -> None:
    created = client.request("POST", f"{PREFIX}/SearchParameter", body=eye_colour(**changes))

    assert created.status == 400, created.body
    assert any(e.startswith(element) for e in created.body["issue"][0].get("expression", []))


def test_a_draft_is_stored_unchecked_and_checked_when_it_becomes_active(client: InProcessClient) -> None:
    draft = eye_colour(status="draft", code="birthdate")  # would collide with Patient's birthdate

    assert client.request("PUT", f"{PREFIX}/SearchParameter/d", body={**draft, "id": "d"}).status == 201
    activated = client.request("PUT", f"{PREFIX}/SearchParameter/d", body={**draft, "id": "d", "status": "active"})
    assert activated.status == 400


def test_with_rbac_only_a_group_that_allows_reindex_may(tmp_path: Path) -> None:
    from tests.unit.test_authz_kit import TestIssuer, smart_client

    issuer = TestIssuer()
    rules = {
        "version": 1,
        "groupRules": {
            "practitioner": {"interactions": ["create", "read", "update", "search-type"], "resources": "*"},
            "admin": {"interactions": ["reindex"], "resources": "*"},
        },
    }
    rbac = smart_client(tmp_path, issuer, mode="rbac", rbac_rules=rules)
    practitioner = issuer.token(None, **{"cognito:groups": ["practitioner"]})
    admin = issuer.token(None, **{"cognito:groups": ["admin"]})

    assert rbac.request("POST", "/$reindex", token=practitioner).status == 403
    accepted = rbac.request("POST", "/$reindex", token=admin)
    assert accepted.status == 202
    status = accepted.headers["Content-Location"].split("fhir.test", 1)[1]
    assert rbac.get(status, practitioner).status == 403
    assert rbac.get(status, admin).status == 202


def test_a_bundle_entry_with_a_searchparameter_the_server_cannot_index_fails_the_transaction(
    client: InProcessClient,
) -> None:
    bad = eye_colour(expression="Patient.name.noSuchFunction()")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": bad, "request": {"method": "POST", "url": "SearchParameter"}}],
    }

    reply = client.request("POST", PREFIX, body=bundle)

    assert reply.status == 400, reply.body
    assert "cannot be evaluated" in str(reply.body)
