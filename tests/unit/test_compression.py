"""fhirflow.compression: which answers are compressed, what Accept-Encoding allows, and Vary."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from fhirflow import compression
from fhirflow.http import Application
from fhirflow.model import FhirRequest, FhirResponse

EVENTS = Path(__file__).resolve().parents[1] / "events"


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("*", True),
        ("GZIP", True),
        ("x-gzip", True),
        (None, False),
        ("", False),
        ("identity", False),
        ("br", False),
        ("gzip;q=0", False),
        ("*, gzip;q=0", False),
        ("*;q=0", False),
        ("gzip;q=oops", False),
    ],
)
def test_accept_encoding_allows_gzip(header: str | None, accepted: bool) -> None:
    assert compression.accepts_gzip(header) is accepted


@pytest.mark.parametrize(
    ("content_type", "compressible"),
    [
        ("application/fhir+json; charset=utf-8", True),
        ("application/json", True),
        ("application/fhir+ndjson", True),
        ("application/ndjson", True),
        ("text/html; charset=utf-8", True),
        ("image/svg+xml", True),
        ("image/png", False),
        ("application/pdf", False),
        ("application/octet-stream", False),
        ("application/gzip", False),
        (None, False),
    ],
)
def test_only_text_types_are_compressible(content_type: str | None, compressible: bool) -> None:
    assert compression.is_compressible(content_type) is compressible


def test_vary_keeps_other_fields_and_names_accept_encoding_once() -> None:
    once = compression.with_vary({"vary": "Origin", "ETag": 'W/"1"'})
    assert once == {"vary": "Origin, Accept-Encoding", "ETag": 'W/"1"'}
    assert compression.with_vary(once) == once
    assert compression.with_vary({})["Vary"] == "Accept-Encoding"


def test_gzip_bytes_round_trips() -> None:
    payload = b'{"resourceType":"Bundle"}' * 100
    packed = compression.gzip_bytes(payload)
    assert packed[:2] == b"\x1f\x8b"
    assert len(packed) < len(payload)
    assert gzip.decompress(packed) == payload


def test_lambda_answers_say_they_vary_by_accept_encoding() -> None:
    """In AWS, API Gateway compresses (minimumCompressionSize) without a Vary; the Lambda's answer carries it."""
    event: dict[str, Any] = json.loads((EVENTS / "apigw_rest_get.json").read_text())

    def read(request: FhirRequest) -> FhirResponse:
        return FhirResponse(status=200, resource={"resourceType": "Patient", "id": "pat-123"})

    result = Application({("GET", "/{type}/{id}"): read}).resolve(event)
    assert result["statusCode"] == 200
    assert "Accept-Encoding" in result["headers"]["Vary"]
