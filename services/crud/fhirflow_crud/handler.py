"""Lambda entry point of the crud service (also what the local gateway calls)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from fhirflow.http import Application

logger = Logger(service="crud")
_app: Application | None = None


def app() -> Application:
    """Built on the first invocation, not at import: no I/O at import time."""
    global _app
    if _app is None:
        from fhirflow_crud.app import build_app

        _app = build_app()
    return _app


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app().resolve(event, context)
