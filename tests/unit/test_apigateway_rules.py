"""API Gateway rules mode hands the handlers what API Gateway would: every body base64-encoded
(the stack's binary media type ``*/*``); without the mode, text bodies arrive as text."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fhirflow.local.apigateway_rules import ApiGatewayRules
from fhirflow.local.gateway import LocalGateway


def _events_seen(rules: ApiGatewayRules | None) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        return {"statusCode": 200, "headers": {}, "body": ""}

    gateway = LocalGateway(load_handler=lambda service: handler, api_gateway=rules, write_threads=0)
    scope = {"type": "http", "method": "POST", "path": "/Patient", "query_string": b"", "headers": []}
    messages = [{"type": "http.request", "body": b'{"resourceType":"Patient"}', "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        return None

    asyncio.run(gateway(scope, receive, send))
    return seen


def test_every_body_is_base64_encoded_under_api_gateway_rules() -> None:
    (event,) = _events_seen(ApiGatewayRules())
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b'{"resourceType":"Patient"}'


def test_without_the_rules_a_text_body_arrives_as_text() -> None:
    (event,) = _events_seen(None)
    assert event["isBase64Encoded"] is False
    assert event["body"] == '{"resourceType":"Patient"}'
