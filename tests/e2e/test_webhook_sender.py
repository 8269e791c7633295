"""The webhook sender and the dispatcher against real HTTP receivers on 127.0.0.1.

Covers what only a real socket shows: signatures as a consumer verifies them (``standardwebhooks``),
redirects not followed, 410, ``Retry-After``, the deadline against an endpoint that never answers,
SSRF refusals before any connection, TLS verified against the host name while the connection is
pinned to the checked address; then delivery through the durable queue (retries with backoff,
Retry-After honoured) and isolation of a dead endpoint from the other groups.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from fhirflow.delivery_ports import Attempt, ClaimedJob, DeliveryJob
from fhirflow_subscriptions import ssrf
from fhirflow_subscriptions.sender import Outgoing, send
from fhirflow_subscriptions.signing import new_secret
from fhirflow_subscriptions.ssrf import EndpointPolicy
from tests.support.webhook_receiver import Received, Receiver, Reply

LOOPBACK = EndpointPolicy(allow_private=True, allow_http=True)
HTTP_ONLY = EndpointPolicy(allow_http=True)


def outgoing(url: str, **changes: object) -> Outgoing:
    base: dict[str, object] = {
        "method": "POST",
        "url": url,
        "headers": {"Content-Type": "application/fhir+json", "Authorization": "Bearer subscriber-token"},
        "body": b'{"resourceType":"Bundle"}',
        "message_id": "msg_0001",
        "secrets": (new_secret(),),
        "timeout": 5.0,
    }
    base.update(changes)
    return Outgoing(**base)  # type: ignore[arg-type]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def test_a_2xx_is_delivered_with_the_channel_headers_and_a_verifiable_signature(receiver: Receiver) -> None:
    message = outgoing(receiver.url + "/hooks/a?x=1")
    attempt = send(message, LOOPBACK)
    assert (attempt.outcome, attempt.status, attempt.error) == ("delivered", 200, None)
    assert attempt.latency_ms > 0
    [request] = receiver.wait_for(1)
    assert (request.method, request.path, request.body) == ("POST", "/hooks/a?x=1", message.body)
    assert request.headers["authorization"] == "Bearer subscriber-token"
    assert request.headers["content-type"] == "application/fhir+json"
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert request.headers["webhook-id"] == "msg_0001"
    Webhook(message.secrets[0]).verify(request.body, request.headers)


def test_a_put_without_body_and_a_channel_header_cannot_forge_the_signature(receiver: Receiver) -> None:
    message = outgoing(
        receiver.url + "/Patient/1", method="PUT", body=b"", headers={"webhook-id": "forged", "X-Tenant": "a"}
    )
    assert send(message, LOOPBACK).outcome == "delivered"
    [request] = receiver.wait_for(1)
    assert (request.method, request.body, request.headers["content-length"]) == ("PUT", b"", "0")
    assert request.headers["webhook-id"] == "msg_0001"
    assert request.headers["x-tenant"] == "a"
    Webhook(message.secrets[0]).verify(request.body, request.headers, json_parse=False)


def test_a_header_value_that_would_inject_a_header_is_refused_unsent(receiver: Receiver) -> None:
    attempt = send(outgoing(receiver.url, headers={"X-Token": "a\r\nX-Injected: 1"}), LOOPBACK)
    assert (attempt.outcome, attempt.error) == ("refused", "a request header is not valid")
    time.sleep(0.1)
    assert receiver.received == []


def test_a_2xx_whose_body_is_cut_short_is_still_delivered() -> None:
    """The status line decides: re-sending after a 2xx would only make a duplicate."""
    with Receiver(lambda _r, _i: Reply(200, {"Content-Length": "100"}, reset_after_headers=True)) as rx:
        attempt = send(outgoing(rx.url, timeout=1.0), LOOPBACK)
    assert (attempt.outcome, attempt.status) == ("delivered", 200)


@pytest.mark.parametrize("status", [201, 202, 204])
def test_every_2xx_is_success(status: int) -> None:
    with Receiver(lambda _r, _i: Reply(status)) as rx:
        assert send(outgoing(rx.url), LOOPBACK).outcome == "delivered"


@pytest.mark.parametrize(("status", "outcome"), [(400, "retry"), (404, "retry"), (500, "retry"), (410, "gone")])
def test_other_statuses_fail_and_410_means_gone(status: int, outcome: str) -> None:
    with Receiver(lambda _r, _i: Reply(status)) as rx:
        attempt = send(outgoing(rx.url), LOOPBACK)
    assert (attempt.outcome, attempt.status) == (outcome, status)
    assert attempt.error


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed(status: int) -> None:
    with Receiver() as target, Receiver(lambda _r, _i: Reply(status, {"Location": target.url + "/x"})) as rx:
        attempt = send(outgoing(rx.url), LOOPBACK)
        time.sleep(0.2)
        assert target.received == []
    assert (attempt.outcome, attempt.status) == ("retry", status)
    assert "redirect" in (attempt.error or "")


def test_a_redirect_to_a_private_address_is_not_fetched() -> None:
    """The redirect names the metadata service; the attempt fails at once, with no connection to it."""
    location = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    with Receiver(lambda _r, _i: Reply(302, {"Location": location})) as rx:
        attempt = send(outgoing(rx.url, timeout=3.0), HTTP_ONLY)
        assert len(rx.received) == 1
    assert (attempt.outcome, attempt.status) == ("retry", 302)
    assert attempt.latency_ms < 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0", 0.0), (None, None), ("soon", None)],
)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_reported_on_429_and_503(status: int, header: str | None, expected: float | None) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    with Receiver(lambda _r, _i: Reply(status, headers)) as rx:
        attempt = send(outgoing(rx.url), LOOPBACK)
    assert (attempt.outcome, attempt.status, attempt.retry_after) == ("retry", status, expected)


def test_retry_after_as_an_http_date() -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    with Receiver(lambda _r, _i: Reply(503, {"Retry-After": header})) as rx:
        attempt = send(outgoing(rx.url), LOOPBACK)
    assert attempt.retry_after is not None
    assert 100 < attempt.retry_after <= 121


def test_an_endpoint_that_never_answers_costs_one_timeout() -> None:
    with Receiver(lambda _r, _i: Reply(hang=True)) as rx:
        started = time.monotonic()
        attempt = send(outgoing(rx.url, timeout=0.5), LOOPBACK)
        elapsed = time.monotonic() - started
    assert (attempt.outcome, attempt.status) == ("retry", None)
    assert "no response within 0.5 s" in (attempt.error or "")
    assert 0.4 < elapsed < 2.0


def test_a_name_server_that_never_answers_costs_one_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def slow_dns(_host: str, _port: int) -> list[ssrf.Address]:
        release.wait(10)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(ssrf, "resolve", slow_dns)
    try:
        started = time.monotonic()
        attempt = send(outgoing("https://slow-dns.example.com/", timeout=0.3), LOOPBACK)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert (attempt.outcome, attempt.error) == ("retry", "the endpoint's host name did not resolve within 0.3 s")
    assert elapsed < 1.5


def test_a_closed_port_is_a_retry() -> None:
    with Receiver() as rx:
        url = rx.url
    attempt = send(outgoing(url), LOOPBACK)
    assert (attempt.outcome, attempt.error) == ("retry", "connection refused")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:{port}/",
        "https://10.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]:{port}/",
        "https://[fd00::1]/",
        "http://127.0.0.1:{port}/",  # plain http without the setting
    ],
)
def test_ssrf_refusals_happen_before_any_connection(receiver: Receiver, url: str) -> None:
    attempt = send(outgoing(url.format(port=receiver.port), timeout=3.0), EndpointPolicy())
    assert (attempt.outcome, attempt.status) == ("refused", None)
    assert attempt.latency_ms < 500
    time.sleep(0.1)
    assert receiver.received == []


def test_a_host_name_resolving_to_loopback_is_refused(receiver: Receiver) -> None:
    """``localhost`` is loopback by name (RFC 6761); a name that only the resolver says is loopback is
    refused on its answer (test below and tests/unit/test_subscription_ssrf.py)."""
    attempt = send(outgoing(f"https://localhost:{receiver.port}/"), EndpointPolicy())
    assert attempt.outcome == "refused"
    assert "loopback" in (attempt.error or "")
    assert send(outgoing(f"http://localhost:{receiver.port}/"), HTTP_ONLY).outcome == "delivered"


def test_a_name_rebound_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setattr(ssrf, "resolve", lambda _h, _p: [ipaddress.ip_address("127.0.0.1")])
    attempt = send(outgoing(f"https://hooks.example.com:{receiver.port}/"), EndpointPolicy())
    assert (attempt.outcome, attempt.error) == (
        "refused",
        "the endpoint's host resolves to a loopback, private or link-local address",
    )
    assert receiver.received == []


# --- TLS: the connection is pinned to the checked address, the certificate checked against the name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A private CA and a server certificate for ``hook.test``: (server context, client context)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory: Path = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fhirflow test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hook.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hook.test")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "leaf.pem").write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "leaf.pem")
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


def test_tls_connects_to_the_checked_address_and_verifies_the_host_name(
    monkeypatch: pytest.MonkeyPatch, pki: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_tls, client_tls = pki
    asked: list[str] = []

    def fake_dns(host: str, _port: int) -> list[ssrf.Address]:
        asked.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(ssrf, "resolve", fake_dns)
    private = EndpointPolicy(allow_private=True)
    with Receiver(tls=server_tls) as rx:
        good = send(outgoing(f"https://hook.test:{rx.port}/notify"), private, tls=client_tls)
        wrong_name = send(outgoing(f"https://other.test:{rx.port}/notify"), private, tls=client_tls)
        untrusted = send(outgoing(f"https://hook.test:{rx.port}/notify"), private)
        received: list[Received] = list(rx.received)
    assert good.outcome == "delivered"
    assert received[0].headers["host"] == f"hook.test:{rx.port}"
    assert asked == ["hook.test", "other.test", "hook.test"]  # one lookup per attempt, then pinned
    for attempt in (wrong_name, untrusted):
        assert (attempt.outcome, attempt.error) == ("retry", "TLS certificate verification failed")
    assert len(received) == 1


# --- through the durable queue and the Dispatcher


class Deliveries:
    """A dispatcher over a fresh SQLite queue whose jobs carry their endpoint URL as the payload."""

    def __init__(self, directory: Path, *, secret: str | None = None, timeout: float = 5.0, **kw: Any) -> None:
        from fhirflow.adapters.sqlite.database import SqliteDatabase
        from fhirflow.adapters.sqlite.deliveries import SqliteDeliveryQueue
        from fhirflow_subscriptions.dispatch import Dispatcher

        self.secret = secret or new_secret()
        self.timeout = timeout
        self.queue = SqliteDeliveryQueue(SqliteDatabase(directory / "deliveries.sqlite3"))
        self.results: list[tuple[str, str, Attempt]] = []
        self.enqueued_at: dict[str, float] = {}
        self._lock = threading.Lock()
        kw.setdefault("poll_seconds", 0.05)
        self.dispatcher = Dispatcher(self.queue, deliver=self.deliver, on_result=self.on_result, **kw)

    def deliver(self, job: ClaimedJob) -> Attempt:
        message = Outgoing(
            "POST",
            job.payload.decode(),
            {"Content-Type": "application/json"},
            b'{"n":"' + job.job_id.encode() + b'"}',
            job.job_id,
            (self.secret,),
            self.timeout,
        )
        return send(message, LOOPBACK)

    def on_result(self, job: ClaimedJob, attempt: Attempt, result: str) -> None:
        with self._lock:
            self.results.append((job.job_id, result, attempt))

    def add(self, group: str, job_id: str, url: str) -> None:
        with self._lock:
            self.enqueued_at[job_id] = time.monotonic()
        self.queue.enqueue([DeliveryJob(group, job_id, url.encode(), 0)])
        self.dispatcher.wake()

    def wait(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < end, f"timed out; results so far: {[r[:2] for r in self.results]}"
            time.sleep(0.01)

    def finished(self, job_id: str) -> bool:
        with self._lock:
            return any(j == job_id and r != "retrying" for j, r, _ in self.results)


@pytest.fixture
def deliveries_dir(tmp_path: Path) -> Path:
    return tmp_path


def test_a_failing_receiver_is_retried_with_backoff_then_delivered_with_one_id(deliveries_dir: Path) -> None:
    delays = {1: 0.2, 2: 0.4, 3: 0.8}
    with Receiver(lambda _r, i: Reply(500) if i < 3 else Reply(204)) as rx:
        d = Deliveries(deliveries_dir, backoff=lambda n: delays[n])
        d.dispatcher.start()
        try:
            d.add("t/sub-1", "evt-1", rx.url + "/hook")
            d.wait(lambda: d.finished("evt-1"))
        finally:
            d.dispatcher.stop()
        requests = rx.wait_for(4)
    assert [r for _, r, _ in d.results] == ["retrying", "retrying", "retrying", "delivered"]
    assert {r.headers["webhook-id"] for r in requests} == {"evt-1"}
    for request in requests:
        Webhook(d.secret).verify(request.body, request.headers)
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    for gap, scheduled in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert scheduled - 0.02 <= gap < scheduled + 1.0, gaps
    logged = d.queue.attempts("t/sub-1")
    assert [(a["outcome"], a["status"]) for a in logged] == [("delivered", 204)] + [("retry", 500)] * 3
    assert all(a["latency_ms"] > 0 for a in logged)


def test_retry_after_is_honoured_instead_of_the_backoff(deliveries_dir: Path) -> None:
    with Receiver(lambda _r, i: Reply(503, {"Retry-After": "1"}) if i == 0 else Reply(200)) as rx:
        d = Deliveries(deliveries_dir, backoff=lambda _n: 60.0)
        d.dispatcher.start()
        try:
            d.add("t/sub-1", "evt-1", rx.url)
            d.wait(lambda: d.finished("evt-1"), timeout=10)
        finally:
            d.dispatcher.stop()
        first, second = rx.wait_for(2)
    assert 1.0 <= second.at - first.at < 3.0  # neither at once nor after the 60 s backoff
    assert d.results[0][2].retry_after == 1.0


def test_410_ends_the_group_and_its_later_notifications_are_not_sent(deliveries_dir: Path) -> None:
    with Receiver(lambda _r, _i: Reply(410)) as gone, Receiver() as fine:
        d = Deliveries(deliveries_dir)
        for n in range(3):
            d.add("t/gone", f"g-{n}", gone.url)
            d.add("t/fine", f"f-{n}", fine.url)
        d.dispatcher.start()
        try:
            d.wait(lambda: d.finished("f-2") and d.finished("g-0"))
            time.sleep(0.3)
        finally:
            d.dispatcher.stop()
        assert len(gone.received) == 1
        assert len(fine.received) == 3
    assert ("g-0", "gone") in [(j, r) for j, r, _ in d.results]
    assert d.queue.depth("t/gone") == 0


def test_a_receiver_down_past_the_horizon_is_given_up_with_one_id(deliveries_dir: Path) -> None:
    with Receiver(lambda _r, _i: Reply(500)) as rx:
        d = Deliveries(deliveries_dir, backoff=lambda _n: 0.3, horizon_seconds=1.2)
        d.dispatcher.start()
        try:
            d.add("t/sub", "evt-1", rx.url)
            d.wait(lambda: d.finished("evt-1"), timeout=10)
        finally:
            d.dispatcher.stop()
        requests = list(rx.received)
    assert d.results[-1][1] == "gave-up"
    assert 3 <= len(requests) <= 7
    assert {r.headers["webhook-id"] for r in requests} == {"evt-1"}
    assert requests[-1].at - requests[0].at < 2.0
    assert d.queue.depth() == 0


def test_a_redirecting_endpoint_is_retried_not_followed(deliveries_dir: Path) -> None:
    with Receiver() as target, Receiver(lambda _r, _i: Reply(307, {"Location": target.url})) as rx:
        d = Deliveries(deliveries_dir, backoff=lambda _n: 30.0)
        d.dispatcher.start()
        try:
            d.add("t/sub", "evt-1", rx.url)
            d.wait(lambda: bool(d.results))
        finally:
            d.dispatcher.stop()
        assert target.received == []
    assert d.results[0][:2] == ("evt-1", "retrying")
    assert "redirects are not followed" in (d.results[0][2].error or "")


def _latencies(directory: Path, *, with_dead_endpoint: bool) -> list[float]:
    """Seconds from enqueue to receipt for 8 healthy groups sent 25 notifications each at ~80/s,
    optionally beside a group whose endpoint never answers (1 s timeout, retried every 0.05 s)."""
    groups, per_group, interval = 8, 25, 0.0125
    arrived: dict[str, float] = {}
    lock = threading.Lock()

    def record(request: Received, _index: int) -> Reply:
        with lock:
            arrived[request.headers["webhook-id"]] = request.at
        return Reply(200)

    with Receiver(record) as healthy, Receiver(lambda _r, _i: Reply(hang=True)) as dead:
        d = Deliveries(directory, timeout=1.0, workers=4, backoff=lambda _n: 0.05)
        d.dispatcher.start()
        try:
            if with_dead_endpoint:
                for n in range(20):
                    d.add("t/dead", f"dead-{n}", dead.url)
                time.sleep(0.2)  # the dead group is now holding a worker
            for n in range(per_group):
                for g in range(groups):
                    d.add(f"t/g{g}", f"g{g}-{n}", f"{healthy.url}/g{g}")
                    time.sleep(interval)
            d.wait(lambda: len(arrived) == groups * per_group, timeout=60)
        finally:
            d.dispatcher.stop()
    return sorted(arrived[job] - d.enqueued_at[job] for job in arrived)


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def test_an_endpoint_that_never_answers_does_not_slow_the_other_groups(tmp_path: Path) -> None:
    base = _latencies(tmp_path / "base", with_dead_endpoint=False)
    dead = _latencies(tmp_path / "dead", with_dead_endpoint=True)
    numbers = {
        "p50_ms_without": round(_pct(base, 0.5) * 1000, 1),
        "p99_ms_without": round(_pct(base, 0.99) * 1000, 1),
        "p50_ms_with_dead_endpoint": round(_pct(dead, 0.5) * 1000, 1),
        "p99_ms_with_dead_endpoint": round(_pct(dead, 0.99) * 1000, 1),
    }
    print("isolation latency", numbers)
    # 2x the baseline, plus a floor for scheduling noise on a shared 2-core machine
    assert _pct(dead, 0.5) <= 2 * _pct(base, 0.5) + 0.025, numbers
    assert _pct(dead, 0.99) <= 2 * _pct(base, 0.99) + 0.100, numbers


def test_no_outcome_leaks_a_socket(monkeypatch: pytest.MonkeyPatch, pki: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """Every path (delivered, TLS failure, timeout, reset, redirect) closes the pinned socket."""
    import os

    server_tls, client_tls = pki
    monkeypatch.setattr(ssrf, "resolve", lambda _h, _p: [ipaddress.ip_address("127.0.0.1")])
    private = EndpointPolicy(allow_private=True, allow_http=True)

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def rounds(count: int) -> None:
        with (
            Receiver(tls=server_tls) as tls_rx,
            Receiver(lambda _r, i: [Reply(200), Reply(302, {"Location": "/x"}), Reply(hang=True)][i % 3]) as rx,
            Receiver(lambda _r, _i: Reply(200, {"Content-Length": "9"}, reset_after_headers=True)) as reset,
        ):
            for _ in range(count):
                send(outgoing(f"https://other.test:{tls_rx.port}/"), private, tls=client_tls)
                send(outgoing(f"https://hook.test:{tls_rx.port}/"), private, tls=client_tls)
                for _ in range(3):
                    send(outgoing(rx.url, timeout=0.2), private)
                send(outgoing(reset.url), private)
        time.sleep(0.3)  # the receivers' handler threads close their ends

    rounds(1)  # warm up: lazily opened files, thread-local state
    before = open_fds()
    rounds(5)
    after = open_fds()
    assert after - before <= 1, (before, after)
