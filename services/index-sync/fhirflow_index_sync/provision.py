"""The search index at deploy: the handler of the stack's custom resource
(``fhirflow_infra.index_provision``), which CloudFormation invokes with its request and which
answers CloudFormation itself, at the request's presigned ``ResponseURL``
(AWS CloudFormation User Guide, "Custom resources": request and response objects).

A fresh stack's first search or conditional write would otherwise find no index (the first
indexed write creates it; until then a missing index reads as empty, which stays the fallback).

- Create: create the index with the search mapping unless it exists (a domain kept from an
  earlier stack keeps its index and documents: no-op).
- Update (the mapping or the index name changed): create it if missing, else put the current
  mapping on it; OpenSearch accepts compatible changes only, so an incompatible one fails the
  deploy instead of half-applying.
- Delete: nothing. The index holds what DynamoDB holds, rebuildable but costly; removing a stack
  (or replacing this resource) must not empty it.

Every request is answered, a failure included (CloudFormation would otherwise wait an hour).
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from aws_lambda_powertools import Logger

logger = Logger(service="index-provision")
RESPONSE_TIMEOUT_SECONDS = 20


def provision(event: dict[str, Any]) -> dict[str, Any]:
    """The work of one request: its physical id and data (no I/O on Delete)."""
    from fhirflow.runtime import opensearch_index
    from fhirflow.settings import Settings

    if event["RequestType"] == "Delete":
        return {"PhysicalResourceId": event["PhysicalResourceId"], "Data": {}}
    settings = Settings.from_env()
    created = opensearch_index(settings).provision(update_mapping=event["RequestType"] == "Update")
    return {"PhysicalResourceId": settings.opensearch_index, "Data": {"Created": "true" if created else "false"}}


@logger.inject_lambda_context(clear_state=True)
def on_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        outcome = {"Status": "SUCCESS", **provision(event)}
    except Exception as exc:  # answered as FAILED: the deploy stops and rolls back
        logger.exception("search index provisioning failed", extra={"request": event.get("RequestType")})
        outcome = {
            "Status": "FAILED",
            "Reason": f"{type(exc).__name__}: {str(exc)[:300]} (log stream {getattr(context, 'log_stream_name', '?')})",
            "PhysicalResourceId": event.get("PhysicalResourceId") or event["LogicalResourceId"],
        }
    response = {
        **outcome,
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
    }
    _answer(event["ResponseURL"], response)
    return response


def _answer(url: str, response: dict[str, Any]) -> None:
    """PUT the response to CloudFormation's presigned URL (an empty content type, as it is signed)."""
    body = json.dumps(response).encode()
    request = urllib.request.Request(  # noqa: S310 - CloudFormation's https URL, from its own request
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=RESPONSE_TIMEOUT_SECONDS) as answer:  # noqa: S310 - as above
        answer.read()
