"""API Gateway REST's rules in the local gateway (issue 13, "Proving it offline").

``fhirflow serve --api-gateway-rules`` (or ``FHIRFLOW_LOCAL_GATEWAY_MODE=apigateway``) makes the
local gateway hand the Lambda handlers what API Gateway and Lambda would, and refuse what they
would refuse, so that the e2e tests see AWS's limits on one machine:

- every request body base64-encoded (``isBase64Encoded``), because the stack declares ``*/*`` a
  binary media type (infra/fhirflow_infra/api.py);
- a request body over 10 MB: ``413`` from API Gateway itself (``{"message": ...}``, no OperationOutcome);
- an event over Lambda's 6 MB synchronous invocation payload (6,291,456 bytes; base64 makes a
  body a third larger): the invocation is refused, ``413`` as well;
- a proxy result over Lambda's 6 MB response payload (6,291,556 bytes): ``502``;
- an integration that runs over 29 s: ``504`` (the handler goes on running, as a Lambda does).

The gateway's own answers are API Gateway's ``{"message": ...}`` JSON, which is what a client of
the deployed stack sees when these limits are hit, not the server's OperationOutcomes.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fhirflow import jsonio

MODE_ENV = "FHIRFLOW_LOCAL_GATEWAY_MODE"
TIMEOUT_ENV = "FHIRFLOW_LOCAL_GATEWAY_TIMEOUT_SECONDS"
"""Overrides the 29 s, so that a test can reach the timeout without waiting half a minute."""

REQUEST_BODY_LIMIT = 10 * 1024 * 1024
"""API Gateway REST's payload quota (10 MB)."""
LAMBDA_REQUEST_LIMIT = 6_291_456
"""Lambda's synchronous invocation request payload (the whole event, as JSON)."""
LAMBDA_RESPONSE_LIMIT = 6_291_556
"""Lambda's synchronous invocation response payload (the proxy result, as JSON)."""
INTEGRATION_TIMEOUT = 29.0
"""API Gateway REST's default (and, without a quota increase, maximum) integration timeout."""


def gateway_answer(status: int, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "x-amzn-ErrorType": _ERROR_TYPES.get(status, "")},
        "body": jsonio.dumps({"message": message}).decode(),
    }


_ERROR_TYPES = {413: "RequestEntityTooLargeException", 502: "InternalServerErrorException", 504: "IntegrationTimeout"}

REQUEST_TOO_LONG = 413, "Request Too Long"
INTERNAL_ERROR = 502, "Internal server error"
TIMED_OUT = 504, "Endpoint request timed out"


@dataclass
class ApiGatewayRules:
    timeout: float = INTEGRATION_TIMEOUT
    threads: int = 8
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> ApiGatewayRules | None:
        if os.environ.get(MODE_ENV, "").lower() != "apigateway":
            return None
        raw = os.environ.get(TIMEOUT_ENV, "")
        return cls(timeout=float(raw) if raw else INTEGRATION_TIMEOUT)

    def request_too_long(self) -> dict[str, Any]:
        return gateway_answer(*REQUEST_TOO_LONG)

    async def invoke(self, handler: Any, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """One Lambda invocation as API Gateway makes it: payload limits both ways, and the
        integration timeout on the wait."""
        if len(jsonio.dumps(event)) > LAMBDA_REQUEST_LIMIT:
            return gateway_answer(*REQUEST_TOO_LONG)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fhirflow-lambda")
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._pool, handler, event, context)
        try:
            result: dict[str, Any] = await asyncio.wait_for(asyncio.shield(call), self.timeout)
        except TimeoutError:
            return gateway_answer(*TIMED_OUT)
        if len(jsonio.dumps(result)) > LAMBDA_RESPONSE_LIMIT:
            return gateway_answer(*INTERNAL_ERROR)
        return result
