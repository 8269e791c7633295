"""Bulk data export end to end: a real embedded server (its background export worker included),
driven over HTTP with httpx, each test in a tenant of its own so that the counts are exact."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import after_earlier_writes, assert_outcome
from tests.unit.test_authz_kit import TestIssuer

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def base() -> str:
    return f"/tenant/x{uuid.uuid4().hex[:12]}"


def _put_all(client: httpx.Client, base: str, resources: list[dict[str, Any]]) -> None:
    for resource in resources:
        reply = client.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource)
        assert reply.status_code == 201, reply.text


def _path(client: httpx.Client, url: str) -> str:
    return url.split(str(client.base_url).rstrip("/"), 1)[1]


def export(client: httpx.Client, path: str, headers: dict[str, str] | None = None, **params: str) -> dict[str, Any]:
    """Kick off, poll until done (X-Progress while running), return the manifest."""
    accepted = client.get(path, params=params, headers=headers or ASYNC)
    assert accepted.status_code == 202, accepted.text
    status = _path(client, accepted.headers["content-location"])
    for _ in range(1200):  # a guard against a hang, not a timing assertion
        reply = client.get(status)
        if reply.status_code != 202:
            break
        assert reply.headers["x-progress"]
        time.sleep(0.05)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    manifest: dict[str, Any] = reply.json()
    manifest["status"] = status
    return manifest


def download(client: httpx.Client, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest["output"]:
        reply = client.get(_path(client, entry["url"]), headers={"Accept": "application/fhir+ndjson"})
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith("application/fhir+ndjson")
        resources = [json.loads(line) for line in reply.text.splitlines()]
        assert len(resources) == entry["count"]
        out.setdefault(entry["type"], []).extend(resources)
    return out


def chart(patient: str, n: int) -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/{patient}"}
    return [
        {"resourceType": "Patient", "id": patient, "name": [{"family": "Example"}]},
        *(
            {
                "resourceType": "Observation",
                "id": f"{patient}-obs{i}",
                "status": "final" if i % 2 else "preliminary",
                "code": {"text": "heart rate"},
                "subject": subject,
            }
            for i in range(n)
        ),
        {"resourceType": "Condition", "id": f"{patient}-cond", "subject": subject},
    ]


def test_system_export_holds_every_stored_resource(client: httpx.Client, base: str) -> None:
    stored = [*chart("p1", 4), *chart("p2", 3), {"resourceType": "Organization", "id": "org", "name": "Hospital"}]
    _put_all(client, base, stored)

    manifest = export(client, f"{base}/$export")
    files = download(client, manifest)

    assert manifest["request"].endswith(f"{base}/$export")
    assert manifest["requiresAccessToken"] is False
    assert manifest["error"] == []
    assert {t: len(rs) for t, rs in files.items()} == {
        "Patient": 2,
        "Observation": 7,
        "Condition": 2,
        "Organization": 1,
    }
    for resource in stored:
        [exported] = [r for r in files[resource["resourceType"]] if r["id"] == resource["id"]]
        assert {k: v for k, v in exported.items() if k != "meta"} == resource
        assert exported == client.get(f"{base}/{resource['resourceType']}/{resource['id']}").json()


def test_type_since_and_type_filter(client: httpx.Client, base: str) -> None:
    _put_all(client, base, chart("p1", 4))
    after_earlier_writes()
    _put_all(client, base, [{"resourceType": "Condition", "id": "later", "subject": {"reference": "Patient/p1"}}])
    since = client.get(f"{base}/Condition/later").json()["meta"]["lastUpdated"]

    by_type = download(client, export(client, f"{base}/$export", _type="Observation,Condition"))
    recent = download(client, export(client, f"{base}/$export", _since=since))
    final = download(
        client, export(client, f"{base}/$export", _type="Observation", _typeFilter="Observation?status=final")
    )

    assert sorted(by_type) == ["Condition", "Observation"]
    assert {r["id"] for r in recent["Condition"]} == {"later"}
    assert list(recent) == ["Condition"]
    assert sorted(r["id"] for r in final["Observation"]) == ["p1-obs1", "p1-obs3"]


def test_patient_and_group_level(client: httpx.Client, base: str) -> None:
    _put_all(client, base, [*chart("a", 2), *chart("b", 1), *chart("c", 1)])
    _put_all(client, base, [{"resourceType": "Organization", "id": "org"}])
    group = {
        "resourceType": "Group",
        "id": "ab",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": "Patient/a"}}, {"entity": {"reference": "Patient/b"}}],
    }
    _put_all(client, base, [group])

    everyone = download(client, export(client, f"{base}/Patient/$export"))
    members = download(client, export(client, f"{base}/Group/ab/$export", _type="Patient,Observation"))

    assert "Organization" not in everyone
    assert sorted(r["id"] for r in everyone["Patient"]) == ["a", "b", "c"]
    assert len(everyone["Observation"]) == 4
    assert sorted(r["id"] for r in members["Patient"]) == ["a", "b"]
    assert sorted(r["id"] for r in members["Observation"]) == ["a-obs0", "a-obs1", "b-obs0"]


def test_cancel(client: httpx.Client, base: str) -> None:
    _put_all(client, base, chart("p1", 1))
    manifest = export(client, f"{base}/$export")
    file_url = _path(client, manifest["output"][0]["url"])

    cancelled = client.delete(manifest["status"])

    assert cancelled.status_code == 202
    assert_outcome(client.get(manifest["status"]), 404, code="not-found")
    assert_outcome(client.get(file_url), 404, code="not-found")


@pytest.mark.parametrize(
    ("path", "params", "headers"),
    [
        ("/$export", {}, {}),  # no Prefer: respond-async
        ("/$export", {"_outputFormat": "application/fhir+json"}, ASYNC),
        ("/$export", {"_since": "last week"}, ASYNC),
        ("/$export", {"_type": "Patient,NotAType"}, ASYNC),
        ("/$export", {"_typeFilter": "Observation?date=ge-not-a-date"}, ASYNC),
        ("/$export", {"_elements": "id"}, {"Prefer": "respond-async, handling=strict"}),
        ("/Patient/$export", {"_type": "Organization"}, ASYNC),
    ],
)
def test_bad_kick_offs_are_400(
    client: httpx.Client, base: str, path: str, params: dict[str, str], headers: dict[str, str]
) -> None:
    assert_outcome(client.get(f"{base}{path}", params=params, headers=headers), 400)


def test_another_tenant_sees_no_job(client: httpx.Client, base: str) -> None:
    _put_all(client, base, chart("p1", 1))
    manifest = export(client, f"{base}/$export")
    job = manifest["status"].rsplit("/", 1)[1]
    file_name = manifest["output"][0]["url"].rsplit("/", 1)[1]

    assert_outcome(client.get(f"/tenant/elsewhere/_export/{job}"), 404)
    assert_outcome(client.get(f"/_export/{job}"), 404)
    assert_outcome(client.get(f"/tenant/elsewhere/_export/{job}/{file_name}"), 404)
    assert_outcome(client.delete(f"/tenant/elsewhere/_export/{job}"), 404)
    assert client.get(manifest["status"]).status_code == 200  # still there for its own tenant


def test_the_cli_downloads_the_files(client: httpx.Client, base: str, tmp_path: Any) -> None:
    from fhirflow.exporter import run_export

    _put_all(client, base, chart("p1", 2))
    report = run_export(
        f"{str(client.base_url).rstrip('/')}{base}", tmp_path, types=["Observation"], since=None, token=None
    )

    assert report.resources == 2
    assert [p.name for p in report.files] == ["Observation-1.ndjson"]
    assert json.loads((tmp_path / "manifest.json").read_text())["output"][0]["count"] == 2


# -- Bulk Data IG 2.0: Group membership, referenced resources, _type outside the compartment ---------


def _group(members: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Group", "id": "cohort", "type": "person", "actual": True, "member": members}


def test_group_export_honours_member_period_and_inactive(client: httpx.Client, base: str) -> None:
    _put_all(client, base, [*chart("current", 1), *chart("ended", 1), *chart("gone", 1), *chart("later", 1)])
    _put_all(client, base, [*chart("open", 1)])
    group = _group(
        [
            {"entity": {"reference": "Patient/current"}, "period": {"start": "2020-01-01", "end": "2999-12-31"}},
            {"entity": {"reference": "Patient/ended"}, "period": {"start": "2020-01-01", "end": "2021-06-30"}},
            {"entity": {"reference": "Patient/gone"}, "inactive": True},
            {"entity": {"reference": "Patient/later"}, "period": {"start": "2999-01-01"}},
            {"entity": {"reference": "Patient/open"}, "period": {"start": "2020-01-01"}},
        ]
    )
    _put_all(client, base, [group])

    files = download(client, export(client, f"{base}/Group/cohort/$export", _type="Patient,Observation"))

    assert sorted(r["id"] for r in files["Patient"]) == ["current", "open"]
    assert sorted(r["id"] for r in files["Observation"]) == ["current-obs0", "open-obs0"]


def _with_references(patient: str) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Patient",
            "id": patient,
            "managingOrganization": {"reference": f"Organization/org-{patient}"},
        },
        {
            "resourceType": "MedicationRequest",
            "id": f"{patient}-rx",
            "status": "active",
            "intent": "order",
            "subject": {"reference": f"Patient/{patient}"},
            "medicationReference": {"reference": f"Medication/med-{patient}"},
            "requester": {"reference": f"Practitioner/dr-{patient}"},
        },
        {
            "resourceType": "Encounter",
            "id": f"{patient}-enc",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{patient}"},
            "location": [{"location": {"reference": f"Location/loc-{patient}"}}],
        },
    ]


def _referenced_world(client: httpx.Client, base: str) -> None:
    outside = [
        {"resourceType": rtype, "id": f"{prefix}-{p}"}
        for p in ("in", "out")
        for rtype, prefix in (
            ("Organization", "org"),
            ("Medication", "med"),
            ("Practitioner", "dr"),
            ("Location", "loc"),
        )
    ]
    _put_all(client, base, [*outside, {"resourceType": "Organization", "id": "unrelated"}])
    _put_all(client, base, [*_with_references("in"), *_with_references("out")])
    _put_all(client, base, [_group([{"entity": {"reference": "Patient/in"}}])])


def test_group_export_includes_the_resources_its_resources_reference(client: httpx.Client, base: str) -> None:
    _referenced_world(client, base)

    files = download(client, export(client, f"{base}/Group/cohort/$export"))

    assert {t: sorted(r["id"] for r in rs) for t, rs in files.items()} == {
        "Patient": ["in"],
        "Group": ["cohort"],  # in the Patient compartment (Group.member)
        "MedicationRequest": ["in-rx"],
        "Encounter": ["in-enc"],
        "Organization": ["org-in"],
        "Medication": ["med-in"],
        "Practitioner": ["dr-in"],
        "Location": ["loc-in"],
    }


def test_type_outside_the_compartment_is_an_error_only_when_alone(client: httpx.Client, base: str) -> None:
    _referenced_world(client, base)

    mixed = download(client, export(client, f"{base}/Group/cohort/$export", _type="MedicationRequest,Practitioner"))
    alone = client.get(f"{base}/Group/cohort/$export", params={"_type": "Practitioner,Organization"}, headers=ASYNC)
    lenient = export(
        client,
        f"{base}/Group/cohort/$export",
        _type="Practitioner",
        headers={"Prefer": "respond-async, handling=lenient"},
    )

    assert {t: sorted(r["id"] for r in rs) for t, rs in mixed.items()} == {
        "MedicationRequest": ["in-rx"],
        "Practitioner": ["dr-in"],
    }
    outcome = assert_outcome(alone, 400)
    assert "outside the Patient compartment" in outcome["issue"][0]["diagnostics"]
    assert lenient["output"] == []
    [error_file] = lenient["error"]
    reply = client.get(_path(client, error_file["url"]))
    [issue] = json.loads(reply.text.splitlines()[0])["issue"]
    assert issue["severity"] == "warning"
    assert issue["expression"] == ["_type"]
    assert "Practitioner" in issue["diagnostics"]


@pytest.fixture(scope="module")
def smart_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, TestIssuer]]:
    issuer = TestIssuer()
    config = {"issuers": [{"issuer": issuer.issuer, "audience": [issuer.audience], "jwks": issuer.jwks()}]}
    env = {"FHIRFLOW_AUTH_CONFIG": json.dumps(config)}
    data_dir = tmp_path_factory.mktemp("export-smart")
    with LocalServer(data_dir=data_dir, extra_args=("--auth", "smart"), env=env) as server:
        yield server, issuer


def test_a_group_the_token_may_not_read_is_a_clear_403_and_hidden_ones_stay_unknown(
    smart_server: tuple[LocalServer, TestIssuer],
) -> None:
    server, issuer = smart_server
    admin = {"Authorization": f"Bearer {issuer.token('system/*.cruds')}"}
    no_groups = {**ASYNC, "Authorization": f"Bearer {issuer.token('system/Patient.rs system/Observation.rs')}"}
    patient_a = {**ASYNC, "Authorization": f"Bearer {issuer.token('patient/*.rs', patient='a')}"}
    with httpx.Client(base_url=server.base_url, headers={"Content-Type": "application/fhir+json"}, timeout=30) as http:
        for resource in [*chart("a", 1), *chart("b", 1)]:
            http.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=admin)
        assert http.put(
            "/Group/of-b", json={**_group([{"entity": {"reference": "Patient/b"}}]), "id": "of-b"}, headers=admin
        ).is_success

        forbidden = http.get("/Group/of-b/$export", headers=no_groups)
        missing_forbidden = http.get("/Group/nope/$export", headers=no_groups)
        hidden = http.get("/Group/of-b/$export", headers=patient_a)
        missing = http.get("/Group/nope/$export", headers=patient_a)

    outcome = assert_outcome(forbidden, 403, code="forbidden")
    assert "may not read Group resources" in outcome["issue"][0]["diagnostics"]
    assert missing_forbidden.json()["issue"][0]["diagnostics"] == outcome["issue"][0]["diagnostics"].replace(
        "of-b", "nope"
    )
    # A token that may read some Groups learns nothing of one outside its reach: as for a missing one.
    assert_outcome(hidden, 404)
    assert hidden.json()["issue"][0]["diagnostics"] == missing.json()["issue"][0]["diagnostics"].replace("nope", "of-b")
