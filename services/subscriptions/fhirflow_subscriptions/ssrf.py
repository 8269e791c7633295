"""Which webhook endpoints the server may call (server-side request forgery defences).

A subscription makes the server send requests to a URL its author chose, so without checks anyone
who may create a Subscription could make the server call the cloud metadata service
(169.254.169.254), an admin port on loopback or hosts on the private network. Two checks:

* :func:`check_endpoint`, at write time: scheme (``https``; plain ``http`` only to loopback and only
  when allowed, for development), no credentials in the URL, an IP literal must be public, and the
  optional allow-list of URL patterns. Failures are 400s naming the element.
* :func:`resolve_checked`, at every send: resolve the host and refuse if *any* address is not a
  public unicast one. The sender then connects to the address that was checked (see
  ``sender.py``), so a name that resolves differently a moment later (DNS rebinding) cannot move
  the request to another host.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import ipaddress
import socket
import threading
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from fhirflow.errors import BadRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048

# Written out rather than trusting ``is_global`` alone, whose tables differ between Python versions.
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this" network; 0.0.0.0 reaches loopback on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local: cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "fc00::/7",  # unique-local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


@dataclass(frozen=True)
class EndpointPolicy:
    """What a deployment allows (settings ``FHIRFLOW_SUBSCRIPTIONS_*``)."""

    allow_private: bool = False
    """Loopback, private, link-local, unique-local and multicast addresses allowed (tests, dev)."""
    allow_http: bool = False
    """Plain ``http`` allowed, and then only to loopback hosts (development)."""
    allow_list: tuple[str, ...] = ()
    """Endpoint patterns (``fnmatch`` on the whole URL); empty means any endpoint."""


class EndpointRefused(Exception):
    """The endpoint may not be called; the message names the rule, never the URL."""


class EndpointUnresolvable(Exception):
    """The host name did not resolve (perhaps for now: a delivery is retried)."""


def is_blocked(address: Address) -> bool:
    """True for every address that is not public unicast, including IPv6 forms that embed a
    private IPv4 address (IPv4-mapped, 6to4, NAT64, IPv4-compatible)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_blocked(embedded)
    if any(address in net for net in _BLOCKED_NETWORKS if net.version == address.version):
        return True
    return not address.is_global or address.is_multicast or address.is_unspecified


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (int(address) >> 32 == 0 and int(address) > 1):  # NAT64 or ::a.b.c.d
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal: the only hosts plain http may reach."""
    address = _literal(host)
    if address is None:
        name = host.lower().rstrip(".")
        return name in _LOOPBACK_NAMES or name.endswith(".localhost")  # RFC 6761 §6.3
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    return (embedded or address).is_loopback


def parse_endpoint(url: str) -> tuple[SplitResult, str, int]:
    """The parts of an absolute http(s) URL and its host and port; ValueError naming what is wrong."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"the endpoint is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError("the endpoint contains whitespace or control characters")
    if not url.isascii():
        # What goes on the wire is ASCII: a host in punycode, a path percent-encoded (RFC 3986).
        raise ValueError("the endpoint must be ASCII: punycode the host and percent-encode the path")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("the endpoint must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the endpoint must not carry credentials; send them with channel.header")
    host = parts.hostname
    if not host:
        raise ValueError("the endpoint has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("the endpoint's port is not a number from 1 to 65535") from exc
    if port == 0:
        raise ValueError("the endpoint's port is not a number from 1 to 65535")
    return parts, host, port or (443 if scheme == "https" else 80)


def check_endpoint(url: str, policy: EndpointPolicy, *, expression: str = "Subscription.channel.endpoint") -> None:
    """The write-time checks (syntax, scheme, IP literal, allow-list); BadRequest naming ``expression``.
    Host names are resolved only when sending: DNS answers change, and the send-time check is the
    one that counts."""
    try:
        _check(url, policy)
    except (ValueError, EndpointRefused) as exc:
        raise BadRequest(f"Endpoint not allowed: {exc}", expression=expression) from exc


def _check(url: str, policy: EndpointPolicy) -> tuple[SplitResult, str, int]:
    parts, host, port = parse_endpoint(url)
    if parts.scheme.lower() == "http":
        if not policy.allow_http:
            raise EndpointRefused("the endpoint must use https")
        if not is_loopback_host(host):
            raise EndpointRefused("plain http is allowed only to loopback hosts")
    address = _literal(host)
    if address is not None and is_blocked(address) and not _may_reach(address, parts.scheme.lower(), policy):
        raise EndpointRefused("the endpoint's address is loopback, private, link-local or otherwise not public")
    loopback = ipaddress.ip_address("127.0.0.1")
    if address is None and is_loopback_host(host) and not _may_reach(loopback, parts.scheme.lower(), policy):
        # Known before any lookup: localhost names resolve to loopback.
        raise EndpointRefused("the endpoint's host is a loopback name")
    if policy.allow_list and not any(fnmatch.fnmatchcase(url, pattern) for pattern in policy.allow_list):
        raise EndpointRefused("the endpoint matches none of the allowed endpoint patterns")
    return parts, host, port


def _may_reach(address: Address, scheme: str, policy: EndpointPolicy) -> bool:
    if policy.allow_private:
        return True
    # allow_http exists for a receiver on the developer's own machine: it reaches loopback only.
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    return scheme == "http" and policy.allow_http and (embedded or address).is_loopback


def resolve(host: str, port: int) -> list[Address]:
    """The host's addresses, in the resolver's order (the one place that asks DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


def resolve_checked(
    host: str, port: int, policy: EndpointPolicy, *, scheme: str = "https", timeout: float | None = None
) -> list[Address]:
    """Resolve ``host`` and refuse (EndpointRefused) if any address may not be reached under the
    policy: one private answer among public ones is enough to refuse, since the connection could
    be steered to it. EndpointUnresolvable when the name does not resolve (within ``timeout``)."""
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = _resolve_within(host, port, timeout)
        except concurrent.futures.TimeoutError as exc:  # (an OSError since Python 3.11: caught first)
            raise EndpointUnresolvable(f"the endpoint's host name did not resolve within {timeout:g} s") from exc
        except (OSError, UnicodeError) as exc:
            raise EndpointUnresolvable("the endpoint's host name did not resolve") from exc
        if not addresses:
            raise EndpointUnresolvable("the endpoint's host name did not resolve")
    for address in addresses:
        if is_blocked(address) and not _may_reach(address, scheme, policy):
            raise EndpointRefused("the endpoint's host resolves to a loopback, private or link-local address")
        if scheme == "http" and not is_loopback_host(str(address)):
            raise EndpointRefused("plain http is allowed only to loopback hosts")
    return addresses


def _resolve_within(host: str, port: int, timeout: float | None) -> list[Address]:
    """``resolve`` bounded in time. getaddrinfo cannot be interrupted, so a slow lookup runs on a
    small shared pool and the caller stops waiting at ``timeout``: a name server that never answers
    then costs a delivery worker the request timeout, as any other dead endpoint does."""
    if timeout is None:
        return resolve(host, port)
    return _lookup_pool().submit(resolve, host, port).result(timeout=timeout)


_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _lookup_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="webhook-dns")
        return _pool


def checked_target(
    url: str, policy: EndpointPolicy, *, timeout: float | None = None
) -> tuple[SplitResult, str, int, list[Address]]:
    """Everything the sender needs: the URL's parts, host, port and the checked addresses."""
    parts, host, port = _check(url, policy)
    return parts, host, port, resolve_checked(host, port, policy, scheme=parts.scheme.lower(), timeout=timeout)
