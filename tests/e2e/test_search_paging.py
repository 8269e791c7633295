"""Paging a large result over HTTP: walking ``next`` over 5,000 matches returns each exactly once
while other clients write (new resources, matching or not, and updates of the matches), and an
altered cursor is a 400."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import FHIR_JSON, assert_outcome, next_link

TAG = "urn:fhirflow:paging"
MATCHES = 5000


def observation(marker: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "meta": {"tag": [{"system": TAG, "code": marker}]},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "valueQuantity": {"value": n, "unit": "cm"},
    }


def load(client: httpx.Client, marker: str) -> set[str]:
    ids: set[str] = set()
    for start in range(0, MATCHES, 1000):
        entries = [
            {"resource": observation(marker, n), "request": {"method": "POST", "url": "Observation"}}
            for n in range(start, start + 1000)
        ]
        reply = client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
        assert reply.status_code == 200, reply.text[:500]
        ids.update(e["response"]["location"].split("Observation/")[1].split("/")[0] for e in reply.json()["entry"])
    assert len(ids) == MATCHES
    return ids


class Writer(threading.Thread):
    """Writes while the pages are read: unrelated resources, new matches and updates of matches."""

    def __init__(self, server: LocalServer, marker: str, existing: list[str]) -> None:
        super().__init__(daemon=True)
        self.server, self.marker, self.existing = server, marker, existing
        self.stop = threading.Event()
        self.created: list[str] = []
        self.writes = 0
        self.failures: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                if n % 3 == 0:  # a new match
                    reply = client.post("/Observation", json=observation(self.marker, -n))
                    if reply.status_code == 201:
                        self.created.append(reply.json()["id"])
                elif n % 3 == 1:  # an update of a match (its sort position, by id, does not move)
                    id_ = self.existing[n % len(self.existing)]
                    reply = client.put(f"/Observation/{id_}", json={**observation(self.marker, n), "id": id_})
                else:  # something else entirely
                    reply = client.post("/Patient", json={"resourceType": "Patient", "gender": "unknown"})
                self.writes += 1
                if reply.status_code >= 300:
                    self.failures.append(f"{reply.status_code} {reply.text[:200]}")


@pytest.mark.slow
def test_walking_next_over_5000_matches_while_others_write(server: LocalServer, client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    originals = load(client, marker)
    writer = Writer(server, marker, sorted(originals))
    writer.start()
    try:
        seen: list[str] = []
        reply = client.get("/Observation", params={"_tag": f"{TAG}|{marker}", "_count": 100})
        pages = 0
        while True:
            assert reply.status_code == 200, reply.text[:500]
            bundle = reply.json()
            seen += [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
            pages += 1
            following = next_link(bundle)
            if following is None:
                break
            reply = client.get(following)
    finally:
        writer.stop.set()
        writer.join(timeout=60)
    assert not writer.failures, writer.failures[:3]
    assert writer.writes > 10, "the writer did not get to write while the pages were read"
    assert len(seen) == len(set(seen)), "a match came back twice"
    assert originals <= set(seen), f"{len(originals - set(seen))} matches were never returned"
    assert set(seen) <= originals | set(writer.created)
    assert pages >= MATCHES // 100


def test_an_altered_cursor_is_a_400(client: httpx.Client) -> None:
    for _ in range(3):
        client.post("/Patient", json={"resourceType": "Patient", "gender": "female"})
    bundle = client.get("/Patient", params={"gender": "female", "_count": 1}).json()
    following = next_link(bundle)
    assert following is not None
    token = following.split("_cursor=")[1]
    flipped = token[:5] + ("x" if token[5] != "x" else "y") + token[6:]
    assert_outcome(client.get(following.replace(token, flipped)), 400, expression="_cursor")
    moved = client.get("/Patient", params={"gender": "male", "_count": 1, "_cursor": token})
    assert_outcome(moved, 400, expression="_cursor")
