"""``fhirflow.http``: API Gateway REST proxy events in, proxy responses out (no sockets)."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fhirflow.errors import BadRequest, Gone, NotAcceptable
from fhirflow.http import Application, negotiate, prefer_return, request_from_event
from fhirflow.model import FhirRequest, FhirResponse

EVENTS = Path(__file__).resolve().parents[1] / "events"


@pytest.fixture
def get_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "apigw_rest_get.json").read_text())
    return event


def test_request_from_a_rest_proxy_get_event(get_event: dict[str, Any]) -> None:
    request = request_from_event(get_event)

    assert request.method == "GET"
    assert request.path == "/Patient/pat-123"
    assert request.route == "/{type}/{id}"
    assert request.path_params == {"type": "Patient", "id": "pat-123"}
    assert request.resource_type == "Patient"
    assert request.resource_id == "pat-123"
    assert request.body == b""
    assert request.request_id == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    assert request.source_ip == "203.0.113.7"
    assert request.tenant == "default"
    # The public base URL: Host, X-Forwarded-Proto and the stage (no custom domain in front).
    assert request.base_url == "https://a1b2c3d4e5.execute-api.eu-central-1.amazonaws.com/prod"


def test_headers_are_lower_case_and_repeated_ones_joined(get_event: dict[str, Any]) -> None:
    request = request_from_event(get_event)

    assert request.header("accept") == "application/fhir+json"
    assert request.header("if-none-match") == 'W/"2"'
    assert request.header("x-tag") == "alpha, beta"
    assert request.header("Accept") is None  # names are stored lower-case
    assert all(name == name.lower() for name in request.headers)


def test_query_keeps_every_value_in_order(get_event: dict[str, Any]) -> None:
    request = request_from_event(get_event)

    assert request.query == [
        ("_elements", "gender"),
        ("_elements", "name,birthDate"),
        ("_pretty", "true"),
        ("_summary", "data"),
    ]
    assert request.param("_elements") == "name,birthDate"  # the last value of a single-valued parameter
    assert request.param("_count") is None


def test_single_value_maps_are_used_without_multi_value_ones(get_event: dict[str, Any]) -> None:
    get_event["multiValueHeaders"] = None
    get_event["multiValueQueryStringParameters"] = None

    request = request_from_event(get_event)

    assert request.header("accept") == "application/fhir+json"
    assert request.param("_summary") == "data"
    assert ("_elements", "name,birthDate") in request.query


def test_base_url_override_wins(get_event: dict[str, Any]) -> None:
    request = request_from_event(get_event, base_url="https://fhir.example.org/r4")

    assert request.base_url == "https://fhir.example.org/r4"


def test_tenant_comes_from_the_path_and_is_not_a_path_parameter(get_event: dict[str, Any]) -> None:
    get_event["pathParameters"] = {"tenant": "acme", "type": "Patient", "id": "pat-123"}

    request = request_from_event(get_event)

    assert request.tenant == "acme"
    assert request.path_params == {"type": "Patient", "id": "pat-123"}


def _post(get_event: dict[str, Any], body: bytes, *, encoded: bool) -> dict[str, Any]:
    event = copy.deepcopy(get_event)
    event.update(httpMethod="POST", resource="/{type}", path="/Binary", pathParameters={"type": "Binary"})
    event["body"] = base64.b64encode(body).decode() if encoded else body.decode()
    event["isBase64Encoded"] = encoded
    return event


def test_base64_body_is_decoded(get_event: dict[str, Any]) -> None:
    content = bytes(range(256))

    request = request_from_event(_post(get_event, content, encoded=True))

    assert request.method == "POST"
    assert request.body == content


def test_text_body_is_utf8(get_event: dict[str, Any]) -> None:
    request = request_from_event(_post(get_event, '{"name": "Zoë"}'.encode(), encoded=False))

    assert request.body == '{"name": "Zoë"}'.encode()


def test_invalid_base64_body_is_bad_request(get_event: dict[str, Any]) -> None:
    event = _post(get_event, b"", encoded=True)
    event["body"] = "not base64 !!!"

    with pytest.raises(BadRequest):
        request_from_event(event)


def _request(headers: dict[str, str], query: list[tuple[str, str]] | None = None) -> FhirRequest:
    return FhirRequest(method="GET", path="/metadata", route="/metadata", headers=headers, query=query or [])


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        ("", [], "application/fhir+json"),
        ("application/json", [], "application/json"),
        ("*/*", [], "application/fhir+json"),
        ("application/fhir+xml;q=0.5, application/json", [], "application/json"),
        ("application/fhir+xml", [("_format", "json")], "application/fhir+json"),
        ("", [("_format", "application/json")], "application/json"),
    ],
)
def test_negotiate_json(accept: str, query: list[tuple[str, str]], expected: str) -> None:
    headers = {"accept": accept} if accept else {}
    assert negotiate(_request(headers, query)) == expected


@pytest.mark.parametrize(
    ("accept", "query"),
    [
        ("application/fhir+xml", []),
        ("application/fhir+json;q=0", []),
        ("", [("_format", "xml")]),
        ("", [("_format", "ttl")]),
    ],
)
def test_negotiate_refuses_what_it_cannot_produce(accept: str, query: list[tuple[str, str]]) -> None:
    headers = {"accept": accept} if accept else {}
    with pytest.raises(NotAcceptable):
        negotiate(_request(headers, query))


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        ("", "representation"),
        ("return=minimal", "minimal"),
        ("return=OperationOutcome", "OperationOutcome"),
        ('handling=strict, return="minimal"', "minimal"),
        ("return=everything", "representation"),
    ],
)
def test_prefer_return(prefer: str, expected: str) -> None:
    assert prefer_return(_request({"prefer": prefer} if prefer else {})) == expected


def test_application_renders_a_use_case_answer(get_event: dict[str, Any]) -> None:
    seen: list[FhirRequest] = []

    def read(request: FhirRequest) -> FhirResponse:
        seen.append(request)
        resource = {"resourceType": "Patient", "id": "pat-123", "text": {"status": "generated"}, "gender": "male"}
        return FhirResponse(status=200, resource=resource, headers={"ETag": 'W/"3"'}, subsettable=True)

    result = Application({("GET", "/{type}/{id}"): read}).resolve(get_event)

    assert seen[0].resource_id == "pat-123"
    assert result["statusCode"] == 200
    assert result["headers"]["ETag"] == 'W/"3"'
    assert result["headers"]["Content-Type"].startswith("application/fhir+json")
    assert "\n  " in result["body"]  # _pretty=true
    body = json.loads(result["body"])
    assert "text" not in body  # _summary=data
    assert any(tag["code"] == "SUBSETTED" for tag in body["meta"]["tag"])


def test_application_maps_a_fhir_error_to_an_operation_outcome(get_event: dict[str, Any]) -> None:
    def read(request: FhirRequest) -> FhirResponse:
        raise Gone("Patient/pat-123 was deleted", headers={"ETag": 'W/"4"'})

    result = Application({("GET", "/{type}/{id}"): read}).resolve(get_event)

    assert result["statusCode"] == 410
    assert result["headers"]["ETag"] == 'W/"4"'
    outcome = json.loads(result["body"])
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "deleted"
    assert outcome["issue"][0]["diagnostics"] == "Patient/pat-123 was deleted"


def test_application_hides_an_unexpected_failure(get_event: dict[str, Any]) -> None:
    def read(request: FhirRequest) -> FhirResponse:
        raise RuntimeError("database password is hunter2")

    result = Application({("GET", "/{type}/{id}"): read}).resolve(get_event)

    assert result["statusCode"] == 500
    assert "hunter2" not in result["body"]
    assert json.loads(result["body"])["issue"][0]["code"] == "exception"


def test_application_refuses_xml_before_calling_the_use_case(get_event: dict[str, Any]) -> None:
    get_event["multiValueHeaders"]["Accept"] = ["application/fhir+xml"]
    called: list[bool] = []

    def read(request: FhirRequest) -> FhirResponse:
        called.append(True)
        return FhirResponse(status=200, resource={"resourceType": "Patient", "id": "pat-123"})

    result = Application({("GET", "/{type}/{id}"): read}).resolve(get_event)

    assert result["statusCode"] == 406
    assert not called
