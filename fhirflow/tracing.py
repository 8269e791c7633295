"""X-Ray tracing in the Lambdas, through Powertools Tracer, loaded only when it is on.

The X-Ray SDK costs more cold start than boto3 itself (DESIGN.md §8: 334 ms), so nothing here
imports it at import time. :func:`tracer` builds the Powertools Tracer on the first invocation
of a function where tracing is on (in Lambda, and ``POWERTOOLS_TRACE_DISABLED`` not true; the
stack sets it from its context flag ``fhirflow:tracing``), and patches botocore then: every
DynamoDB, S3, SQS, EventBridge, Step Functions and Secrets Manager call becomes a subsegment.
OpenSearch goes through urllib3, which the SDK would only see as anonymous HTTP: the OpenSearch
client wraps its requests in :func:`subsegment` (``fhirflow.adapters.opensearch.client``).

Off (the embedded mode, tests, or the flag), every function here is a no-op that imports nothing.
What a trace carries: the SDK's request descriptors (table, bucket, queue, operation) and the
annotations below, never a request or response body (``POWERTOOLS_TRACER_CAPTURE_RESPONSE`` is
false in the stack, and no body is ever passed here).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

PATCHED_MODULES = ("botocore",)
"""botocore: every AWS SDK call (DynamoDB, S3, SQS, Step Functions...) is a subsegment."""
_TRUE = frozenset({"1", "true", "yes", "on", "y"})
_tracer: Tracer | None = None
F = TypeVar("F", bound=Callable[..., Any])


def enabled() -> bool:
    """Tracing is on in Lambda (its runtime names the function) unless ``POWERTOOLS_TRACE_DISABLED`` says otherwise."""
    in_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    return in_lambda and os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() not in _TRUE


def tracer(service: str | None = None) -> Tracer | None:
    """The Powertools Tracer (botocore patched), built on first use, for ``service`` (else
    ``POWERTOOLS_SERVICE_NAME``); None when tracing is off."""
    global _tracer
    if _tracer is None and enabled():
        from aws_lambda_powertools import Tracer
        from aws_xray_sdk.core import patch

        _tracer = Tracer(service=service, auto_patch=False)
        # botocore's BaseClient is patched, so clients built before this call are traced too.
        patch(PATCHED_MODULES)
    return _tracer


@contextmanager
def subsegment(name: str, **annotations: str) -> Iterator[None]:
    """A subsegment around a call the SDK does not see (OpenSearch), with searchable annotations."""
    active = tracer()
    if active is None:
        yield
        return
    with active.provider.in_subsegment(name) as segment:
        for key, value in annotations.items():
            segment.put_annotation(key, value)
        yield


def traced_handler(function: F, *, service: str | None = None) -> F:
    """The handler's own subsegment (``## name``, annotations ColdStart and Service), when tracing is on."""
    import functools

    captured: list[Callable[..., Any]] = []

    @functools.wraps(function)
    def wrapper(event: Any, context: Any) -> Any:
        active = tracer(service)
        if active is None:
            return function(event, context)
        if not captured:
            captured.append(active.capture_lambda_handler(function, capture_response=False))
        return captured[0](event, context)

    return wrapper  # type: ignore[return-value]
