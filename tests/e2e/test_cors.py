"""CORS over HTTP: a browser app on an allowed origin gets its preflight answered and may read the
answers (and their Location/ETag); other origins get no CORS headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.support import FHIR_JSON, patient

APP = "http://localhost:5173"


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    data_dir: Path = tmp_path_factory.mktemp("fhirflow-cors")
    with LocalServer(data_dir=data_dir, env={"FHIRFLOW_CORS_ORIGINS": APP}) as running:
        yield running


def test_a_preflight_from_the_app_is_answered(cors_server: LocalServer) -> None:
    reply = httpx.options(
        f"{cors_server.base_url}/Patient",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, prefer",
        },
    )
    assert reply.status_code == 204
    assert reply.headers["access-control-allow-origin"] == APP
    assert "POST" in reply.headers["access-control-allow-methods"]
    allowed = reply.headers["access-control-allow-headers"].lower()
    assert all(h in allowed for h in ("authorization", "content-type", "prefer"))


def test_a_preflight_from_another_origin_gets_no_permission(cors_server: LocalServer) -> None:
    reply = httpx.options(
        f"{cors_server.base_url}/Patient",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in reply.headers


def test_the_app_may_read_a_create_and_its_location(cors_server: LocalServer) -> None:
    with httpx.Client(base_url=cors_server.base_url, headers={"Content-Type": FHIR_JSON, "Origin": APP}) as http:
        created = http.post("/Patient", json=patient())
        assert created.status_code == 201
        assert created.headers["access-control-allow-origin"] == APP
        assert "Location" in created.headers["access-control-expose-headers"]
        missing = http.get("/Patient/does-not-exist")
        assert missing.status_code == 404
        assert missing.headers["access-control-allow-origin"] == APP


def test_the_shared_server_without_origins_sends_no_cors_headers(client: httpx.Client) -> None:
    reply = client.get("/metadata", headers={"Origin": APP})
    assert "access-control-allow-origin" not in reply.headers
    assert client.options("/Patient", headers={"Origin": APP}).status_code == 405
