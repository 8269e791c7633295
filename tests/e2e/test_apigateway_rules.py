"""The local gateway in API Gateway rules mode (``fhirflow serve --api-gateway-rules``): API
Gateway REST's and Lambda's limits as a client of the deployed stack meets them, over real HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from fhirflow.local.launcher import LocalServer

FHIR_JSON = "application/fhir+json"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data_dir = tmp_path_factory.mktemp("apigateway")
    env = {"FHIRFLOW_BINARY_DIRECT": "true"}
    with (
        LocalServer(data_dir=data_dir, extra_args=("--api-gateway-rules",), env=env) as server,
        httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=120) as http,
    ):
        yield http


def test_requests_reach_the_handlers_base64_encoded_and_are_answered(gateway: httpx.Client) -> None:
    created = gateway.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Zoë"}]})
    assert created.status_code == 201, created.text
    read = gateway.get(f"/Patient/{created.json()['id']}")
    assert read.json()["name"] == [{"family": "Zoë"}]
    raw = os.urandom(1000)
    binary = gateway.post("/Binary", content=raw, headers={"Content-Type": "application/octet-stream"})
    assert binary.status_code == 201
    assert gateway.get(f"/Binary/{binary.json()['id']}", headers={"Accept": "*/*"}).content == raw


def test_a_body_over_ten_megabytes_is_api_gateways_413(gateway: httpx.Client) -> None:
    refused = gateway.post("/Binary", content=b"x" * (10 * MB + 1), headers={"Content-Type": "text/plain"})
    assert refused.status_code == 413
    assert refused.json() == {"message": "Request Too Long"}


def test_a_body_that_makes_the_event_over_six_megabytes_is_a_413(gateway: httpx.Client) -> None:
    # 5 MB is under API Gateway's 10 MB and the server's own 16 MiB, but base64 makes it 6.7 MB.
    refused = gateway.post("/Binary", content=b"x" * (5 * MB), headers={"Content-Type": "text/plain"})
    assert refused.status_code == 413
    assert refused.json() == {"message": "Request Too Long"}
    fits = gateway.post("/Binary", content=b"x" * (4 * MB), headers={"Content-Type": "text/plain"})
    assert fits.status_code == 201


def test_an_answer_over_six_megabytes_is_a_502(gateway: httpx.Client) -> None:
    id_ = uuid.uuid4().hex
    for _ in range(2):
        written = gateway.put(f"/Binary/{id_}", content=os.urandom(3 * MB), headers={"Content-Type": "image/png"})
        assert written.status_code in (200, 201)
    assert gateway.get(f"/Binary/{id_}", headers={"Accept": "image/png"}).status_code == 200
    history = gateway.get(f"/Binary/{id_}/_history")  # two 4 MB base64 datas: over Lambda's 6 MB
    assert history.status_code == 502
    assert history.json() == {"message": "Internal server error"}


def test_a_fifty_megabyte_binary_goes_around_the_gateways_limits_by_signed_urls(gateway: httpx.Client) -> None:
    content = os.urandom(50 * MB)
    through_api = gateway.post("/Binary", content=content, headers={"Content-Type": "video/mp4"})
    assert through_api.status_code == 413
    created = gateway.post("/Binary", json={"resourceType": "Binary", "contentType": "video/mp4"})
    assert httpx.put(created.json()["presignedPutUrl"], content=content, timeout=120).status_code == 200
    read = gateway.get(f"/Binary/{created.json()['id']}", headers={"Accept": "video/mp4"}, follow_redirects=True)
    assert read.status_code == 200
    assert read.content == content


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The 29 s integration timeout, shortened so that the test need not wait it out."""
    env = {"FHIRFLOW_LOCAL_GATEWAY_TIMEOUT_SECONDS": "0.1"}  # a 3,000-entry transaction takes longer
    data_dir = tmp_path_factory.mktemp("apigateway-timeout")
    with (
        LocalServer(data_dir=data_dir, extra_args=("--api-gateway-rules",), env=env) as server,
        httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=120) as http,
    ):
        yield http


def test_an_integration_over_the_timeout_is_a_504(impatient: httpx.Client) -> None:
    entries = [
        {
            "resource": {"resourceType": "Patient", "name": [{"family": f"P{i}"}]},
            "request": {"method": "POST", "url": "Patient"},
        }
        for i in range(3000)
    ]
    slow = impatient.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert slow.status_code == 504
    assert slow.json() == {"message": "Endpoint request timed out"}
