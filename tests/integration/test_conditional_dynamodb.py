"""Conditional interactions on DynamoDB Local: the uniqueness item (``{tenant}#{Type}#cond#{sha256}``)
is written in the create's own TransactWriteItems, so 16 racing conditional creates make one
resource; stale items are taken over by compare-and-set; bundles carry the item in their direct
TransactWriteItems and through the multi-batch protocol (lock, apply, rollback).

The search index is not fed here (no stream consumer runs, ``index_on_write`` is off): the index
trails the table as it may in AWS, and only the uniqueness items can find what was created.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from fhirflow.adapters.aws import items
from fhirflow.conditional import parse_query_string
from fhirflow_crud.app import build_app as build_crud
from tests.integration.test_transactions import World, bundle, creates, make_world, post_entry, settings_for
from tests.support.lambda_http import Reply, call

SYSTEM = "urn:it:mrn"
CLIENTS = 16


@pytest.fixture
def world(shared_tables: Any, tmp_path: Any, tenant: str) -> World:
    return make_world(settings_for(shared_tables, tmp_path), tenant)


def patient(value: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}], **fields}


def by_identifier(value: str) -> str:
    return f"identifier={SYSTEM}|{value}"


def conditional_create(world: World, value: str, app: Any = None, **fields: Any) -> Reply:
    return call(
        app or build_crud(world.deps),
        "POST",
        f"/tenant/{world.tenant}/Patient",
        patient(value, **fields),
        headers={"if-none-exist": by_identifier(value)},
    )


def claim_item(world: World, value: str) -> dict[str, Any] | None:
    key = parse_query_string("Patient", by_identifier(value)).key(world.tenant)
    return world.store._get_item(items.claim_key(world.tenant, "Patient", key))


def patients(world: World) -> list[dict[str, Any]]:
    """Every live Patient of the tenant: the ids type history names, read one by one (the index
    is not fed here)."""
    entries = world.get("/Patient/_history?_count=500").json().get("entry", [])
    ids = dict.fromkeys(e["fullUrl"].rsplit("/", 1)[-1] for e in entries)
    current = [world.get(f"/Patient/{id_}") for id_ in ids]
    return [reply.json() for reply in current if reply.status == 200]


def with_identifier(world: World, value: str) -> list[str]:
    return sorted(p["id"] for p in patients(world) if any(i.get("value") == value for i in p.get("identifier", [])))


def test_sixteen_concurrent_conditional_creates_make_one_resource(world: World) -> None:
    value = uuid.uuid4().hex[:12]
    app = build_crud(world.deps)
    start = threading.Barrier(CLIENTS)
    replies: list[Reply] = []
    lock = threading.Lock()

    def racer(n: int) -> None:
        start.wait()
        reply = conditional_create(world, value, app, name=[{"family": f"r{n}"}])
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(replies) == CLIENTS
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] * (CLIENTS - 1) + [201], [r.body[:200] for r in replies if r.status >= 300]
    ids = {r.json()["id"] for r in replies}
    assert len(ids) == 1
    assert with_identifier(world, value) == sorted(ids)
    item = claim_item(world, value)
    assert item is not None
    assert items.owner_of(item) == next(iter(ids))


def test_a_stale_item_is_taken_over(world: World) -> None:
    value = uuid.uuid4().hex[:12]
    first = conditional_create(world, value).json()
    assert conditional_create(world, value).status == 200
    assert call(build_crud(world.deps), "DELETE", f"/tenant/{world.tenant}/Patient/{first['id']}").status == 204
    second = conditional_create(world, value)
    assert second.status == 201
    assert items.owner_of(claim_item(world, value) or {}) == second.json()["id"]
    # The owner changed so that it no longer matches: the key is taken over again.
    changed = {**second.json(), "identifier": [{"system": SYSTEM, "value": "moved-" + value}]}
    path = f"/tenant/{world.tenant}/Patient/{changed['id']}"
    assert call(build_crud(world.deps), "PUT", path, changed).status == 200
    third = conditional_create(world, value)
    assert third.status == 201
    assert items.owner_of(claim_item(world, value) or {}) == third.json()["id"]
    assert with_identifier(world, value) == [third.json()["id"]]


def test_conditional_update_as_create_takes_the_item(world: World) -> None:
    value = uuid.uuid4().hex[:12]
    crud = build_crud(world.deps)
    query = f"identifier={SYSTEM}|{value}"
    created = call(crud, "PUT", f"/tenant/{world.tenant}/Patient", patient(value), query=query)
    assert created.status == 201
    updated = call(crud, "PUT", f"/tenant/{world.tenant}/Patient", patient(value, gender="male"), query=query)
    assert updated.status == 200
    assert updated.json()["id"] == created.json()["id"]
    assert conditional_create(world, value).json()["id"] == created.json()["id"]


# -- bundles ---------------------------------------------------------------------------------------------


def conditional_entry(value: str, full_url: str) -> dict[str, Any]:
    entry = post_entry(patient(value), full_url)
    entry["request"]["ifNoneExist"] = by_identifier(value)
    return entry


def observation(subject: str) -> dict[str, Any]:
    return post_entry(
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": subject}}
    )


@pytest.mark.parametrize("side", [0, 60], ids=["direct", "multi-batch"])
def test_transaction_if_none_exist_claims_the_item_atomically(world: World, side: int) -> None:
    value = uuid.uuid4().hex[:12]
    full_url = f"urn:uuid:{uuid.uuid4()}"
    document = bundle(*creates("side", side), conditional_entry(value, full_url), observation(full_url))
    first = world.post(document)
    assert first.status == 200, first.body[:400]
    created = first.json()["entry"][side]
    assert created["response"]["status"].startswith("201")
    pid = created["resource"]["id"]
    assert first.json()["entry"][side + 1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    item = claim_item(world, value)
    assert item is not None
    assert items.owner_of(item) == pid
    assert items.claim_lock_of(item) is None  # applied: no lock left behind
    assert len(world.executor.runs) == (1 if side else 0)

    again = world.post(bundle(conditional_entry(value, full_url), observation(full_url)))
    assert again.status == 200, again.body[:400]
    found, linked = again.json()["entry"]
    assert found["response"]["status"] == "200 OK"
    assert found["resource"]["id"] == pid
    assert linked["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert with_identifier(world, value) == [pid]


def test_a_claim_lost_at_the_lock_step_rolls_back_and_the_transaction_finds_the_winner(world: World) -> None:
    """Another conditional create commits after this transaction looked (and staged) and before it
    locks: the claim fails at the lock step, everything is rolled back, and the transaction runs
    again, now resolving the entry to the winner."""
    value = uuid.uuid4().hex[:12]
    winners: list[Reply] = []
    once = threading.Lock()

    def hook(name: str, output: Any) -> None:
        with once:
            if name == "StageBatch" and not winners:
                winners.append(conditional_create(world, value))

    world.hooks.append(hook)
    full_url = f"urn:uuid:{uuid.uuid4()}"
    reply = world.post(bundle(*creates("lost", 60), conditional_entry(value, full_url), observation(full_url)))
    assert winners[0].status == 201
    winner = winners[0].json()["id"]
    assert reply.status == 200, reply.body[:400]
    entries = reply.json()["entry"]
    assert entries[60]["response"]["status"] == "200 OK"
    assert entries[60]["resource"]["id"] == winner
    assert entries[61]["resource"]["subject"]["reference"] == f"Patient/{winner}"
    assert [result.output["status"] for _, result in world.executor.runs] == ["aborted", "committed"]
    assert with_identifier(world, value) == [winner]
    families = [p["name"][0]["family"] for p in patients(world) if p.get("name")]
    assert len([f for f in families if f.startswith("lost-")]) == 60  # the first run left nothing
    item = claim_item(world, value)
    assert item is not None
    assert items.owner_of(item) == winner
    assert items.claim_lock_of(item) is None


def test_conditional_references_resolve_through_the_item_and_fail_leaving_nothing(world: World) -> None:
    value, nobody = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    pid = conditional_create(world, value).json()["id"]
    linked = world.post(bundle(observation(f"Patient?{by_identifier(value)}")))
    assert linked.status == 200, linked.body[:400]
    assert linked.json()["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    before = world.get("/_history").json()["entry"]
    failed = world.post(bundle(*creates("none", 60), observation(f"Patient?{by_identifier(nobody)}")))
    assert failed.status == 412, failed.body[:400]
    assert "Bundle.entry[60]" in failed.body.decode()
    assert world.get("/_history").json()["entry"] == before
    assert world.executor.runs == []
