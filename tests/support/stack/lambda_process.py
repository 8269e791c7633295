"""One Lambda execution environment: ``python -m tests.support.stack.lambda_process HANDLER``.

Started with the environment the template gives the function (plus the local endpoints), it
imports the handler on its first invocation (a cold start, as Lambda does), then serves
invocations read as JSON lines from stdin, answering each on the file descriptor named by
``STACK_REPLY_FD`` (stdout and stderr are the function's logs) with the result or the error,
and every AWS and OpenSearch call the invocation made.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
import uuid
from typing import Any

CALLS: list[dict[str, Any]] = []


def _record_aws_calls() -> None:
    """Every botocore API call, whatever session or client made it."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def recording(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        call = {
            "kind": "aws",
            "service": self.meta.service_model.service_name,
            "prefix": self.meta.service_model.signing_name,
            "operation": operation_name,
            "params": _jsonable(api_params),
        }
        CALLS.append(call)
        try:
            return original(self, operation_name, api_params)
        except Exception as exc:
            call["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"  # for the test's failure messages
            raise

    BaseClient._make_api_call = recording  # type: ignore[method-assign]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)[:200]


def _use_the_opensearch_stand_in() -> None:
    from fhirflow.adapters.opensearch import client as opensearch_client
    from tests.support.stack.opensearch import ADDRESS_ENV, AUTHKEY_ENV, RecordingClient, connect

    address, authkey = os.environ.get(ADDRESS_ENV), os.environ.get(AUTHKEY_ENV)
    if not address or not authkey:
        return
    original = opensearch_client.client_factory

    def factory(settings: Any) -> Any:
        original(settings)  # the settings are checked as in AWS

        def build() -> Any:
            def record(method: str, path: str) -> None:
                CALLS.append({"kind": "opensearch", "method": method, "path": path})

            return RecordingClient(connect(address, authkey), record)

        return build

    opensearch_client.client_factory = factory  # type: ignore[assignment]


class Context:
    def __init__(self, function_name: str, timeout_ms: int) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._timeout_ms = timeout_ms

    def get_remaining_time_in_millis(self) -> int:
        return self._timeout_ms


def main() -> None:
    handler_path = sys.argv[1]
    reply = os.fdopen(int(os.environ["STACK_REPLY_FD"]), "w", buffering=1)
    _record_aws_calls()
    _use_the_opensearch_stand_in()
    module_name, function_name = handler_path.rsplit(".", 1)
    handler = None
    timeout_ms = int(os.environ.get("STACK_TIMEOUT_MS", "28000"))
    for line in sys.stdin:
        request = json.loads(line)
        CALLS.clear()
        answer: dict[str, Any]
        try:
            if handler is None:
                handler = getattr(importlib.import_module(module_name), function_name)
            context = Context(os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "fhirflow"), timeout_ms)
            answer = {"result": handler(request["event"], context)}
        except Exception as exc:  # reported as Lambda reports a function error
            answer = {"errorType": type(exc).__name__, "errorMessage": str(exc)[:2000], "trace": traceback.format_exc()}
        answer["calls"] = CALLS
        reply.write(json.dumps(answer, default=str) + "\n")


if __name__ == "__main__":
    main()
