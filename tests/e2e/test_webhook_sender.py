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
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

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
    """``localhost`` resolves (through the real resolver) to loopback: refused over https unless allowed."""
    attempt = send(outgoing(f"https://localhost:{receiver.port}/"), EndpointPolicy())
    assert attempt.outcome == "refused"
    assert "resolves to a loopback" in (attempt.error or "")
    assert send(outgoing(f"http://localhost:{receiver.port}/"), HTTP_ONLY).outcome == "delivered"


def test_a_name_rebound_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setattr(ssrf, "resolve", lambda _h, _p: [ipaddress.ip_address("127.0.0.1")])
    attempt = send(outgoing(f"https://hooks.example.com:{receiver.port}/"), EndpointPolicy())
    assert attempt.outcome == "refused"
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
