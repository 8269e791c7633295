"""Version-aware updates under contention (http.html#concurrency): many clients updating one
resource with If-Match; exactly one wins each version and no update is lost."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import FHIR_JSON, create, etag_version, history, patient

CLIENTS = 16
UPDATES_EACH = 5
DEADLINE_SECONDS = 90


def _marker(client_no: int, n: int) -> str:
    return f"c{client_no:02d}-u{n}"


def _writer(
    base_url: str, id_: str, client_no: int, start: threading.Barrier, landed: list[tuple[str, int]], errors: list[str]
) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    with httpx.Client(base_url=base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as http:
        start.wait()
        n = 0
        current = http.get(f"/Patient/{id_}")
        while n < UPDATES_EACH:
            if time.monotonic() > deadline:
                errors.append(f"client {client_no} landed only {n} updates before the deadline")
                return
            version = etag_version(current)
            body = patient(
                id=id_, gender="other", identifier=[{"system": "urn:e2e:marker", "value": _marker(client_no, n)}]
            )
            reply = http.put(f"/Patient/{id_}", json=body, headers={"If-Match": f'W/"{version}"'})
            if reply.status_code == 200:
                landed.append((_marker(client_no, n), etag_version(reply)))
                n += 1
            elif reply.status_code != 412:
                errors.append(f"client {client_no}: unexpected {reply.status_code}: {reply.text[:200]}")
                return
            current = http.get(f"/Patient/{id_}")
            if current.status_code != 200:
                errors.append(f"client {client_no}: re-read answered {current.status_code}")
                return


@pytest.mark.slow
def test_concurrent_if_match_updates_lose_nothing(client: httpx.Client, server: LocalServer) -> None:
    id_ = create(client, patient(gender="unknown"))["id"]
    start = threading.Barrier(CLIENTS)
    landed: list[tuple[str, int]] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_writer, args=(server.base_url, id_, n, start, landed, errors)) for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE_SECONDS + 30)
    assert not any(t.is_alive() for t in threads), "a writer did not finish"
    assert not errors, errors

    total = CLIENTS * UPDATES_EACH
    # Exactly one winner per version: every successful answer names a different version.
    versions_won = sorted(v for _, v in landed)
    assert versions_won == list(range(2, total + 2))
    entries = history(client, f"/Patient/{id_}/_history", _count=37)
    # Versions are contiguous 1..N, newest first, each exactly once.
    assert [etag_version_of(e) for e in entries] == list(range(total + 1, 0, -1))
    markers = Counter(
        ident["value"]
        for e in entries
        for ident in e["resource"].get("identifier", [])
        if ident["system"] == "urn:e2e:marker"
    )
    expected = {_marker(c, n) for c in range(CLIENTS) for n in range(UPDATES_EACH)}
    assert set(markers) == expected
    assert all(count == 1 for count in markers.values())
    # The version each client was told it created holds that client's payload.
    by_version = {etag_version_of(e): e for e in entries}
    for marker, version in landed:
        assert by_version[version]["resource"]["identifier"][0]["value"] == marker


def etag_version_of(entry: dict[str, Any]) -> int:
    return int(entry["response"]["etag"][3:-1])


TRANSACTIONS = 12


def test_concurrent_transactions_on_the_same_resources_retry_like_single_puts(server: LocalServer) -> None:
    """Transactions that update the same resources without ``ifMatch`` (as Synthea bundles share
    their Organization and Practitioner) all commit, as concurrent single PUTs do: a transaction
    that lost the race runs again from the current versions instead of answering 409."""
    shared = [f"txshared-{uuid.uuid4().hex[:8]}-{n}" for n in range(3)]

    def bundle(no: int) -> dict[str, Any]:
        entries = [
            {
                "resource": {"resourceType": "Organization", "id": id_, "name": f"writer {no}"},
                "request": {"method": "PUT", "url": f"Organization/{id_}"},
            }
            for id_ in shared
        ]
        entries += [
            {"resource": patient(gender="other"), "request": {"method": "POST", "url": "Patient"}} for _ in range(20)
        ]
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    start = threading.Barrier(TRANSACTIONS)
    answers: list[tuple[int, str]] = []

    def send(no: int) -> None:
        with httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as http:
            body = bundle(no)
            start.wait()
            reply = http.post("/", json=body)
            answers.append((reply.status_code, reply.text[:300]))

    threads = [threading.Thread(target=send, args=(no,)) for no in range(TRANSACTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [a for a in answers if a[0] != 200] == []
    assert len(answers) == TRANSACTIONS
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for id_ in shared:  # one version per transaction: none was lost or merged
            assert http.get(f"/Organization/{id_}").headers["etag"] == f'W/"{TRANSACTIONS}"'
