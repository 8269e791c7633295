"""Subscriptions end to end: the real server (``fhirflow serve``), real webhook receivers on
127.0.0.1, signatures verified with the ``standardwebhooks`` package (issue 12).

R4 rest-hook (subscription.html#channels): no payload → POST with no body plus channel.header;
a payload → PUT {endpoint}/{type}/{id} with the resource. Topic-based (Backport IG 1.1.0): history
Bundles whose entry[0] is the SubscriptionStatus Parameters; handshake, heartbeat, $status, $events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from fhirflow.validation import validate_resource
from tests.e2e.support import FHIR_JSON
from tests.e2e.webhooks import Received, Receiver, unique, verify

SECRET_EXT = "https://fhirflow.dev/fhir/StructureDefinition/subscription-signing-secret"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC = "https://fhirflow.dev/fhir/SubscriptionTopic/"
DEV_ISSUER = {"FHIRFLOW_AUTH_DEV_ISSUER": "true"}
DEV_ENV = {
    "FHIRFLOW_SUBSCRIPTIONS_ALLOW_HTTP": "true",
    "FHIRFLOW_SUBSCRIPTIONS_ALLOW_PRIVATE": "true",
    "FHIRFLOW_SUBSCRIPTIONS_HEARTBEAT_TICK_SECONDS": "0.2",
}


@pytest.fixture(scope="module")
def subs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """Two processes, as ``fhirflow serve`` runs by default: writes (and the write hook) in the
    workers, the matcher and the deliverer in the supervisor."""
    with LocalServer(data_dir=tmp_path_factory.mktemp("subs"), env=DEV_ENV, workers=2) as running:
        yield running


@pytest.fixture
def http(subs_server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=subs_server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def r4_subscription(endpoint: str, criteria: str, **channel: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "e2e",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint, **channel},
    }


def topic_subscription(
    endpoint: str, rtype: str, filters: list[str], content: str, **extensions: int
) -> dict[str, Any]:
    channel_ext = [
        {"url": f"{BACKPORT}/backport-{name.replace('_', '-')}", "valueUnsignedInt": value}
        for name, value in extensions.items()
    ]
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
        "status": "requested",
        "reason": "e2e",
        "criteria": TOPIC + rtype,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content", "valueCode": content}]},
        },
    }
    if filters:
        body["_criteria"] = {
            "extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f} for f in filters]
        }
    if channel_ext:
        body["channel"]["extension"] = channel_ext
    return body


def subscribe(http: httpx.Client, body: dict[str, Any]) -> tuple[str, str]:
    """Create; returns (id, signing secret shown once in the create response)."""
    reply = http.post("/Subscription", json=body)
    assert reply.status_code == 201, reply.text
    created = reply.json()
    secret = next(e["valueString"] for e in created["channel"]["extension"] if e["url"] == SECRET_EXT)
    assert secret.startswith("whsec_")
    return created["id"], secret


def wait_status(http: httpx.Client, id_: str, wanted: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = http.get(f"/Subscription/{id_}").json()
        if current["status"] == wanted:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"Subscription/{id_} stayed {current['status']} (wanted {wanted}): {current}")
        time.sleep(0.05)


def observation(code: str, subject: str = "Patient/p1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        **extra,
    }


def unique_code() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


# -- validation on write ---------------------------------------------------------------------------


BAD = [
    (
        "channel type",
        {"channel": {"type": "email", "endpoint": "mailto:a@b.c"}},
        "Subscription.channel.type",
        "not-supported",
    ),
    ("status active", {"status": "active"}, "Subscription.status", "invalid"),
    ("end in the past", {"end": "2001-01-01T00:00:00Z"}, "Subscription.end", "invalid"),
    (
        "xml payload",
        {"channel": {"type": "rest-hook", "endpoint": "https://example.org/hook", "payload": "application/fhir+xml"}},
        "Subscription.channel.payload",
        "not-supported",
    ),
    (
        "ftp endpoint",
        {"channel": {"type": "rest-hook", "endpoint": "ftp://example.org/x"}},
        "Subscription.channel.endpoint",
        "invalid",
    ),
    (
        "http to a public host",
        {"channel": {"type": "rest-hook", "endpoint": "http://example.org/x"}},
        "Subscription.channel.endpoint",
        "invalid",
    ),
    ("_include", {"criteria": "Observation?_include=Observation:subject"}, "Subscription.criteria", None),
    ("unknown parameter", {"criteria": "Observation?nonsense=1"}, "Subscription.criteria", None),
    ("leading slash", {"criteria": "/Observation?code=1"}, "Subscription.criteria", None),
    (
        "unknown topic",
        {"criteria": "http://example.org/SubscriptionTopic/admission"},
        "Subscription.criteria",
        "not-supported",
    ),
    (
        "header without a value",
        {"channel": {"type": "rest-hook", "endpoint": "https://example.org/hook", "header": ["NoColon"]}},
        "Subscription.channel.header[0]",
        "invalid",
    ),
    ("end not a date", {"end": "tomorrow"}, "Subscription.end", None),
    ("no endpoint", {"channel": {"type": "rest-hook"}}, "Subscription.channel.endpoint", None),
    ("chained criteria", {"criteria": "Observation?subject.name=peter"}, "Subscription.criteria", None),
    ("unknown type", {"criteria": "Nonsense?x=1"}, "Subscription.criteria", None),
    (
        "reserved header",
        {"channel": {"type": "rest-hook", "endpoint": "https://example.org/hook", "header": ["webhook-id: mine"]}},
        "Subscription.channel.header[0]",
        "invalid",
    ),
    (
        "bad signing secret",
        {
            "channel": {
                "type": "rest-hook",
                "endpoint": "https://example.org/hook",
                "extension": [{"url": SECRET_EXT, "valueString": "guessable"}],
            }
        },
        "Subscription.channel.extension[0]",
        "invalid",
    ),
]


@pytest.mark.parametrize(("case", "change", "expression", "code"), BAD, ids=[c[0] for c in BAD])
def test_bad_subscriptions_are_refused_naming_the_element(
    http: httpx.Client, case: str, change: dict[str, Any], expression: str, code: str | None
) -> None:
    body = {**r4_subscription("https://example.org/hook", "Observation?code=1"), **change}
    reply = http.post("/Subscription", json=body)
    assert reply.status_code == 400, (case, reply.text)
    issue = reply.json()["issue"][0]
    assert issue["expression"] == [expression], (case, issue)
    if code:
        assert issue["code"] == code
    # The same through a transaction bundle entry: refused, nothing stored.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": body, "request": {"method": "POST", "url": "Subscription"}}],
    }
    assert http.post("/", json=bundle).status_code == 400


def test_a_bad_topic_filter_is_refused_naming_the_extension(http: httpx.Client) -> None:
    body = topic_subscription("https://example.org/hook", "Observation", ["code=1", "nonsense=2"], "id-only")
    reply = http.post("/Subscription", json=body)
    assert reply.status_code == 400
    assert reply.json()["issue"][0]["expression"] == ["Subscription.criteria.extension[1]"]


def test_a_client_may_not_set_status_by_patch_either(http: httpx.Client, receiver: Receiver) -> None:
    json_patch = {"Content-Type": "application/json-patch+json"}
    id_, _ = subscribe(http, r4_subscription(receiver.url, f"Observation?code={unique_code()}"))
    wait_status(http, id_, "active")
    patch = [{"op": "replace", "path": "/status", "value": "error"}]
    reply = http.patch(f"/Subscription/{id_}", json=patch, headers=json_patch)
    assert reply.status_code == 400
    assert reply.json()["issue"][0]["expression"] == ["Subscription.status"]
    # Patching another element leaves the server's status as it is; an error text is the server's too.
    patch = [{"op": "replace", "path": "/reason", "value": "renamed"}, {"op": "add", "path": "/error", "value": "x"}]
    reply = http.patch(f"/Subscription/{id_}", json=patch, headers=json_patch)
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "active"
    assert "error" not in reply.json()
    assert reply.json()["reason"] == "renamed"


# -- R4 rest-hook ------------------------------------------------------------------------------


def test_r4_rest_hook_without_payload_posts_no_body_with_the_channel_headers(
    http: httpx.Client, receiver: Receiver
) -> None:
    code = unique_code()
    body = r4_subscription(receiver.url + "/hook", f"Observation?code={code}", header=["Authorization: Bearer s3cret"])
    id_, secret = subscribe(http, body)
    # Secrets are redacted on read and in history; status moves to active by the server.
    stored = wait_status(http, id_, "active")
    assert stored["channel"]["header"] == ["Authorization: *****"]
    assert [e["valueString"] for e in stored["channel"]["extension"] if e["url"] == SECRET_EXT] == ["*****"]
    assert "s3cret" not in http.get(f"/Subscription/{id_}/_history").text
    assert secret not in http.get(f"/Subscription/{id_}/_history").text

    http.post("/Observation", json=observation("other-code"))
    created = http.post("/Observation", json=observation(code)).json()
    http.put(f"/Observation/{created['id']}", json={**created, "status": "amended"})
    http.delete(f"/Observation/{created['id']}")  # R4 notifies no deletes

    got = receiver.wait_for(lambda seen: len(seen) >= 2)
    time.sleep(0.5)
    got = receiver.snapshot()
    assert len(got) == 2, [r.path for r in got]
    for request in got:
        assert request.method == "POST"
        assert request.path == "/hook"
        assert request.body == b""
        assert request.headers["authorization"] == "Bearer s3cret"
        assert "content-type" not in request.headers
        verify(secret, request)
    assert len({r.headers["webhook-id"] for r in got}) == 2


def test_r4_rest_hook_with_payload_puts_the_resource_at_endpoint_type_id(
    http: httpx.Client, receiver: Receiver
) -> None:
    code = unique_code()
    body = r4_subscription(receiver.url + "/fhir", f"Observation?code={code}", payload="application/fhir+json")
    id_, secret = subscribe(http, body)
    wait_status(http, id_, "active")
    created = http.post("/Observation", json=observation(code)).json()
    got = receiver.wait_for(lambda seen: len(seen) >= 1)
    request = got[0]
    assert request.method == "PUT"
    assert request.path == f"/fhir/Observation/{created['id']}"
    assert request.headers["content-type"] == "application/fhir+json"
    assert verify(secret, request) == created
    assert not validate_resource(request.json())


# -- topic-based -------------------------------------------------------------------------------


def _bundle_checks(request: Received, secret: str) -> tuple[dict[str, Any], dict[str, Any]]:
    bundle = verify(secret, request)
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/fhir+json"
    assert not validate_resource(bundle), validate_resource(bundle)
    assert bundle["type"] == "history"
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "Parameters"
    return bundle, {p["name"]: p for p in status["parameter"] if p["name"] != "notification-event"}


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_topic_subscription_handshake_then_events_at_each_payload_level(
    http: httpx.Client, receiver: Receiver, content: str
) -> None:
    code = unique_code()
    id_, secret = subscribe(http, topic_subscription(receiver.url, "Observation", [f"code={code}"], content))
    handshake = receiver.wait_for(lambda seen: len(seen) >= 1)[0]
    _, params = _bundle_checks(handshake, secret)
    assert params["type"]["valueCode"] == "handshake"
    assert params["topic"]["valueCanonical"] == TOPIC + "Observation"
    wait_status(http, id_, "active")

    first = http.post("/Observation", json=observation(code)).json()
    http.post("/Observation", json=observation("not-this-one"))
    http.delete(f"/Observation/{first['id']}")
    got = receiver.wait_for(lambda seen: len(seen) >= 3)
    events = []
    for request in got[1:]:
        bundle, params = _bundle_checks(request, secret)
        assert params["type"]["valueCode"] == "event-notification"
        notification = [p for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"]
        parts = {p["name"]: p for p in notification[0]["part"]}
        events.append(int(parts["event-number"]["valueString"]))
        assert params["events-since-subscription-start"]["valueString"] == parts["event-number"]["valueString"]
        focus_url = f"{http.base_url}/Observation/{first['id']}".replace("http://", "http://")
        if content == "empty":
            assert len(bundle["entry"]) == 1
            assert "focus" not in parts
        else:
            assert parts["focus"]["valueReference"]["reference"].endswith(f"/Observation/{first['id']}")
            assert bundle["entry"][1]["fullUrl"].endswith(f"/Observation/{first['id']}")
            has_resource = "resource" in bundle["entry"][1]
            deleted = bundle["entry"][1]["request"]["method"] == "DELETE"
            assert has_resource == (content == "full-resource" and not deleted), focus_url
    assert events == [1, 2]


def test_heartbeats_status_and_events(http: httpx.Client, receiver: Receiver) -> None:
    code = unique_code()
    body = topic_subscription(receiver.url, "Observation", [f"Observation?code={code}"], "id-only", heartbeat_period=1)
    id_, secret = subscribe(http, body)
    wait_status(http, id_, "active")
    for _ in range(3):
        http.post("/Observation", json=observation(code))
    receiver.wait_for(lambda seen: sum(1 for r in seen if b'"heartbeat"' in r.body) >= 1, timeout=10)
    for request in receiver.snapshot():
        _bundle_checks(request, secret)

    status = http.get(f"/Subscription/{id_}/$status")
    assert status.status_code == 200
    params = {p["name"]: p for p in status.json()["entry"][0]["resource"]["parameter"]}
    assert params["type"]["valueCode"] == "query-status"
    assert params["status"]["valueCode"] == "active"
    assert params["events-since-subscription-start"]["valueString"] == "3"
    assert "delivery-attempt" in params
    assert not validate_resource(status.json())
    typed = http.get("/Subscription/$status", params={"id": id_}).json()
    assert typed["total"] == 1

    replay = http.get(f"/Subscription/{id_}/$events", params={"eventsSinceNumber": 2, "content": "full-resource"})
    assert replay.status_code == 200
    bundle = replay.json()
    assert not validate_resource(bundle)
    numbers = [
        int(part["valueString"])
        for p in bundle["entry"][0]["resource"]["parameter"]
        if p["name"] == "notification-event"
        for part in p["part"]
        if part["name"] == "event-number"
    ]
    assert numbers == [2, 3]
    assert all("resource" in e for e in bundle["entry"][1:])
    assert http.get(f"/Subscription/{id_}/$events", params={"eventsSinceNumber": "x"}).status_code == 400


def test_capability_statement_advertises_topics_and_operations(http: httpx.Client) -> None:
    statement = http.get("/metadata").json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    canonical = f"{BACKPORT}/capabilitystatement-subscriptiontopic-canonical"
    topics = [e["valueCanonical"] for e in resources["Observation"]["extension"] if e["url"] == canonical]
    assert topics == [TOPIC + "Observation"]
    names = {o["name"] for o in resources["Subscription"]["operation"]}
    assert {"status", "events"} <= names


# -- ordering ----------------------------------------------------------------------------------


def test_a_thousand_updates_arrive_in_version_order_with_contiguous_event_numbers(
    http: httpx.Client, receiver: Receiver
) -> None:
    patient_id = f"order-{uuid.uuid4().hex[:8]}"
    body = topic_subscription(receiver.url, "Patient", [f"_id={patient_id}"], "id-only")
    id_, secret = subscribe(http, body)
    wait_status(http, id_, "active")
    for n in range(1000):
        reply = http.put(
            f"/Patient/{patient_id}",
            json={"resourceType": "Patient", "id": patient_id, "gender": "male" if n % 2 else "female"},
        )
        assert reply.status_code in (200, 201)
    got = receiver.wait_for(lambda seen: len(unique(seen)) >= 1001, timeout=120)
    versions, numbers = [], []
    for request in unique(got)[1:]:
        bundle = verify(secret, request)
        versions.append(int(bundle["entry"][1]["response"]["etag"].split('"')[1]))
        event = next(p for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event")
        numbers.append(int(next(x["valueString"] for x in event["part"] if x["name"] == "event-number")))
    assert versions == list(range(1, 1001))
    assert numbers == list(range(1, 1001))


# -- durability --------------------------------------------------------------------------------


def test_kill_9_during_deliveries_and_restart_delivers_every_committed_change(tmp_path: Path) -> None:
    patient_id = "k9"
    # A short request timeout makes the lease of the notification in flight at the kill short.
    env = {**DEV_ENV, "FHIRFLOW_SUBSCRIPTIONS_REQUEST_TIMEOUT_SECONDS": "2"}
    with Receiver(delay=0.03) as receiver:  # slower than the writes: deliveries are behind at the kill
        first = LocalServer(data_dir=tmp_path, env=env).start()
        try:
            with httpx.Client(base_url=first.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as http:
                id_, secret = subscribe(
                    http, topic_subscription(receiver.url, "Patient", [f"_id={patient_id}"], "id-only")
                )
                wait_status(http, id_, "active")
                for n in range(200):
                    http.put(
                        f"/Patient/{patient_id}",
                        json={"resourceType": "Patient", "id": patient_id, "birthDate": f"19{n % 100:02d}-01-01"},
                    )
                assert len(unique(receiver.snapshot())) < 201  # deliveries are still going on
            assert first.process is not None
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait()
        finally:
            first.stop()
        with (
            LocalServer(data_dir=tmp_path, env=env) as second,
            httpx.Client(base_url=second.base_url, timeout=30) as http,
        ):
            committed = int(http.get(f"/Patient/{patient_id}").json()["meta"]["versionId"])
            assert committed == 200
            got = receiver.wait_for(lambda seen: len(unique(seen)) >= committed + 1, timeout=120)
    versions, numbers = [], []
    for request in unique(got)[1:]:
        bundle = verify(secret, request)
        versions.append(int(bundle["entry"][1]["response"]["etag"].split('"')[1]))
        event = next(p for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event")
        numbers.append(int(next(x["valueString"] for x in event["part"] if x["name"] == "event-number")))
    assert versions == list(range(1, committed + 1))
    assert numbers == list(range(1, committed + 1))


# -- authorization -----------------------------------------------------------------------------


def test_a_patient_context_subscription_gets_only_its_compartment(tmp_path: Path) -> None:
    def mint(*args: str) -> dict[str, str]:
        command = [sys.executable, "-m", "fhirflow.cli", "token", "--data-dir", str(tmp_path), *args]
        token = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()
        return {"Authorization": f"Bearer {token}"}

    code = unique_code()
    with (
        Receiver() as receiver,
        # The practitioner's user/Subscription scope reaches the subscriptions it owns (no admin_user_types).
        LocalServer(data_dir=tmp_path, extra_args=("--auth", "smart"), env={**DEV_ENV, **DEV_ISSUER}) as server,
        httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as http,
    ):
        admin = mint("--scope", "system/*.cruds")
        owner = mint(
            "--scope",
            "user/Subscription.cruds patient/Observation.rs",
            "--patient",
            "p1",
            "--fhir-user",
            "Practitioner/dr",
        )
        body = r4_subscription(receiver.url, f"Observation?code={code}", payload="application/fhir+json")
        reply = http.post("/Subscription", json=body, headers=owner)
        assert reply.status_code == 201, reply.text
        secret = next(e["valueString"] for e in reply.json()["channel"]["extension"] if e["url"] == SECRET_EXT)
        id_ = reply.json()["id"]
        deadline = time.monotonic() + 20
        while http.get(f"/Subscription/{id_}", headers=admin).json()["status"] != "active":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        mine = http.post("/Observation", json=observation(code, "Patient/p1"), headers=admin).json()
        http.post("/Observation", json=observation(code, "Patient/p2"), headers=admin)
        also_mine = http.post("/Observation", json=observation(code, "Patient/p1"), headers=admin).json()
        got = receiver.wait_for(lambda seen: len(seen) >= 2)
        time.sleep(1.0)
        got = receiver.snapshot()
        assert [r.path for r in got] == [f"/Observation/{mine['id']}", f"/Observation/{also_mine['id']}"]
        for request in got:
            verify(secret, request)
        # Subscribing needs read access to what the criteria name.
        no_read = mint("--scope", "user/Subscription.cruds", "--fhir-user", "Practitioner/dr")
        assert http.post("/Subscription", json=body, headers=no_read).status_code == 403


def test_patient_and_user_tokens_reach_only_the_subscriptions_they_own(tmp_path: Path) -> None:
    """Subscription is in no compartment: a patient- or user-scoped token reaches the ones it
    created (owner = tenant, issuer, subject and client, as for jobs) and nobody else's, which
    answer exactly like ids never issued; no admin_user_types needed. System scopes see all."""

    def mint(*args: str) -> dict[str, str]:
        command = [sys.executable, "-m", "fhirflow.cli", "token", "--data-dir", str(tmp_path), *args]
        token = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()
        return {"Authorization": f"Bearer {token}"}

    v2 = "patient/Subscription.cruds patient/Observation.rs"
    with (
        Receiver() as receiver,
        LocalServer(data_dir=tmp_path, extra_args=("--auth", "smart"), env={**DEV_ENV, **DEV_ISSUER}) as server,
        httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as http,
    ):
        admin = mint("--scope", "system/*.cruds")
        alice = mint("--scope", v2, "--patient", "p1", "--sub", "alice", "--client-id", "app")
        alice_other_app = mint("--scope", v2, "--patient", "p1", "--sub", "alice", "--client-id", "other-app")
        bob = mint("--scope", v2, "--patient", "p2", "--sub", "bob", "--client-id", "app")
        doctor = mint(  # SMART v1 scopes, a user context
            "--scope", "user/Subscription.* user/Observation.read", "--fhir-user", "Practitioner/dr", "--sub", "dr"
        )
        body = r4_subscription(receiver.url, f"Observation?code={unique_code()}")
        created = http.post("/Subscription", json=body, headers=alice)
        assert created.status_code == 201, created.text
        id_ = created.json()["id"]
        assert http.get(f"/Subscription/{id_}", headers=alice).status_code == 200
        assert http.get(f"/Subscription/{id_}/_history/1", headers=alice).status_code == 200
        history = http.get(f"/Subscription/{id_}/_history", headers=alice).json()["entry"]
        assert history
        assert {e["resource"]["id"] for e in history} == {id_}  # the server's status write too
        assert [e["resource"]["id"] for e in http.get("/Subscription", headers=alice).json()["entry"]] == [id_]
        assert http.get(f"/Subscription/{id_}/$status", headers=alice).status_code == 200
        assert http.get(f"/Subscription/{id_}", headers=admin).status_code == 200  # system scopes: all

        never = "never-issued"
        for other in (bob, alice_other_app, doctor):
            for path in (
                "/Subscription/{}",
                "/Subscription/{}/_history/1",
                "/Subscription/{}/_history",
                "/Subscription/{}/$status",
                "/Subscription/{}/$events",
            ):
                theirs, unknown = http.get(path.format(id_), headers=other), http.get(path.format(never), headers=other)
                assert theirs.status_code == unknown.status_code == 404, (path, theirs.text)
                assert theirs.json()["issue"][0]["diagnostics"] == unknown.json()["issue"][0]["diagnostics"].replace(
                    never, id_
                )
                assert "ETag" not in theirs.headers
            assert http.get("/Subscription", headers=other).json().get("entry", []) == []
            assert http.get(f"/Subscription?_id={id_}", headers=other).json().get("entry", []) == []
            assert http.get("/Subscription/_history", headers=other).json().get("entry", []) == []
            status_all = http.get("/Subscription/$status", headers=other).json()
            assert status_all.get("entry", []) == []
            changed = {**body, "id": id_, "reason": "taken over"}
            assert http.put(f"/Subscription/{id_}", json=changed, headers=other).status_code in (404, 405)
            assert (
                http.delete(f"/Subscription/{id_}", headers=other).status_code
                == http.delete(f"/Subscription/{never}", headers=other).status_code
            )
            assert http.get(f"/Subscription/{id_}", headers=alice).json()["reason"] == "e2e"

        # A user-scoped (v1) token owns what it creates too; a client cannot claim another's tag.
        stolen = http.get(f"/Subscription/{id_}", headers=alice).json()["meta"]["tag"]
        mine = http.post("/Subscription", json={**body, "meta": {"tag": stolen}}, headers=doctor)
        assert mine.status_code == 201, mine.text
        assert mine.json()["meta"]["tag"] != stolen
        assert http.get(f"/Subscription/{mine.json()['id']}", headers=doctor).status_code == 200
        assert http.get(f"/Subscription/{mine.json()['id']}", headers=alice).status_code == 404
        assert {e["resource"]["id"] for e in http.get("/Subscription", headers=admin).json()["entry"]} == {
            id_,
            mine.json()["id"],
        }
        # The owner updates and deletes its own.
        updated = http.put(f"/Subscription/{id_}", json={**body, "id": id_, "reason": "mine"}, headers=alice)
        assert updated.status_code == 200, updated.text
        assert updated.json()["meta"]["tag"] == stolen
        assert http.delete(f"/Subscription/{id_}", headers=alice).status_code in (200, 204)


# -- retries, error and off ------------------------------------------------------------------------

RETRY_ENV = {
    **DEV_ENV,
    "FHIRFLOW_SUBSCRIPTIONS_RETRY_SCALE": "0.002",  # the schedule's 5 s, 5 min, 30 min → 10 ms, 0.6 s, 3.6 s
    "FHIRFLOW_SUBSCRIPTIONS_RETRY_HORIZON_SECONDS": "8",
}


@pytest.fixture(scope="module")
def retry_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        LocalServer(data_dir=tmp_path_factory.mktemp("subs-retry"), env=RETRY_ENV) as running,
        httpx.Client(base_url=running.base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as client,
    ):
        yield client


def statuses(http: httpx.Client, id_: str) -> list[tuple[str, str | None]]:
    """The subscription's status over its versions, oldest first (status changes are new versions)."""
    history = http.get(f"/Subscription/{id_}/_history", params={"_count": 100}).json()
    versions = sorted((e["resource"] for e in history.get("entry", [])), key=lambda r: int(r["meta"]["versionId"]))
    return [(r["status"], r.get("error")) for r in versions]


def test_a_receiver_failing_its_first_requests_gets_the_notification_and_status_goes_error_then_active(
    retry_http: httpx.Client,
) -> None:
    code = unique_code()
    with Receiver(fail_first=3, fail_status=503) as receiver:
        id_, secret = subscribe(retry_http, r4_subscription(receiver.url, f"Observation?code={code}"))
        wait_status(retry_http, id_, "active")
        retry_http.post("/Observation", json=observation(code))
        got = receiver.wait_for(lambda seen: len(seen) >= 1, timeout=20)
        assert receiver.answered == 4  # three failures, then the delivery
        verify(secret, got[0])
        wait_status(retry_http, id_, "active")
        time.sleep(0.5)
        assert len(unique(receiver.snapshot())) == 1
    history = statuses(retry_http, id_)
    assert [s for s, _ in history] == ["requested", "active", "error", "active"], history
    assert "HTTP 503" in (history[2][1] or "")


def test_a_receiver_down_past_the_horizon_turns_the_subscription_error_then_off(retry_http: httpx.Client) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}/hook"
    code = unique_code()
    id_, _ = subscribe(retry_http, r4_subscription(down, f"Observation?code={code}"))
    wait_status(retry_http, id_, "active")
    retry_http.post("/Observation", json=observation(code))
    wait_status(retry_http, id_, "error", timeout=10)
    final = wait_status(retry_http, id_, "off", timeout=30)
    assert "retry horizon" in final["error"]
    assert [s for s, _ in statuses(retry_http, id_)] == ["requested", "active", "error", "off"]
    # Off means no more deliveries and no more matching: a later change queues nothing.
    status = retry_http.get(f"/Subscription/{id_}/$status").json()
    params = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert params["status"]["valueCode"] == "off"


def test_secrets_stay_out_of_reads_logs_and_audit_and_a_new_signing_secret_rotates(
    http: httpx.Client, receiver: Receiver, subs_server: LocalServer
) -> None:
    import base64

    code = unique_code()
    body = r4_subscription(receiver.url, f"Observation?code={code}", header=["X-Api-Key: k-123-very-secret"])
    id_, old = subscribe(http, body)
    current = wait_status(http, id_, "active")
    new = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    current["status"] = "requested"
    current["channel"]["extension"] = [{"url": SECRET_EXT, "valueString": new}]  # header stays "*****": kept
    reply = http.put(f"/Subscription/{id_}", json=current)
    assert reply.status_code == 200, reply.text
    assert new not in reply.text
    assert "k-123-very-secret" not in reply.text
    wait_status(http, id_, "active")
    http.post("/Observation", json=observation(code))
    request = receiver.wait_for(lambda seen: len(seen) >= 1)[0]
    assert request.headers["x-api-key"] == "k-123-very-secret"
    verify(new, request)
    verify(old, request)  # both sign during the overlap, so receivers can switch without a gap
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    # A "*****" for a header that had no value before is refused, naming the header.
    current = http.get(f"/Subscription/{id_}").json()
    current["status"] = "requested"
    current["channel"]["header"].append("X-Other: *****")
    refused = http.put(f"/Subscription/{id_}", json=current)
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["expression"] == ["Subscription.channel.header[1]"]
    everything = (subs_server.data_dir / "audit.jsonl").read_text() + subs_server.log_tail(10_000_000)
    history = http.get(f"/Subscription/{id_}/_history").text
    for secret in ("k-123-very-secret", old, new):
        assert secret not in everything
        assert secret not in history


def test_type_level_status_lists_the_tenants_subscriptions(http: httpx.Client, receiver: Receiver) -> None:
    id_, _ = subscribe(http, r4_subscription(receiver.url, f"Observation?code={unique_code()}"))
    wait_status(http, id_, "active")  # listed once the service has taken it up
    listed = http.get("/Subscription/$status").json()
    references = [
        p["valueReference"]["reference"]
        for e in listed["entry"]
        for p in e["resource"]["parameter"]
        if p["name"] == "subscription"
    ]
    assert any(r.endswith(f"/Subscription/{id_}") for r in references)
    assert not validate_resource(listed)


def test_end_turns_a_subscription_off(http: httpx.Client, receiver: Receiver) -> None:
    from datetime import UTC, datetime, timedelta

    end = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {**r4_subscription(receiver.url, f"Observation?code={unique_code()}"), "end": end}
    id_, _ = subscribe(http, body)
    wait_status(http, id_, "active")
    wait_status(http, id_, "off", timeout=15)


def test_410_gone_turns_the_subscription_off(retry_http: httpx.Client) -> None:
    code = unique_code()
    with Receiver(fail_first=100, fail_status=410) as receiver:
        id_, _ = subscribe(retry_http, r4_subscription(receiver.url, f"Observation?code={code}"))
        wait_status(retry_http, id_, "active")
        retry_http.post("/Observation", json=observation(code))
        final = wait_status(retry_http, id_, "off", timeout=20)
        assert "410" in final["error"]
        retry_http.post("/Observation", json=observation(code))
        time.sleep(1.0)
        assert receiver.answered == 1  # one attempt, then nothing more: the subscription is off


def test_a_deleted_subscription_is_notified_no_more(http: httpx.Client, receiver: Receiver) -> None:
    code = unique_code()
    id_, _ = subscribe(http, r4_subscription(receiver.url, f"Observation?code={code}"))
    wait_status(http, id_, "active")
    http.post("/Observation", json=observation(code))
    receiver.wait_for(lambda seen: len(seen) >= 1)
    assert http.delete(f"/Subscription/{id_}").status_code == 204
    assert http.get(f"/Subscription/{id_}/$status").status_code in (404, 410)
    time.sleep(0.5)  # the service takes up the deletion
    http.post("/Observation", json=observation(code))
    time.sleep(1.0)
    assert len(receiver.snapshot()) == 1


def test_odd_topic_extensions_are_refused_not_crashed_on(http: httpx.Client) -> None:
    body = topic_subscription("https://example.org/hook", "Observation", [], "id-only")
    body["channel"]["extension"] = [{"url": f"{BACKPORT}/backport-heartbeat-period", "valueString": "often"}]
    reply = http.post("/Subscription", json=body)
    assert reply.status_code == 400
    assert reply.json()["issue"][0]["expression"] == ["Subscription.channel.extension[0]"]
    body = topic_subscription("https://example.org/hook", "Observation", [], "everything")
    reply = http.post("/Subscription", json=body)
    assert reply.status_code == 400
    assert reply.json()["issue"][0]["expression"] == ["Subscription.channel.payload.extension[0]"]
    body = topic_subscription("https://example.org/hook", "Observation", ["Patient?name=x"], "id-only")
    assert http.post("/Subscription", json=body).json()["issue"][0]["expression"] == [
        "Subscription.criteria.extension[0]"
    ]


def test_the_signing_secret_is_shown_once_also_by_a_conditional_create(http: httpx.Client, receiver: Receiver) -> None:
    tag = unique_code()
    body = {**r4_subscription(receiver.url, f"Observation?code={tag}"), "reason": tag}
    reply = http.post("/Subscription", json=body, headers={"If-None-Exist": f"_id={tag}"})
    assert reply.status_code == 201, reply.text
    shown = [e["valueString"] for e in reply.json()["channel"]["extension"] if e["url"] == SECRET_EXT]
    assert shown[0].startswith("whsec_")
    again = http.get(f"/Subscription/{reply.json()['id']}").json()
    assert [e["valueString"] for e in again["channel"]["extension"] if e["url"] == SECRET_EXT] == ["*****"]


def test_changes_made_by_a_transaction_bundle_are_notified(http: httpx.Client, receiver: Receiver) -> None:
    code = unique_code()
    id_, secret = subscribe(
        http, r4_subscription(receiver.url + "/fhir", f"Observation?code={code}", payload="application/fhir+json")
    )
    wait_status(http, id_, "active")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": observation(code), "request": {"method": "POST", "url": "Observation"}},
            {"resource": observation("other"), "request": {"method": "POST", "url": "Observation"}},
            {"resource": observation(code), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    reply = http.post("/", json=bundle)
    assert reply.status_code == 200, reply.text
    ids = [e["response"]["location"].split("Observation/")[1].split("/")[0] for e in reply.json()["entry"]]
    got = receiver.wait_for(lambda seen: len(seen) >= 2)
    time.sleep(0.5)
    assert sorted(r.path for r in receiver.snapshot()) == sorted(f"/fhir/Observation/{i}" for i in (ids[0], ids[2]))
    for request in got:
        verify(secret, request)


def test_an_endpoint_that_never_answers_delays_only_its_own_subscription(http: httpx.Client) -> None:
    import socket

    code = unique_code()
    with socket.socket() as black_hole, Receiver() as good:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(64)  # connections complete, requests are never read or answered
        stuck = f"http://127.0.0.1:{black_hole.getsockname()[1]}/hook"
        stuck_id, _ = subscribe(http, r4_subscription(stuck, f"Observation?code={code}"))
        good_id, _ = subscribe(http, r4_subscription(good.url, f"Observation?code={code}"))
        wait_status(http, stuck_id, "active")
        wait_status(http, good_id, "active")
        sent = []
        for _ in range(20):
            sent.append(time.monotonic())
            assert http.post("/Observation", json=observation(code)).status_code == 201
        got = good.wait_for(lambda seen: len(seen) >= 20, timeout=8)  # the stuck one waits 10 s per attempt
        latencies = sorted(r.at - s for r, s in zip(got, sent, strict=False))
        assert latencies[-1] < 3.0, latencies


def test_status_shows_the_subscriptions_counters(retry_http: httpx.Client) -> None:
    """Per-subscription metrics kept with its state: notifications matched and delivered, failed
    attempts, last and median latency, on the SubscriptionStatus ``status`` parameter (an extension,
    so the Parameters stay in the Backport profile's slices)."""
    code = unique_code()
    with Receiver(fail_first=2, fail_status=503) as receiver:
        id_, _ = subscribe(retry_http, r4_subscription(receiver.url, f"Observation?code={code}"))
        wait_status(retry_http, id_, "active")
        retry_http.post("/Observation", json=observation("something else"))  # matches nothing
        for _ in range(3):
            retry_http.post("/Observation", json=observation(code))
        receiver.wait_for(lambda seen: len(unique(seen)) >= 3, timeout=30)
        deadline = time.monotonic() + 15
        while True:
            status = retry_http.get(f"/Subscription/{id_}/$status").json()["entry"][0]["resource"]
            validate_resource(status)
            (parameter,) = [p for p in status["parameter"] if p["name"] == "status"]
            (metrics,) = parameter["extension"]
            counted = {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in metrics["extension"]}
            if counted["delivered"] >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert metrics["url"] == "https://fhirflow.dev/fhir/StructureDefinition/subscription-metrics"
    assert (counted["matched"], counted["delivered"], counted["failed-attempts"]) == (3, 3, 2), counted
    assert counted["last-latency-ms"] > 0
    assert counted["median-latency-ms"] > 0
