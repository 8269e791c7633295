"""``GET /metadata`` (http://hl7.org/fhir/R4/http.html#capabilities): the CapabilityStatement, and
every interaction it claims for Patient actually works over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from tests.e2e.support import JSON_PATCH, after_earlier_writes, create, etag_version, patient, put, unique


@pytest.fixture
def statement(client: httpx.Client) -> dict[str, Any]:
    reply = client.get("/metadata")
    assert reply.status_code == 200
    body: dict[str, Any] = reply.json()
    return body


def _patient_entry(statement: dict[str, Any]) -> dict[str, Any]:
    (rest,) = [r for r in statement["rest"] if r["mode"] == "server"]
    (entry,) = [r for r in rest["resource"] if r["type"] == "Patient"]
    return entry


def test_capability_statement_is_r4(statement: dict[str, Any]) -> None:
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["status"] in ("draft", "active", "retired", "unknown")
    assert statement["date"]
    assert "json" in statement["format"] or "application/fhir+json" in statement["format"]
    assert not any("xml" in f for f in statement["format"]), "XML is refused with 406, so it must not be claimed"
    assert _patient_entry(statement)["interaction"]


def _read(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    assert client.get(f"/Patient/{created['id']}").json() == created


def _vread(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    put(client, {**created, "gender": "female"})
    assert client.get(f"/Patient/{created['id']}/_history/1").json() == created


def _update(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    reply = put(client, {**created, "gender": "female"})
    assert reply.status_code == 200
    assert etag_version(reply) == 2


def _patch(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    reply = client.patch(
        f"/Patient/{created['id']}",
        content=b'[{"op": "replace", "path": "/gender", "value": "female"}]',
        headers={"Content-Type": JSON_PATCH},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["gender"] == "female"


def _delete(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    assert client.delete(f"/Patient/{created['id']}").status_code in (200, 204)
    assert client.get(f"/Patient/{created['id']}").status_code == 410


def _history_instance(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    put(client, {**created, "gender": "female"})
    bundle = client.get(f"/Patient/{created['id']}/_history").json()
    assert bundle["type"] == "history"
    assert len(bundle["entry"]) == 2


def _history_type(client: httpx.Client) -> None:
    after_earlier_writes()
    created = create(client, patient(gender="male"))
    bundle = client.get("/Patient/_history", params={"_since": created["meta"]["lastUpdated"]}).json()
    assert bundle["type"] == "history"
    assert [e["resource"]["id"] for e in bundle["entry"]] == [created["id"]]


def _create(client: httpx.Client) -> None:
    reply = client.post("/Patient", json=patient(gender="male"))
    assert reply.status_code == 201
    assert "location" in reply.headers


def _search_type(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    reply = client.get("/Patient", params={"_id": created["id"]})
    assert reply.status_code == 200, reply.text
    bundle = reply.json()
    assert bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle["entry"]] == [created["id"]]


TYPE_INTERACTIONS: dict[str, Callable[[httpx.Client], None]] = {
    "read": _read,
    "vread": _vread,
    "update": _update,
    "patch": _patch,
    "delete": _delete,
    "history-instance": _history_instance,
    "history-type": _history_type,
    "create": _create,
    "search-type": _search_type,
}


def test_every_claimed_patient_interaction_works(client: httpx.Client, statement: dict[str, Any]) -> None:
    claimed = [i["code"] for i in _patient_entry(statement)["interaction"]]

    unknown = set(claimed) - set(TYPE_INTERACTIONS)
    assert not unknown, f"the statement claims interactions this test cannot exercise: {unknown}"
    for code in claimed:
        TYPE_INTERACTIONS[code](client)


def _history_system(client: httpx.Client) -> None:
    after_earlier_writes()
    created = create(client, patient(gender="male"))
    bundle = client.get("/_history", params={"_since": created["meta"]["lastUpdated"]}).json()
    assert bundle["type"] == "history"
    assert [e["resource"]["id"] for e in bundle["entry"]] == [created["id"]]


def _bundle_interaction(kind: str) -> Callable[[httpx.Client], None]:
    def run(client: httpx.Client) -> None:
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [{"resource": patient(gender="male"), "request": {"method": "POST", "url": "Patient"}}],
        }
        reply = client.post("/", json=bundle)
        assert reply.status_code == 200, reply.text
        assert reply.json()["type"] == f"{kind}-response"

    return run


def _search_system(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    reply = client.get("/", params={"_id": created["id"]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["type"] == "searchset"


SYSTEM_INTERACTIONS: dict[str, Callable[[httpx.Client], None]] = {
    "history-system": _history_system,
    "transaction": _bundle_interaction("transaction"),
    "batch": _bundle_interaction("batch"),
    "search-system": _search_system,
}


def test_every_claimed_system_interaction_works(client: httpx.Client, statement: dict[str, Any]) -> None:
    (rest,) = [r for r in statement["rest"] if r["mode"] == "server"]
    claimed = [i["code"] for i in rest.get("interaction", [])]

    unknown = set(claimed) - set(SYSTEM_INTERACTIONS)
    assert not unknown, f"the statement claims interactions this test cannot exercise: {unknown}"
    for code in claimed:
        SYSTEM_INTERACTIONS[code](client)


def test_claimed_patient_flags_hold(client: httpx.Client, statement: dict[str, Any]) -> None:
    entry = _patient_entry(statement)
    created = create(client, patient(gender="male"))
    if entry.get("updateCreate"):
        assert put(client, patient(id=unique("cap"), gender="male")).status_code == 201
    if entry.get("conditionalRead") in ("full-support", "not-match"):
        reply = client.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
        assert reply.status_code == 304
    if entry.get("conditionalRead") in ("full-support", "modified-since"):
        future = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
        assert client.get(f"/Patient/{created['id']}", headers={"If-Modified-Since": future}).status_code == 304
    if entry.get("versioning") == "versioned-update":
        assert put(client, {**created, "gender": "female"}, headers={"If-Match": 'W/"9"'}).status_code == 412
    if entry.get("readHistory"):
        put(client, {**created, "gender": "other"})
        assert client.get(f"/Patient/{created['id']}/_history/1").json() == created


def test_claimed_conditional_interactions_work(client: httpx.Client, statement: dict[str, Any]) -> None:
    from fhirflow.capabilities import CONDITIONAL_PATCH_EXTENSION

    entry = _patient_entry(statement)
    value = unique("cond")
    marker = {"identifier": f"urn:e2e:cap|{value}"}
    body = patient(identifier=[{"system": "urn:e2e:cap", "value": value}], name=[{"family": "Cap"}])
    if entry.get("conditionalCreate"):
        headers = {"If-None-Exist": f"identifier={marker['identifier']}"}
        first = client.post("/Patient", json=body, headers=headers)
        assert first.status_code == 201
        assert client.post("/Patient", json=body, headers=headers).json()["id"] == first.json()["id"]
    if entry.get("conditionalUpdate"):
        assert client.put("/Patient", params=marker, json={**body, "gender": "male"}).status_code in (200, 201)
    patch_claimed = {"url": CONDITIONAL_PATCH_EXTENSION, "valueBoolean": True} in entry.get("extension", [])
    if patch_claimed:
        patched = client.patch(
            "/Patient",
            params=marker,
            content=b'[{"op": "add", "path": "/active", "value": true}]',
            headers={"Content-Type": JSON_PATCH},
        )
        assert patched.status_code == 200
    if entry.get("conditionalDelete") in ("single", "multiple"):
        assert client.delete("/Patient", params=marker).status_code in (200, 204)
        assert client.get("/Patient", params=marker).json().get("entry", []) == []


def test_each_claimed_patch_format_works(client: httpx.Client, statement: dict[str, Any]) -> None:
    documents = {
        "application/json-patch+json": b'[{"op": "replace", "path": "/gender", "value": "female"}]',
        "application/fhir+json": (
            b'{"resourceType": "Parameters", "parameter": [{"name": "operation", "part": ['
            b'{"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.gender"},'
            b'{"name": "value", "valueCode": "female"}]}]}'
        ),
    }
    for fmt in statement.get("patchFormat", []):
        assert fmt in documents, f"patch format {fmt} is claimed but this test has no document for it"
        created = create(client, patient(gender="male"))
        reply = client.patch(f"/Patient/{created['id']}", content=documents[fmt], headers={"Content-Type": fmt})
        assert reply.status_code == 200, (fmt, reply.text)
        assert reply.json()["gender"] == "female"
