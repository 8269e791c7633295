"""One webhook request, sent safely: the HTTP client of the rest-hook channel.

Standard Webhooks practice (https://www.standardwebhooks.com/) and the SSRF rules of ``ssrf.py``:

* the connection goes to the address :func:`ssrf.resolve_checked` approved (pinned: no second DNS
  lookup that a rebinding attacker could answer differently), while TLS still sends the host name
  (SNI) and verifies the certificate against it;
* redirects are never followed (a 3xx is a failed attempt: a redirect could point anywhere,
  including a private address);
* only 2xx is success; 410 Gone means the endpoint is gone for good; ``Retry-After`` on 429/503 is
  reported for the dispatcher to honour;
* the name lookup is bounded by ``timeout``, and one deadline covers connect, TLS, request and
  response headers, so an endpoint that never answers, or answers a byte at a time, holds a worker
  for at most about twice ``timeout`` seconds.

Only the standard library: ``http.client`` lets the connection be made to a chosen address, and
the deliverer Lambda stays free of another dependency.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fhirflow.delivery_ports import Attempt, Outcome
from fhirflow_subscriptions.signing import signature_headers
from fhirflow_subscriptions.ssrf import (
    Address,
    EndpointPolicy,
    EndpointRefused,
    EndpointUnresolvable,
    checked_target,
)

__all__ = ["Attempt", "Outgoing", "send"]

USER_AGENT = "fhirflow-webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024
# Headers the sender owns: a channel.header of one of these names is not sent.
_RESERVED = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "user-agent",
    }
)


@dataclass(frozen=True)
class Outgoing:
    """Everything one attempt needs; built by the service from the queued job and the subscription."""

    method: str
    url: str
    headers: Mapping[str, str]
    """``channel.header`` values and ``Content-Type`` (when there is a body)."""
    body: bytes
    message_id: str
    """The ``webhook-id``: stable across retries."""
    secrets: Sequence[str] = field(default=())
    timeout: float = 10.0


class _Deadline:
    """Closes the connection's socket when time is up: a socket timeout alone bounds each read,
    not the whole exchange, and a drip-feeding endpoint could hold a worker for ever."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _connect(addresses: Sequence[Address], port: int, timeout: float, deadline: _Deadline) -> socket.socket:
    """A TCP connection to the first checked address that answers."""
    error: OSError | None = None
    for address in addresses:
        if deadline.expired:
            break
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        deadline.watch(sock)
        sock.settimeout(timeout)
        try:
            sock.connect((str(address), port))
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or TimeoutError("connect timed out")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, *, sock: socket.socket, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._pinned = sock

    def connect(self) -> None:
        self.sock = self._pinned


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, sock: socket.socket, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._pinned = sock
        self._tls = context

    def connect(self) -> None:
        # SNI and certificate verification use the URL's host name, not the pinned address.
        self.sock = self._tls.wrap_socket(self._pinned, server_hostname=self.host)


def send(outgoing: Outgoing, policy: EndpointPolicy, *, tls: ssl.SSLContext | None = None) -> Attempt:
    """Make one attempt; never raises for anything the endpoint or the network does.

    ``tls`` overrides the default verifying context (tests trust their own CA with it)."""
    started = time.monotonic()

    def done(outcome: Outcome, status: int | None, error: str | None, retry_after: float | None = None) -> Attempt:
        return Attempt(outcome, status, (time.monotonic() - started) * 1000.0, error, retry_after)

    try:
        parts, host, port, addresses = checked_target(outgoing.url, policy, timeout=outgoing.timeout)
    except (ValueError, EndpointRefused) as exc:
        return done("refused", None, str(exc))
    except EndpointUnresolvable as exc:
        return done("retry", None, str(exc))

    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {name: value for name, value in outgoing.headers.items() if name.lower() not in _RESERVED}
    headers.update(signature_headers(outgoing.message_id, int(time.time()), outgoing.body, outgoing.secrets))
    headers["User-Agent"] = USER_AGENT
    headers["Content-Length"] = str(len(outgoing.body))

    deadline = _Deadline(outgoing.timeout)
    conn: http.client.HTTPConnection | None = None
    sock: socket.socket | None = None
    try:
        sock = _connect(addresses, port, outgoing.timeout, deadline)
        if parts.scheme.lower() == "https":
            context = tls or ssl.create_default_context()
            conn = _PinnedHTTPSConnection(host, port, sock=sock, timeout=outgoing.timeout, context=context)
        else:
            conn = _PinnedHTTPConnection(host, port, sock=sock, timeout=outgoing.timeout)
        conn.request(outgoing.method, target, body=outgoing.body, headers=headers)
        response = conn.getresponse()
        status = response.status
        retry_after = _retry_after(response.getheader("Retry-After")) if status in (429, 503) else None
        # The status decides; a body cut short after a 2xx must not turn a delivery into a retry.
        with contextlib.suppress(OSError, http.client.HTTPException):
            response.read(MAX_RESPONSE_BYTES)  # politeness; the body itself is never kept
    except ssl.SSLCertVerificationError:
        return done("retry", None, "TLS certificate verification failed")
    except ValueError:
        # http.client refuses header names/values with CR/LF and the like before sending.
        return done("refused", None, "a request header is not valid")
    except (OSError, http.client.HTTPException) as exc:
        if deadline.expired or isinstance(exc, TimeoutError):
            return done("retry", None, f"no response within {outgoing.timeout:g} s")
        if isinstance(exc, ConnectionRefusedError):
            return done("retry", None, "connection refused")
        return done("retry", None, f"connection failed ({type(exc).__name__})")
    finally:
        deadline.cancel()
        if conn is not None:
            conn.close()
        if sock is not None:
            sock.close()  # a no-op once TLS took it over or the connection closed it
    if 200 <= status < 300:
        return done("delivered", status, None)
    if status == 410:
        return done("gone", status, "the endpoint answered 410 Gone")
    if 300 <= status < 400:
        return done("retry", status, f"HTTP {status}: redirects are not followed")
    return done("retry", status, f"HTTP {status}", retry_after)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
