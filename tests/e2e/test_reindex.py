"""Runtime SearchParameters and ``$reindex`` end to end, on the two-process server: a parameter
created after the data is unknown to search until a reindex job (run by the server's background
worker) has gone over that data; then it finds exactly the older matching resources, and later
writes without another reindex. Each test works in a tenant of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import FHIR_JSON, assert_outcome, unique

EYE = "http://example.org/eye-colour"


@pytest.fixture
def tenant(server: LocalServer) -> Iterator[tuple[str, httpx.Client]]:
    name = unique("rx")
    base = f"{server.base_url}/tenant/{name}"
    with httpx.Client(base_url=base, headers={"Content-Type": FHIR_JSON}, timeout=60) as http:
        yield base, http


def searchparameter(code: str, base: str, ptype: str, expression: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "SearchParameter",
        "url": f"http://example.org/SearchParameter/{code}",
        "name": code.replace("-", ""),
        "status": "active",
        "description": f"{code} (a test parameter)",
        "code": code,
        "base": [base],
        "type": ptype,
        "expression": expression,
        **extra,
    }


PARAMETERS = [
    searchparameter("eye-colour", "Patient", "token", f"Patient.extension.where(url='{EYE}').value"),
    searchparameter("note-text", "Observation", "string", "Observation.note.text"),
    searchparameter("issued", "Observation", "date", "Observation.issued"),
    searchparameter(
        "note-author",
        "Observation",
        "reference",
        "Observation.note.author.ofType(Reference)",
        target=["Practitioner"],
    ),
]


def patient(colour: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "Iris"}]}
    if colour:
        out["extension"] = [{"url": EYE, "valueCode": colour}]
    return out


def observation(note: str, issued: str, author: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "eye exam"},
        "issued": issued,
        "note": [{"text": note, "authorReference": {"reference": f"Practitioner/{author}"}}],
    }


def created(http: httpx.Client, resource: dict[str, Any]) -> str:
    reply = http.post(f"/{resource['resourceType']}", json=resource)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def matches(base: str, path: str, **params: str) -> set[str]:
    """The ids a search finds, on a fresh connection (so over the run both server processes answer)."""
    with httpx.Client(base_url=base, timeout=60) as fresh:
        reply = fresh.get(path, params={**params, "_count": "100"})
    assert reply.status_code == 200, reply.text
    return {e["resource"]["id"] for e in reply.json().get("entry", []) if e["search"]["mode"] == "match"}


def reindexed(http: httpx.Client, path: str = "/$reindex", **kwargs: Any) -> dict[str, list[Any]]:
    """Kick off a reindex, poll its status until done, and return the final Parameters by name."""
    accepted = http.post(path, **kwargs)
    assert accepted.status_code == 202, accepted.text
    status = accepted.headers["Content-Location"]
    assert "/_reindex/" in status
    for _ in range(1200):  # a guard against hanging, not a timing assertion
        reply = http.get(status)
        if reply.status_code != 202:
            break
        assert reply.headers["X-Progress"]
        assert reply.json()["resourceType"] == "Parameters"
        time.sleep(0.05)
    assert reply.status_code == 200, reply.text
    out: dict[str, list[Any]] = {}
    for parameter in reply.json()["parameter"]:
        value = next(v for k, v in parameter.items() if k.startswith("value"))
        out.setdefault(parameter["name"], []).append(value)
    return out


def test_a_searchparameter_created_at_run_time_finds_older_data_after_reindex(
    tenant: tuple[str, httpx.Client],
) -> None:
    base, http = tenant
    blue = {created(http, patient("blue")) for _ in range(2)}
    brown = created(http, patient("brown"))
    created(http, patient(None))
    left = created(http, observation("Left eye checked", "2021-03-04T05:06:07Z", "dr-a"))
    right = created(http, observation("Right eye dilated", "2019-01-01T00:00:00Z", "dr-b"))
    for definition in PARAMETERS:
        created(http, definition)

    lenient = http.get("/Patient", params={"eye-colour": "blue"})
    assert lenient.status_code == 200
    assert len([e for e in lenient.json()["entry"] if e["search"]["mode"] == "match"]) == 4  # ignored
    assert "eye-colour" in lenient.text  # and reported in the outcome entry
    strict = http.get("/Patient", params={"eye-colour": "blue"}, headers={"Prefer": "handling=strict"})
    assert_outcome(strict, 400, expression="eye-colour")

    result = reindexed(http)

    assert result["status"] == ["completed"]
    assert result["processed"] == result["total"]
    assert set(result["searchable"]) == {f"{p['base'][0]}.{p['code']}" for p in PARAMETERS}
    assert matches(base, "/Patient", **{"eye-colour": "blue"}) == blue
    assert matches(base, "/Patient", **{"eye-colour": "brown"}) == {brown}
    assert matches(base, "/Observation", **{"note-text": "left eye"}) == {left}
    assert matches(base, "/Observation", issued="ge2020-01-01") == {left}
    assert matches(base, "/Observation", issued="lt2020") == {right}
    assert matches(base, "/Observation", **{"note-author": "Practitioner/dr-b"}) == {right}

    later = created(http, patient("blue"))  # no reindex needed for what is written now
    for _ in range(4):
        assert matches(base, "/Patient", **{"eye-colour": "blue"}) == blue | {later}

    statement = http.get("/metadata").json()["rest"][0]
    patient_params = next(r for r in statement["resource"] if r["type"] == "Patient")["searchParam"]
    assert {"name": "eye-colour", "type": "token", "definition": PARAMETERS[0]["url"]} in patient_params
    assert {"name": "reindex", "definition": "https://fhirflow.dev/fhir/OperationDefinition/reindex"} in statement[
        "operation"
    ]


def test_a_type_level_reindex_covers_its_type_only(tenant: tuple[str, httpx.Client]) -> None:
    base, http = tenant
    blue = created(http, patient("blue"))
    created(http, observation("Left eye checked", "2021-03-04T05:06:07Z", "dr-a"))
    for definition in PARAMETERS[:2]:
        created(http, definition)

    result = reindexed(http, "/Patient/$reindex")

    assert result["searchable"] == ["Patient.eye-colour"]
    assert matches(base, "/Patient", **{"eye-colour": "blue"}) == {blue}
    strict = http.get("/Observation", params={"note-text": "left"}, headers={"Prefer": "handling=strict"})
    assert_outcome(strict, 400, expression="note-text")


@pytest.mark.parametrize(
    ("changes", "expression"),
    [
        ({"expression": "Patient.extension.where(url = 'x'"}, "SearchParameter.expression"),
        ({"expression": "Patient.name.noSuchFunction()"}, "SearchParameter.expression"),
        ({"code": "gender"}, "SearchParameter.code"),
        ({"type": "special"}, "SearchParameter.type"),
        ({"type": "composite", "component": [{"definition": "http://example.org/x", "expression": "value"}]}, None),
    ],
)
def test_a_searchparameter_the_server_cannot_index_is_refused(
    tenant: tuple[str, httpx.Client], changes: dict[str, Any], expression: str | None
) -> None:
    _, http = tenant
    reply = http.post("/SearchParameter", json={**PARAMETERS[0], **changes})

    assert_outcome(reply, 400, expression=expression)


def test_bad_reindex_requests_are_400(tenant: tuple[str, httpx.Client]) -> None:
    _, http = tenant
    assert_outcome(http.post("/$reindex", params={"_type": "NotAType"}), 400, expression="_type")
    assert_outcome(http.post("/$reindex", params={"url": "http://example.org/unknown"}), 400, expression="url")
    assert_outcome(http.get("/_reindex/0123456789abcdef"), 404)


def _worker_state(server: LocalServer, tenant_name: str, job: str) -> tuple[str | None, int]:
    """(the job's status, the reindex messages still queued), read from the server's database file:
    what the background worker did, seen without asking the server."""
    import sqlite3

    connection = sqlite3.connect(f"file:{server.data_dir / 'fhirflow.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        row = connection.execute(
            "SELECT status FROM reindex_jobs WHERE tenant = ? AND id = ?", (tenant_name, job)
        ).fetchone()
        [queued] = connection.execute("SELECT COUNT(*) FROM job_queue WHERE queue = 'reindex'").fetchone()
    finally:
        connection.close()
    return (row[0] if row else None), int(queued)


def test_a_reindex_job_finishes_on_the_queue_with_no_one_polling(
    server: LocalServer, tenant: tuple[str, httpx.Client]
) -> None:
    """The kick-off queues the job's first chunk; the worker loop runs chunk after chunk (each
    queues the next) until the job is done. The status URL is read once, at the end."""
    base, http = tenant
    tenant_name = base.rsplit("/", 1)[1]
    green = {created(http, patient("green")) for _ in range(3)}
    created(http, patient("grey"))
    created(http, PARAMETERS[0])

    accepted = http.post("/Patient/$reindex")
    assert accepted.status_code == 202, accepted.text
    status_url = accepted.headers["Content-Location"]
    job = status_url.rsplit("/", 1)[1]
    state: tuple[str | None, int] = (None, -1)
    for _ in range(600):  # a guard against hanging, not a timing assertion
        state = _worker_state(server, tenant_name, job)
        if state[0] == "completed" and state[1] == 0:
            break
        time.sleep(0.05)
    assert state == ("completed", 0)

    reply = http.get(status_url)
    assert reply.status_code == 200, reply.text
    final = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in reply.json()["parameter"]}
    assert final["status"] == "completed"
    assert final["processed"] == final["total"] == 4
    assert final["searchable"] == "Patient.eye-colour"
    assert matches(base, "/Patient", **{"eye-colour": "green"}) == green
