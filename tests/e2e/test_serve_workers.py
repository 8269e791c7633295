"""``fhirflow serve --workers N``: connections are dealt evenly to the worker processes, a dead
worker is replaced, and the workers stop with the server.

Which process holds a connection is read from ``/proc`` (the server end's socket inode in
``/proc/net/tcp`` and in each worker's file descriptors), so these tests run on Linux only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fhirflow.local.launcher import LocalServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def workers(server: LocalServer) -> list[int]:
    """The server's worker processes (the children that run the gateway)."""
    assert server.process is not None
    return [pid for pid in children(server.process.pid) if _is_worker(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _is_worker(pid: int) -> bool:
    """A spawned multiprocessing child other than the resource tracker (a zombie has no command line)."""
    line = _cmdline(pid)
    return "multiprocessing.spawn" in line and "resource_tracker" not in line


def server_sockets(port: int) -> set[str]:
    """Socket inodes of the established connections whose local end is ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def connections_by_worker(server: LocalServer) -> dict[int, int]:
    inodes = server_sockets(server.port)
    counts = {}
    for pid in workers(server):
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held += 1
        counts[pid] = held
    return counts


def open_clients(server: LocalServer, count: int) -> list[httpx.Client]:
    """``count`` keep-alive clients, each with one connection open (all connected at once)."""
    clients = [httpx.Client(base_url=server.base_url, timeout=30) for _ in range(count)]
    threads = [threading.Thread(target=c.get, args=("/metadata",)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(data_dir=tmp_path, workers=2) as server:
        wait_for(lambda: len(workers(server)) == 2)
        yield server


def test_connections_opened_together_are_split_evenly(two_workers: LocalServer) -> None:
    for _ in range(3):
        clients = open_clients(two_workers, 4)
        try:
            assert sorted(connections_by_worker(two_workers).values()) == [2, 2]
        finally:
            for client in clients:
                client.close()
        wait_for(lambda: sum(connections_by_worker(two_workers).values()) == 0)


def test_a_closed_connection_frees_its_worker(two_workers: LocalServer) -> None:
    first, second = open_clients(two_workers, 2)
    try:
        by_worker = connections_by_worker(two_workers)
        assert sorted(by_worker.values()) == [1, 1]
        first.close()
        wait_for(lambda: sorted(connections_by_worker(two_workers).values()) == [0, 1])
        time.sleep(0.3)  # the worker's report of the close reaches the supervisor
        (third,) = open_clients(two_workers, 1)
        try:
            assert sorted(connections_by_worker(two_workers).values()) == [1, 1]
        finally:
            third.close()
    finally:
        second.close()


def test_a_dead_worker_is_replaced(two_workers: LocalServer) -> None:
    victim, survivor = workers(two_workers)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in workers(two_workers) and len(workers(two_workers)) == 2)
    wait_for(lambda: httpx.get(f"{two_workers.base_url}/metadata", timeout=5).status_code == 200)
    clients = open_clients(two_workers, 2)
    try:
        by_worker = connections_by_worker(two_workers)
        assert survivor in by_worker
        assert sorted(by_worker.values()) == [1, 1]
    finally:
        for client in clients:
            client.close()


def test_the_workers_stop_with_the_server(tmp_path: Path) -> None:
    server = LocalServer(data_dir=tmp_path, workers=2).start()
    wait_for(lambda: len(workers(server)) == 2)
    pids = workers(server)
    server.stop()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), timeout=20)
