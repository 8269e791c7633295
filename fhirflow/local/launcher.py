"""Start an embedded server in a child process on a free loopback port (tests, bench, examples).

The child watches its parent and exits when the parent is gone, so a test run that is killed
never leaves a server behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    """Server processes (``serve --workers``); one unless a test is about several."""
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalServer:
        command = [
            sys.executable,
            "-m",
            "fhirflow.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--stop-with-parent",
            str(os.getpid()),
            "--workers",
            str(self.workers),
            *self.extra_args,
        ]
        # The server's output goes to a file, not a pipe: nobody reads a pipe while the server runs,
        # and a full pipe would block the server.
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"server-{self.port}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env={**os.environ, **self.env}, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fhirflow serve exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/metadata", timeout=2) as reply:  # noqa: S310 (loopback)
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fhirflow serve did not answer on {self.base_url} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, size: int = 4000) -> str:
        """The end of the server's output (for failure messages)."""
        try:
            return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")
        except (AttributeError, OSError):
            return ""

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()


def watch_parent(parent_pid: int) -> None:
    """Exit this process when ``parent_pid`` is gone (called in a daemon thread by ``serve``)."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            continue
