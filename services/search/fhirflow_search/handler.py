"""Lambda entry point of the search service (also what the local gateway calls)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths

from fhirflow.http import LazyApplication
from fhirflow.observability import api_handler, service_logger

logger = service_logger("search")
app = LazyApplication("fhirflow_search.app:build_app")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@api_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
