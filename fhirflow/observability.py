"""Logs, metrics and traces of the Lambdas as AWS users expect them: Powertools throughout.

- **Logs**: :func:`service_logger` is a handler's Powertools Logger (service name per function).
  In Lambda it also takes over the ``fhirflow`` logger, so every application log of the kernel
  and the services (``logging.getLogger("fhirflow.<part>")``, loaded now or on the first
  invocation) is one Powertools JSON line carrying the same keys: ``service``, ``cold_start``,
  the function's request id, ``correlation_id`` (API Gateway's request id, set by the handler's
  ``inject_lambda_context(correlation_id_path=...)``) and ``xray_trace_id``. The embedded mode
  keeps the standard library's logging as the CLI configures it.
- **Metrics**: :func:`api_handler` and :func:`event_handler` wrap a handler in Powertools
  Metrics (EMF on stdout, flushed at the end of each invocation: no PutMetricData call, no
  grant): ``ColdStart`` for every function and, behind API Gateway, ``Requests`` and ``Latency``
  per interaction, resource type and status class (:func:`record_request`).
- **Traces**: the same wrappers open the handler's X-Ray subsegment and patch botocore
  (:mod:`fhirflow.tracing`), importing the X-Ray SDK on the first invocation and only where
  tracing is on.

Nothing is logged about a request's content: application logs carry structured keys (type, id,
version, tenant, request id) and the audit record (``fhirflow.authz.audit``), never a body.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger

from fhirflow.tracing import traced_handler

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics

APPLICATION_LOGGER = "fhirflow"
"""The parent of every application logger (``fhirflow.audit``, ``fhirflow.http``...)."""
F = TypeVar("F", bound=Callable[..., Any])
_service = "fhirflow"
"""The function's service name (:func:`service_logger`), its metrics' ``service`` dimension too."""


def in_lambda() -> bool:
    """True inside a Lambda execution environment (its runtime sets the function's name)."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def service_logger(service: str) -> Logger:
    """The function's Powertools Logger; in Lambda, the application loggers write through it too.

    The service name is the function's (``POWERTOOLS_SERVICE_NAME``, which the stack sets per
    function: ``bundle-prepare``, ``subscriptions-match``...), else ``service``."""
    global _service
    _service = os.environ.get("POWERTOOLS_SERVICE_NAME") or service
    logger = Logger(service=_service)
    if in_lambda():
        route_application_logs(logger)
    return logger


def route_application_logs(logger: Logger) -> None:
    """Send the ``fhirflow.*`` loggers' records through the Powertools handler (its formatter holds
    the correlation keys), and only there: Lambda's own root handler would write them a second time."""
    application = logging.getLogger(APPLICATION_LOGGER)
    handler = logger.registered_handler
    if handler not in application.handlers:
        application.handlers = [handler]
    application.setLevel(logger.log_level)
    application.propagate = False


# -- metrics ----------------------------------------------------------------------------------

DEFAULT_NAMESPACE = "fhirflow"
"""The CloudWatch namespace when ``POWERTOOLS_METRICS_NAMESPACE`` is unset (the stack sets it from
its context flag ``fhirflow:metricsNamespace``)."""
_metrics: Metrics | None = None
_wrapped: dict[Callable[..., Any], Callable[..., Any]] = {}


def metrics() -> Metrics:
    """The process's Powertools Metrics, imported on the first invocation (not at import time)."""
    global _metrics
    if _metrics is None:
        from aws_lambda_powertools import Metrics

        _metrics = Metrics(
            namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE, service=_service
        )
    return _metrics


def api_handler(function: F) -> F:
    """An API Gateway proxy handler, measured: ``Requests`` and ``Latency`` per interaction,
    resource type and status class, ``ColdStart``; one EMF line per invocation. Outside Lambda
    (the local gateway calls the same handlers) it is the handler itself."""
    return _instrument(function, api=True)


def event_handler(function: F) -> F:
    """A stream, queue, schedule or Step Functions handler, measured: ``ColdStart`` and, for a
    batch, ``Records`` (its size); one EMF line per invocation, in Lambda only."""
    return _instrument(function, api=False)


def _instrument(function: F, *, api: bool) -> F:
    @functools.wraps(function)
    def wrapper(event: Any, context: Any) -> Any:
        if not in_lambda():
            return function(event, context)
        instrumented = _wrapped.get(function)
        if instrumented is None:
            measured = traced_handler(_measured(function, api=api), service=_service)
            instrumented = _wrapped[function] = metrics().log_metrics(capture_cold_start_metric=True)(measured)
        return instrumented(event, context)

    return wrapper  # type: ignore[return-value]


def _measured(function: Callable[..., Any], *, api: bool) -> Callable[..., Any]:
    @functools.wraps(function)  # the trace's subsegment is named after the handler
    def measured(event: Any, context: Any) -> Any:
        started = time.perf_counter()
        status = 500  # what the client gets when the handler raises (API Gateway's 502 aside)
        try:
            result = function(event, context)
            if api and isinstance(result, Mapping):
                status = int(result.get("statusCode", 500))
            return result
        finally:
            if api:
                record_request(metrics(), event, status, (time.perf_counter() - started) * 1000)
            elif isinstance(event, Mapping) and isinstance(event.get("Records"), list):
                metrics().add_metric(name="Records", unit="Count", value=len(event["Records"]))

    return measured


def record_request(sink: Metrics, event: Mapping[str, Any], status: int, latency_ms: float) -> None:
    """``Requests`` (count) and ``Latency`` (ms) for one API request.

    Two dimension sets keep the number of custom metrics (what CloudWatch bills) small: service,
    interaction and status class (``2xx``...); service and resource type. The resource type is a
    dimension only when it is an R4 type (anything else is ``other``: a client must not be able to
    create metrics by requesting ``/Anything``); ``none`` for requests without one (``/metadata``).
    The request id is a property of the EMF line, searchable in Logs Insights, not a dimension.
    """
    from fhirflow.authz.audit import interaction_of
    from fhirflow.validation import is_resource_type

    method = str(event.get("httpMethod", "")).upper()
    interaction = interaction_of(method, str(event.get("resource", "")))
    requested = str((event.get("pathParameters") or {}).get("type") or "")
    resource_type = "none" if not requested else requested if is_resource_type(requested) else "other"
    sink.add_dimension(name="interaction", value=interaction)
    sink.add_dimension(name="status_class", value=f"{status // 100}xx")
    sink.add_dimensions(service=_service, resource_type=resource_type)
    sink.add_metric(name="Requests", unit="Count", value=1)
    sink.add_metric(name="Latency", unit="Milliseconds", value=round(latency_ms, 3))
    request_id = (event.get("requestContext") or {}).get("requestId")
    if request_id:
        sink.add_metadata(key="request_id", value=str(request_id))
