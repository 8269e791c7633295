"""boto3 clients with the project's timeouts and retry policy, and SDK errors → FhirError."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from fhirflow.errors import ServiceUnavailable

# Standard mode retries throttling and 5xx with backoff inside the SDK; what still fails after
# that is reported to the client as 503 + Retry-After. Timeouts stay well inside API Gateway's 29 s.
_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=3,
    read_timeout=10,
    tcp_keepalive=True,
    max_pool_connections=32,
)

RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "SlowDown",
        "TransactionInProgressException",
        "TransactionConflictException",
    }
)


def single_attempt(*, read_timeout: float, connect_timeout: float = 3) -> Config:
    """For a call that must not run twice (it starts work that is not idempotent): no SDK
    retries at all, and a read timeout longer than the work may last, so that the answer, not
    a timeout, says how it ended."""
    return _CONFIG.merge(
        Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout, connect_timeout=connect_timeout)
    )


def client(
    service: str, *, endpoint_url: str | None = None, region: str | None = None, config: Config | None = None
) -> Any:
    """A boto3 client; ``endpoint_url`` points it at DynamoDB Local or another stand-in; ``config``
    replaces the project's timeouts and retries (:func:`single_attempt`)."""
    if endpoint_url and not region:
        region = "us-east-1"  # local stand-ins ignore the region, but the SDK needs one
    factory: Any = boto3.client  # typed per service name in the stubs; the callers name the service
    return factory(service, endpoint_url=endpoint_url, region_name=region, config=config or _CONFIG)


class LazyClient:
    """A boto3 client built on its first use, standing in for it meanwhile (attribute access
    passes through to the real client once built).

    Every function builds all of its adapters at its first request, but most first requests use
    only some of them (a search reads the catalog and the index, never the blob bucket; an export
    kick-off refused for its type touches neither the job table nor the queue), and creating a
    boto3 client is a large part of a Lambda cold start (issue 13). A client the request does need
    is still created within that request."""

    def __init__(self, service: str, *, endpoint_url: str | None = None, region: str | None = None) -> None:
        self._service = service
        self._endpoint_url = endpoint_url
        self._region = region
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the real client exists yet."""
        return self._client is not None

    def real(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = client(self._service, endpoint_url=self._endpoint_url, region=self._region)
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def lazy_client(service: str, *, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """:func:`client` with the project's configuration, built on first use (:class:`LazyClient`)."""
    return LazyClient(service, endpoint_url=endpoint_url, region=region)


PRESIGNING = Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
"""Presigned S3 URLs: SigV4 (S3 refuses other signatures for objects encrypted with a KMS key, and
boto3 signs with SigV2 in us-east-1 unless told), virtual-hosted."""


def s3_presigner(*, region: str | None, endpoint_url: str | None = None) -> Any:
    """The S3 client that signs every presigned URL fhirflow hands out (export files, Binary).

    Outside a stand-in it names the regional endpoint itself: boto3 otherwise presigns for the
    global ``s3.amazonaws.com`` host, which redirects requests for buckets in other regions (and a
    redirected SigV4 URL no longer matches its signature)."""
    if endpoint_url is None and region:
        suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        endpoint_url = f"https://s3.{region}.{suffix}"
    return client("s3", endpoint_url=endpoint_url, region=region, config=_CONFIG.merge(PRESIGNING))


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Throttling, 5xx and lost connections → 503 with Retry-After (the client may retry);
    anything else propagates (a 500 that reveals nothing)."""
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code in RETRYABLE_CODES:
            raise ServiceUnavailable(f"{what} is busy ({code}); retry shortly", headers={"Retry-After": "1"}) from exc
        raise
    except (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError) as exc:
        raise ServiceUnavailable(f"{what} is unreachable; retry shortly", headers={"Retry-After": "1"}) from exc
