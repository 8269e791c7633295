"""Endpoint checks against server-side request forgery: the write-time URL checks and the
send-time resolution check (the resolver is replaced by a table: unit tests open no sockets)."""

from __future__ import annotations

import ipaddress

import pytest

from fhirflow.errors import BadRequest
from fhirflow_subscriptions import ssrf
from fhirflow_subscriptions.ssrf import (
    EndpointPolicy,
    EndpointRefused,
    EndpointUnresolvable,
    check_endpoint,
    resolve_checked,
)

STRICT = EndpointPolicy()
DEV = EndpointPolicy(allow_private=True, allow_http=True)

DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "v6.example.com": ["2606:4700::1111"],
    "internal.example.com": ["10.1.2.3"],
    "metadata.example.com": ["169.254.169.254"],
    "mixed.example.com": ["93.184.216.34", "192.168.0.10"],
    "rebind.example.com": ["::ffff:127.0.0.1"],
    "localhost": ["127.0.0.1", "::1"],
}


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str, port: int) -> list[ssrf.Address]:
        if host not in DNS:
            raise OSError("Name or service not known")
        return [ipaddress.ip_address(a) for a in DNS[host]]

    monkeypatch.setattr(ssrf, "resolve", resolve)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://[fe80::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://100.64.0.1/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://172.16.5.4:8443/hook",
        "https://192.168.1.1/hook",
        "https://localhost/hook",
        "https://api.localhost./hook",
    ],
)
def test_ip_literals_that_are_not_public_are_refused_at_write_time(url: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_endpoint(url, STRICT)
    assert caught.value.issues[0].expression == ("Subscription.channel.endpoint",)
    assert "not public" in caught.value.diagnostics or "loopback name" in caught.value.diagnostics
    check_endpoint(url, EndpointPolicy(allow_private=True))  # allowed by the setting


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/hook", "https"),
        ("ftp://hooks.example.com/hook", "absolute https URL"),
        ("/relative/hook", "absolute https URL"),
        ("hooks.example.com/hook", "absolute https URL"),
        ("https:///hook", "no host"),
        ("https://user:pw@hooks.example.com/hook", "credentials"),
        ("https://hooks.example.com:99999/hook", "port"),
        ("https://hooks.example.com:0/hook", "port"),
        ("https://hooks.example.com/a b", "whitespace"),
        ("https://hooks.example.com/a\r\nX-Injected: 1", "whitespace"),
        ("https://hooks.example.com/" + "a" * 3000, "longer"),
        ("https://hööks.example.com/hook", "ASCII"),
        ("https://hooks.example.com/caf\u00e9", "ASCII"),
    ],
)
def test_malformed_or_insecure_endpoints_are_refused_naming_the_element(url: str, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_endpoint(url, STRICT, expression="Subscription.channel.endpoint")
    assert reason in caught.value.diagnostics
    assert caught.value.issues[0].expression == ("Subscription.channel.endpoint",)
    assert "pw" not in caught.value.diagnostics


def test_plain_http_needs_the_setting_and_then_reaches_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadRequest, match="https"):
        check_endpoint("http://127.0.0.1:8080/hook", STRICT)
    http_only = EndpointPolicy(allow_http=True)
    check_endpoint("http://127.0.0.1:8080/hook", http_only)
    check_endpoint("http://localhost:8080/hook", http_only)
    check_endpoint("http://[::1]:8080/hook", http_only)
    for url in ("http://hooks.example.com/hook", "http://10.0.0.1/hook"):
        with pytest.raises(BadRequest, match="loopback"):
            check_endpoint(url, DEV)
    # and at send time: a "loopback" name whose answer is not loopback is refused
    monkeypatch.setitem(DNS, "evil-localhost", ["93.184.216.34"])
    with pytest.raises(EndpointRefused):
        resolve_checked("evil-localhost", 80, DEV, scheme="http")


def test_the_allow_list_is_matched_against_the_whole_url() -> None:
    policy = EndpointPolicy(allow_list=("https://hooks.example.com/*", "https://*.partner.example/fhir/*"))
    check_endpoint("https://hooks.example.com/tenant-a", policy)
    check_endpoint("https://api.partner.example/fhir/notify", policy)
    with pytest.raises(BadRequest, match="allowed endpoint patterns"):
        check_endpoint("https://hooks.example.com.evil.test/x", policy)
    with pytest.raises(BadRequest, match="allowed endpoint patterns"):
        check_endpoint("https://api.partner.example/other", policy)


def test_public_names_resolve_to_their_addresses() -> None:
    assert resolve_checked("hooks.example.com", 443, STRICT) == [ipaddress.ip_address("93.184.216.34")]
    assert resolve_checked("v6.example.com", 443, STRICT) == [ipaddress.ip_address("2606:4700::1111")]
    assert resolve_checked("8.8.8.8", 443, STRICT) == [ipaddress.ip_address("8.8.8.8")]


@pytest.mark.parametrize(
    "host",
    [
        "internal.example.com",
        "metadata.example.com",
        "mixed.example.com",
        "rebind.example.com",
        "localhost",
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "::1",
        "fd00::1",
    ],
)
def test_a_host_with_any_private_address_is_refused_at_send_time(host: str) -> None:
    with pytest.raises(EndpointRefused):
        resolve_checked(host, 443, STRICT)
    assert resolve_checked(host, 443, EndpointPolicy(allow_private=True))


def test_a_name_that_does_not_resolve_is_a_retryable_failure() -> None:
    with pytest.raises(EndpointUnresolvable):
        resolve_checked("nowhere.example.com", 443, STRICT)


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("93.184.216.34", False),
        ("2606:4700::1111", False),
        ("::ffff:93.184.216.34", False),
        ("127.0.0.53", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:169.254.169.254", True),
        ("2002:a00:1::", True),  # 6to4 wrapping 10.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 wrapping 169.254.169.254
        ("::a00:1", True),  # IPv4-compatible 10.0.0.1
        ("::", True),
        ("ff02::1", True),
        ("198.18.0.1", True),
        ("255.255.255.255", True),
    ],
)
def test_blocked_addresses_include_the_ipv6_forms_of_private_ipv4(address: str, blocked: bool) -> None:
    assert ssrf.is_blocked(ipaddress.ip_address(address)) is blocked
