"""Property: whatever a client sends to a write endpoint, the server never answers 5xx, every 4xx
carries an OperationOutcome, and a rejected request changes nothing stored; whatever it reads or
searches, it never answers 5xx. The request shapes are in fuzzing.py; ``make fuzz`` runs them longer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings

from fhirflow.local.launcher import LocalServer
from tests.e2e.fuzzing import FUZZ_TENANT, KNOWN, reads, requests, seed
from tests.e2e.support import FHIR_JSON, assert_outcome


@pytest.fixture(scope="module")
def prop_client(server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as http:
        for rtype, id_, resource in KNOWN:
            reply = http.put(f"/{rtype}/{id_}", json=resource)
            assert reply.status_code in (200, 201), reply.text
        assert http.delete("/Patient/prop-deleted").status_code == 204
        seed(http)
        yield http


def _snapshot(http: httpx.Client) -> tuple[Any, ...]:
    state: list[Any] = []
    for rtype, id_, _ in KNOWN:
        reply = http.get(f"/{rtype}/{id_}", headers={"Accept": FHIR_JSON})
        state.append((reply.status_code, reply.headers.get("etag"), reply.content))
    for prefix in ("", f"/tenant/{FUZZ_TENANT}"):
        newest = http.get(f"{prefix}/_history", params={"_count": 1}).json().get("entry", [])
        state.append([(e["fullUrl"], e["response"]["etag"]) for e in newest])
    return tuple(state)


@pytest.fixture(scope="module")
def stored(prop_client: httpx.Client) -> dict[str, Any]:
    """The last known stored state; only a successful write may change it."""
    return {"state": _snapshot(prop_client)}


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sent=requests())
def test_random_writes_never_5xx_and_rejections_change_nothing(
    prop_client: httpx.Client, stored: dict[str, Any], sent: dict[str, Any]
) -> None:
    reply = prop_client.request(
        sent["method"], sent["url"], content=sent["content"], headers=sent["headers"], params=sent["params"]
    )
    event(f"{sent['method']} -> {reply.status_code}")
    assert reply.status_code < 500, (sent, reply.status_code, reply.text[:500])
    if reply.status_code >= 400:
        assert_outcome(reply, reply.status_code)
        assert _snapshot(prop_client) == stored["state"], (sent, reply.status_code, reply.text[:300])
    else:
        stored["state"] = _snapshot(prop_client)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=reads())
def test_random_reads_and_searches_never_5xx(prop_client: httpx.Client, url: str) -> None:
    reply = prop_client.get(url, headers={"Accept": FHIR_JSON})
    event(f"GET -> {reply.status_code}")
    assert reply.status_code < 500, (url[:300], reply.status_code, reply.text[:500])
    if reply.status_code >= 400:
        assert_outcome(reply, reply.status_code)
