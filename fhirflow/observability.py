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
- **Traces**: :mod:`fhirflow.tracing`, loaded only where tracing is on.

Nothing is logged about a request's content: application logs carry structured keys (type, id,
version, tenant, request id) and the audit record (``fhirflow.authz.audit``), never a body.
"""

from __future__ import annotations

import logging
import os

from aws_lambda_powertools import Logger

APPLICATION_LOGGER = "fhirflow"
"""The parent of every application logger (``fhirflow.audit``, ``fhirflow.http``...)."""
_service = "fhirflow"
"""The function's service name (:func:`service_logger`)."""


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
