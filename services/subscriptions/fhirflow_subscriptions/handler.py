"""Lambda entry point of the subscriptions API ($status, $events), also what the local gateway calls."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from fhirflow.http import LazyApplication

logger = Logger(service="subscriptions")
app = LazyApplication("fhirflow_subscriptions.app:build_app")


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
