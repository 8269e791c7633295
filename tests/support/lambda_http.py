"""Drive a service's Lambda application with API Gateway proxy events, as the gateway would."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from fhirflow.http import Application
from fhirflow.local.gateway import build_event
from fhirflow.routes import ROUTE_TABLE


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(
    app: Application,
    method: str,
    path: str,
    body: bytes | dict[str, Any] = b"",
    *,
    headers: dict[str, str] | None = None,
    query: str = "",
) -> Reply:
    if isinstance(body, dict):
        body = orjson.dumps(body)
    headers = {"host": "fhir.test", "content-type": "application/fhir+json", **(headers or {})}
    route, params = ROUTE_TABLE.match(method, path)
    scope = {
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "scheme": "http",
        "client": ("127.0.0.1", 50000),
    }
    result = app.resolve(build_event(scope, body, resource=route.pattern, path_params=params), None)
    raw = result.get("body") or ""
    payload = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    return Reply(
        int(result["statusCode"]), {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}, payload
    )
