"""CORS (fhirflow.cors): which answers carry which headers, in the Lambda's Application."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirflow.cors import allowed_origin, parse_origins, preflight_headers
from fhirflow.errors import NotFound
from fhirflow.http import Application
from fhirflow.model import FhirRequest, FhirResponse

EVENTS = Path(__file__).resolve().parents[1] / "events"
APP = "https://app.example.org"


@pytest.fixture
def event() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / "apigw_rest_get.json").read_text())
    return loaded


def _with_origin(event: dict[str, Any], origin: str) -> dict[str, Any]:
    return {**event, "headers": {**(event.get("headers") or {}), "Origin": origin}}


def _read(request: FhirRequest) -> FhirResponse:
    return FhirResponse(resource={"resourceType": "Patient", "id": request.resource_id})


def _missing(request: FhirRequest) -> FhirResponse:
    raise NotFound("Patient/x is not known")


def test_origins_are_parsed_from_a_comma_separated_list() -> None:
    assert parse_origins(" https://a.example/ , http://localhost:3000,,") == (
        "https://a.example",
        "http://localhost:3000",
    )
    assert parse_origins("") == ()


def test_an_allowed_origin_may_read_the_answer_and_its_headers(event: dict[str, Any]) -> None:
    result = Application({("GET", "/{type}/{id}"): _read}, cors_origins=(APP,)).resolve(_with_origin(event, APP))
    assert result["statusCode"] == 200
    headers = result["headers"]
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Vary"] == "Origin, Accept-Encoding"  # Accept-Encoding: fhirflow.compression
    for exposed in ("Location", "ETag", "Content-Location", "X-Progress", "WWW-Authenticate"):
        assert exposed in headers["Access-Control-Expose-Headers"]


def test_errors_carry_the_headers_too(event: dict[str, Any]) -> None:
    # a browser app must be able to read the OperationOutcome of a 404 or a 401
    result = Application({("GET", "/{type}/{id}"): _missing}, cors_origins=(APP,)).resolve(_with_origin(event, APP))
    assert result["statusCode"] == 404
    assert result["headers"]["Access-Control-Allow-Origin"] == APP


def test_another_origin_gets_no_cors_headers(event: dict[str, Any]) -> None:
    result = Application({("GET", "/{type}/{id}"): _read}, cors_origins=(APP,)).resolve(
        _with_origin(event, "https://evil.example")
    )
    assert result["statusCode"] == 200
    assert not any(name.startswith("Access-Control-") for name in result["headers"])


def test_without_configured_origins_nothing_changes(event: dict[str, Any]) -> None:
    result = Application({("GET", "/{type}/{id}"): _read}).resolve(_with_origin(event, APP))
    assert not any(name.startswith("Access-Control-") for name in result["headers"])


def test_a_wildcard_allows_any_origin_without_vary(event: dict[str, Any]) -> None:
    result = Application({("GET", "/{type}/{id}"): _read}, cors_origins=("*",)).resolve(
        _with_origin(event, "http://localhost:5173")
    )
    assert result["headers"]["Access-Control-Allow-Origin"] == "*"
    assert "origin" not in result["headers"]["Vary"].lower()  # it varies by Accept-Encoding only


def test_preflight_headers() -> None:
    headers = preflight_headers((APP,), APP)
    assert headers is not None
    assert headers["Access-Control-Allow-Origin"] == APP
    assert "PATCH" in headers["Access-Control-Allow-Methods"]
    assert "If-Match" in headers["Access-Control-Allow-Headers"]
    assert preflight_headers((APP,), "https://evil.example") is None
    assert allowed_origin((), APP) is None
