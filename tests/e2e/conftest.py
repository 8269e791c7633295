"""The e2e harness: a real embedded server in a child process, driven over HTTP with httpx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import FHIR_JSON, SMALL_BODY_LIMIT


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """Two server processes on one data directory, as ``fhirflow serve`` runs on a multi-core
    machine: every e2e test that uses it also checks that the processes agree (read-your-writes,
    cursors, concurrency control across processes)."""
    with LocalServer(data_dir=tmp_path_factory.mktemp("fhirflow"), workers=2) as running:
        yield running


@pytest.fixture
def client(server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as http:
        yield http


@pytest.fixture
def bare_client(server: LocalServer) -> Iterator[httpx.Client]:
    """No default Content-Type and no Accept at all: what the server does when the client says nothing."""
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        del http.headers["accept"]
        yield http


@pytest.fixture(scope="session")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A second server whose body limit is tiny, for 413 (the limit API Gateway and Lambda impose in AWS)."""
    data_dir = tmp_path_factory.mktemp("fhirflow-small")
    with LocalServer(data_dir=data_dir, extra_args=("--max-body-bytes", str(SMALL_BODY_LIMIT))) as running:
        yield running


@pytest.fixture
def small_client(small_server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small_server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as http:
        yield http
