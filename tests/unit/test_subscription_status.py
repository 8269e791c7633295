"""Type-level ``$status`` (Backport IG 1.1.0, backport-subscription-status): "in the absence of any
specified ids, the server returns the status for all Subscriptions available to the caller", with an
optional ``status`` filter. In-process (no subscription worker runs here): a subscription nobody has
picked up yet is listed as ``requested``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.test_authz_kit import TestIssuer, smart_client


def subscription(reason: str, status: str = "requested") -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": status,
        "reason": reason,
        "criteria": "Observation?code=http://loinc.org|8867-4",
        "channel": {"type": "rest-hook", "endpoint": "https://hooks.example.org/x"},
    }


def listed(reply: Any) -> dict[str, str]:
    out = {}
    for entry in reply.body.get("entry", []):
        parameters = {p["name"]: p for p in entry["resource"]["parameter"]}
        out[parameters["subscription"]["valueReference"]["reference"].rsplit("/", 1)[-1]] = parameters["status"][
            "valueCode"
        ]
    return out


def test_type_level_status_lists_every_subscription_the_caller_may_read(tmp_path: Path) -> None:
    issuer = TestIssuer()
    client = smart_client(tmp_path, issuer)
    scopes = "patient/Subscription.cruds patient/Observation.rs"
    alice = issuer.token(scopes, patient="p1", sub="alice")
    bob = issuer.token(scopes, patient="p2", sub="bob")
    admin = issuer.token("system/*.cruds", sub="admin")
    made = {}
    for name, token, status in (("a1", alice, "requested"), ("a2", alice, "off"), ("b1", bob, "requested")):
        reply = client.request("POST", "/Subscription", token=token, body=subscription(name, status))
        assert reply.status == 201, reply.body
        made[name] = reply.body["id"]

    # Nothing has activated them (no worker here): listed all the same, with the status they have.
    assert listed(client.get("/Subscription/$status", alice)) == {made["a1"]: "requested", made["a2"]: "off"}
    assert listed(client.get("/Subscription/$status", bob)) == {made["b1"]: "requested"}
    assert set(listed(client.get("/Subscription/$status", admin))) == set(made.values())
    only_off = client.get("/Subscription/$status", alice, query={"status": "off"})
    assert listed(only_off) == {made["a2"]: "off"}
    either = client.get("/Subscription/$status", admin, query={"status": "error,off"})
    assert listed(either) == {made["a2"]: "off"}
    named = client.get("/Subscription/$status", alice, query={"id": f"{made['a1']},{made['b1']}"})
    assert listed(named) == {made["a1"]: "requested"}  # bob's: as if it did not exist
    bad = client.get("/Subscription/$status", alice, query={"status": "paused"})
    assert bad.status == 400
    assert bad.body["issue"][0]["expression"] == ["status"]
