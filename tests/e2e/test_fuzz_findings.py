"""Requests that fuzzing found answering 5xx (issue 14, defect 7). Each is a client error or a
correct answer now, never a 5xx, and a refused write stores nothing."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import httpx
import pytest

from tests.e2e.support import FHIR_JSON, assert_outcome, create, patient, read, unique

LARGE = 70 * 1024
"""Over the store's 64 KiB threshold, so the body goes to the blob store under a key made of
tenant, type and id (fhirflow.adapters.offload)."""


def _large_patient(id_: str | None = None) -> bytes:
    body = patient(gender="male", name=[{"family": unique("big"), "given": ["x" * LARGE]}])
    if id_ is not None:
        body["id"] = id_
    return json.dumps(body).encode()


def test_a_chain_and_has_driven_search_counts_in_the_context_that_planned_it(client: httpx.Client) -> None:
    """The driver's SQL names CTEs (``q11``) of the context that planned the page; the count
    after an empty page reused the plan with a fresh context: 500 "no such table"."""
    family = unique("Fam")
    near, far = create(client, {"resourceType": "Organization"}), create(client, {"resourceType": "Organization"})
    mine, theirs = create(client, patient(gender="male")), create(client, patient(name=[{"family": family}]))

    def encounter(subject: str, provider: str) -> None:
        create(
            client,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": f"Patient/{subject}"},
                "serviceProvider": {"reference": f"Organization/{provider}"},
            },
        )

    encounter(mine["id"], far["id"])
    encounter(mine["id"], far["id"])
    encounter(theirs["id"], near["id"])
    # The chain admits one Encounter (theirs, at `near`), the patient two (mine): the chain drives,
    # and no Encounter meets both.
    query = {
        "patient": mine["id"],
        "service-provider._has:Encounter:service-provider:patient.family": family,
        "_total": "accurate",
    }

    reply = client.get("/Encounter", params=query)

    assert reply.status_code == 200, reply.text
    assert reply.json()["total"] == 0
    assert reply.json().get("entry", []) == []


@pytest.mark.parametrize(
    ("param", "values"),
    [
        ("name", [f"v{i}" for i in range(999)]),
        ("gender", ["male", *(f"g{i}" for i in range(998))]),
        ("birthdate", [f"19{i % 100:02d}-01-{1 + i % 28:02d}" for i in range(999)]),
        ("identifier", [f"http://x/{i}|{i}" for i in range(999)]),
        ("_tag", [f"t{i}" for i in range(999)]),
        ("general-practitioner", [f"Practitioner/p{i}" for i in range(999)]),
    ],
)
def test_999_or_values_are_searched(client: httpx.Client, param: str, values: list[str]) -> None:
    """SQLite refuses an expression more than 1,000 levels deep; ``a OR b OR ...`` over 999 values was one."""
    family = unique("Or")
    wanted = create(client, patient(gender="male", name=[{"family": family}], birthDate="1950-01-01"))

    reply = client.get("/Patient", params={param: ",".join(values), "family": family})

    assert reply.status_code == 200, reply.text[:300]
    found = {e["resource"]["id"] for e in reply.json().get("entry", [])}
    assert found == ({wanted["id"]} if param == "gender" else set())


def test_999_or_values_find_what_one_of_them_names(client: httpx.Client) -> None:
    family = unique("Orf")
    wanted = create(client, patient(name=[{"family": family}]))

    reply = client.get("/Patient", params={"family": ",".join([*(f"zz{i}" for i in range(998)), family])})

    assert reply.status_code == 200, reply.text[:300]
    assert [e["resource"]["id"] for e in reply.json()["entry"]] == [wanted["id"]]


@pytest.mark.parametrize("vid", ["9223372036854775808", "9223372036854775807", "99999999999999999999999"])
def test_a_version_beyond_any_stored_one_is_404(client: httpx.Client, vid: str) -> None:
    created = create(client, patient(gender="male"))

    assert_outcome(client.get(f"/Patient/{created['id']}/_history/{vid}"), 404)


def test_an_async_status_with_an_overlong_job_is_4xx(client: httpx.Client) -> None:
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": "Patient"}}]}
    accepted = client.post("/", json=batch, headers={"Prefer": "respond-async"})
    assert accepted.status_code == 202, accepted.text  # the async directory exists: lookups reach the file system

    for job in ("a" * 300, "a" * 65, "0" * 255 + "b"):
        assert_outcome(client.get(f"/_async/{job}"), (400, 404))


@pytest.mark.parametrize(
    ("text", "has_words"), [("a\u19b0b", True), ("x\u1cf2y z", True), ("\u19c8\u19c9", False), ("\u19b5", False)]
)
def test_content_and_text_with_letters_sqlite_splits_are_searched(
    client: httpx.Client, text: str, has_words: bool
) -> None:
    """U+19B0.. are letters to Python and separators to SQLite: a quoted "word" holding one became
    a phrase, which the index (detail=column) cannot run. A value of separators only has no word
    to look for, and matches nothing (as an empty value does)."""
    stored = create(
        client,
        {
            "resourceType": "Patient",
            "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{text}</div>'},
            "name": [{"family": f"{text} {unique('uc')}"}],
        },
    )

    for param in ("_content", "_text"):
        reply = client.get("/Patient", params={param: text, "_id": stored["id"]})
        assert reply.status_code == 200, reply.text[:300]
        found = [e["resource"]["id"] for e in reply.json().get("entry", [])]
        assert found == ([stored["id"]] if has_words else []), param


@pytest.mark.parametrize("id_", [".", ".."])
@pytest.mark.parametrize("large", [False, True])
def test_dot_ids_are_refused(client: httpx.Client, id_: str, large: bool) -> None:
    """``.`` and ``..`` match the id regex, but no URL can carry them (clients remove dot-segments),
    and as a blob key's part they name a directory."""
    encoded = id_.replace(".", "%2E")
    body = _large_patient(id_) if large else json.dumps(patient(id=id_, gender="male")).encode()

    assert_outcome(client.put(f"/Patient/{encoded}", content=body), 400)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": json.loads(body), "request": {"method": "PUT", "url": f"Patient/{id_}"}}],
    }
    assert_outcome(client.post("/", json=bundle), 400)
    assert_outcome(read(client, "Patient", encoded), (400, 404))


@pytest.mark.parametrize("tenant", ["%2E", "%2E%2E", "%00", "a%00b", "a%0Ab", "-x", "x" * 65])
@pytest.mark.parametrize("large", [False, True])
def test_invalid_path_tenants_are_refused_before_any_write(client: httpx.Client, tenant: str, large: bool) -> None:
    family = unique("Tn")
    body = _large_patient() if large else json.dumps(patient(name=[{"family": family}])).encode()
    before = client.get("/_history", params={"_count": 1}).json().get("entry", [])

    assert_outcome(client.post(f"/tenant/{tenant}/Patient", content=body), 400)
    assert_outcome(client.get(f"/tenant/{tenant}/Patient", params={"family": family}), 400)

    after = client.get("/_history", params={"_count": 1}).json().get("entry", [])
    assert [e["fullUrl"] for e in after] == [e["fullUrl"] for e in before]


def test_a_valid_tenant_still_works(client: httpx.Client) -> None:
    tenant = unique("ten.ant_1")
    created = client.post(f"/tenant/{tenant}/Patient", json=patient(gender="male"))

    assert created.status_code == 201, created.text
    assert created.headers["location"].split("/tenant/", 1)[1].startswith(f"{tenant}/Patient/")
    reply = client.get(f"/tenant/{tenant}/Patient/{created.json()['id']}", headers={"Accept": FHIR_JSON})
    assert reply.status_code == 200


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"name": ",".join(f"v{i}" for i in range(1001))}, "name"),
        ({"family": ",".join(f"v{i}" for i in range(600)), "given": ",".join(f"v{i}" for i in range(600))}, "given"),
        ({"organization.name": ",".join(f"v{i}" for i in range(10_000))}, "organization.name"),
    ],
)
def test_a_search_with_more_than_1000_values_is_too_costly(
    client: httpx.Client, query: dict[str, str], named: str
) -> None:
    """The backend evaluates every value (10,000 ORed names took SQLite 40 s): the search is refused
    before any work, naming the parameter that passed the limit."""
    started = time.monotonic()

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    reply = client.post("/Patient/_search", content=urlencode(query, safe=","), headers=form)

    assert_outcome(reply, 400, code="too-costly", expression=named)
    assert time.monotonic() - started < 5


def test_bundle_entries_get_the_same_path_checks(client: httpx.Client) -> None:
    created = create(client, patient(gender="male"))
    urls = [
        f"Patient/{created['id']}/_history/9223372036854775808",
        "Patient/" + "a" * 300,
        f"Patient/{created['id']}/_history/" + "9" * 300,
    ]
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": u}} for u in urls],
    }

    reply = client.post("/", json=batch)

    assert reply.status_code == 200, reply.text[:300]
    statuses = [e["response"]["status"].split()[0] for e in reply.json()["entry"]]
    assert statuses == ["404", "400", "400"], statuses
