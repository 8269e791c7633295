"""Bulk data export end to end: a real embedded server (its background export worker included),
driven over HTTP with httpx, each test in a tenant of its own so that the counts are exact."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.support import after_earlier_writes, assert_outcome

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


def export(client: httpx.Client, path: str, **params: str) -> dict[str, Any]:
    """Kick off, poll until done (X-Progress while running), return the manifest."""
    accepted = client.get(path, params=params, headers=ASYNC)
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
