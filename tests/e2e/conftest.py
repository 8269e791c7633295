"""The e2e harness: a real embedded server in a child process, driven over HTTP with httpx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fhirflow.local.launcher import LocalServer

FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with LocalServer(data_dir=tmp_path_factory.mktemp("fhirflow")) as running:
        yield running


@pytest.fixture
def client(server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=60) as http:
        yield http
