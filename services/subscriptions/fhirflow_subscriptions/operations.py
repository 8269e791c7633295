"""``$status`` and ``$events`` (Backport IG 1.1.0: OperationDefinition backport-subscription-status
and backport-subscription-events).

- ``GET [base]/Subscription/{id}/$status`` and ``GET [base]/Subscription/$status[?id=a,b][&status=...]``
  (type level: the ones named, or every subscription of the tenant the caller may read, whatever
  its status, optionally only those with one of the ``status`` values) answer a ``searchset`` Bundle
  of SubscriptionStatus ``Parameters`` (type ``query-status``), with the last error and the recent
  delivery attempts (time, HTTP status, latency, outcome; never bodies).
- ``GET [base]/Subscription/{id}/$events?eventsSinceNumber=&eventsUntilNumber=&content=`` replays
  events from the per-subscription event log as a ``history`` notification Bundle (type
  ``query-event``); events older than the log's retention are gone and simply absent.

Both read the subscription first, under the caller's read permission: a caller who may not read
it learns nothing (404, as for a read).
"""

from __future__ import annotations

import statistics
import uuid
from typing import Any

from fhirflow import jsonio, timefmt
from fhirflow.errors import BadRequest, NotFound
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.runtime import Dependencies
from fhirflow.subscription_ports import SubscriptionMetrics
from fhirflow_subscriptions.hook import spec_of, state_store
from fhirflow_subscriptions.notifications import NotificationEvent, notification_bundle, status_parameters
from fhirflow_subscriptions.spec import CONTENTS

METRICS_EXTENSION = "https://fhirflow.dev/fhir/StructureDefinition/subscription-metrics"
MAX_STATUS = 1000
"""Subscriptions one type-level ``$status`` reports at most."""
STATUSES = frozenset(("requested", "active", "error", "off"))
"""Subscription.status codes (R4 subscription-status), the type-level ``status`` filter's values."""
MAX_EVENTS = 1000
"""Events one ``$events`` call returns at most (ask again from the next number)."""


def _subscription(deps: Dependencies, request: FhirRequest, id_: str) -> dict[str, Any]:
    deps.policy.authorize(request, "read", "Subscription")
    head = deps.store.current(request.tenant, "Subscription", id_)
    if head is None or head.deleted or head.body is None:
        raise NotFound(f"Subscription/{id_} is not known")
    deps.policy.check_read(request, head)
    resource = jsonio.loads(head.body)
    if not isinstance(resource, dict):
        raise NotFound(f"Subscription/{id_} is not known")
    return resource


def _status_of(deps: Dependencies, request: FhirRequest, resource: dict[str, Any]) -> dict[str, Any]:
    from fhirflow_subscriptions.local import delivery_queue
    from fhirflow_subscriptions.service import group_of

    id_ = str(resource["id"])
    state = state_store(deps.settings).state(request.tenant, id_)
    topic = resource.get("criteria") if str(resource.get("criteria", "")).startswith("http") else None
    if deps.settings.store == "dynamodb":  # AWS: the deliverer's log in DynamoDB (subs-aws)
        from fhirflow_subscriptions.aws import delivery_log

        attempts = delivery_log(deps.settings).attempts(group_of(request.tenant, id_), limit=20)
    else:
        attempts = delivery_queue(deps.settings).attempts(group_of(request.tenant, id_), limit=20)
    extra = [
        {
            "name": "delivery-attempt",
            "part": [
                {"name": "time", "valueInstant": timefmt.instant(int(a["at_ms"]))},
                {"name": "outcome", "valueCode": str(a["outcome"])},
                *([{"name": "http-status", "valueInteger": int(a["status"])}] if a.get("status") is not None else []),
                {"name": "latency-ms", "valueDecimal": round(float(a["latency_ms"]), 1)},
                *([{"name": "error", "valueString": str(a["error"])}] if a.get("error") else []),
            ],
        }
        for a in attempts
    ]
    error = resource.get("error")
    parameters = status_parameters(
        base_url=request.base_url,
        subscription_id=id_,
        topic=topic,
        status=str(resource.get("status")),
        kind="query-status",
        events_since_start=state.events if state else 0,
        errors=[error] if isinstance(error, str) and error else [],
        extra=extra,
    )
    metrics = metrics_extension(state_store(deps.settings).metrics(request.tenant, id_), attempts)
    for parameter in parameters["parameter"]:
        if parameter["name"] == "status":
            parameter["extension"] = [metrics]
    return parameters


def metrics_extension(metrics: SubscriptionMetrics, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """The subscription's counters as a complex extension on the SubscriptionStatus ``status``
    parameter. The Backport IG's backport-subscription-status-r4 profile slices ``Parameters.parameter``
    by name and gives every slice its ``extension`` (an R4 Parameters resource has none of its own),
    so an extension there keeps the Parameters conformant to the profile, where a parameter of our own
    naming would be outside its slices. Median latency: of the delivered attempts in the delivery log
    shown beside it (the recent ones)."""
    latencies = sorted(float(a["latency_ms"]) for a in attempts if a.get("outcome") == "delivered")
    parts: list[dict[str, Any]] = [
        {"url": "matched", "valueUnsignedInt": metrics.matched},
        {"url": "delivered", "valueUnsignedInt": metrics.delivered},
        {"url": "failed-attempts", "valueUnsignedInt": metrics.failed},
    ]
    if metrics.last_latency_ms is not None:
        parts.append({"url": "last-latency-ms", "valueDecimal": round(metrics.last_latency_ms, 1)})
    if latencies:
        parts.append({"url": "median-latency-ms", "valueDecimal": round(statistics.median(latencies), 1)})
    return {"url": METRICS_EXTENSION, "extension": parts}


def _listed(values: list[str], name: str, allowed: frozenset[str] | None = None) -> list[str]:
    out = [item for value in values for item in value.split(",") if item]
    for item in out:
        if allowed is not None and item not in allowed:
            raise BadRequest(f"{name} must be one of {', '.join(sorted(allowed))}, not '{item[:40]}'", expression=name)
    return out


def _readable(deps: Dependencies, request: FhirRequest, statuses: list[str]) -> list[dict[str, Any]]:
    """Every Subscription of the tenant the caller may read ("the server returns the status for all
    Subscriptions available to the caller", backport-subscription-status): a search with the caller's
    access in the query, so a subscription the worker has not picked up yet is listed too."""
    from fhirflow.query.parser import parse
    from fhirflow.runtime import search_engine
    from fhirflow.search_access import access_rules
    from fhirflow.search_ports import PageRequest, SearchScope

    deps.policy.authorize(request, "search-type", "Subscription")
    query = parse("Subscription", [("status", ",".join(statuses))] if statuses else [], strict=True)
    scope = SearchScope(
        request.tenant,
        request.base_url,
        ("Subscription",),
        access=access_rules(deps.policy, request, ("Subscription",)),
    )
    page = search_engine(deps.settings).page(scope, query, PageRequest(count=MAX_STATUS + 1))
    if len(page.hits) > MAX_STATUS:
        raise BadRequest(f"$status answers for at most {MAX_STATUS} subscriptions; name them with id", expression="id")
    out = []
    for hit in page.hits:
        try:
            out.append(_subscription(deps, request, hit.id))
        except NotFound:  # the index trails a delete
            continue
    return out


def status(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    if request.resource_id:
        resources = [_subscription(deps, request, request.resource_id)]
    else:
        deps.policy.authorize(request, "read", "Subscription")
        wanted = _listed([v for k, v in request.query if k == "id"], "id")
        statuses = _listed([v for k, v in request.query if k == "status"], "status", STATUSES)
        if len(wanted) > MAX_STATUS:
            raise BadRequest(
                f"$status answers for at most {MAX_STATUS} subscriptions; name them with id", expression="id"
            )
        if not wanted:
            resources = _readable(deps, request, statuses)
        else:
            resources = []
            for id_ in wanted:
                try:
                    resources.append(_subscription(deps, request, id_))
                except NotFound:
                    continue
        if statuses:  # the index may trail a status the server just set: the stored one decides
            resources = [r for r in resources if r.get("status") in statuses]
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": _status_of(deps, request, r),
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }
    return FhirResponse(status=200, resource=bundle)


def _number(request: FhirRequest, name: str, default: int) -> int:
    raw = request.param(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, not '{raw[:40]}'", expression=name)
    return int(raw)


def events(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    resource = _subscription(deps, request, request.resource_id)
    tenant, id_ = request.tenant, str(resource["id"])
    from fhirflow.runtime import search_param_catalog

    spec = spec_of(resource, tenant, catalog=search_param_catalog(deps.settings), base_url=request.base_url)
    if spec.kind != "topic":
        raise BadRequest(
            "$events is for topic-based subscriptions (R4 ones have no event numbers)",
            expression="Subscription.criteria",
        )
    content = request.param("content") or spec.content
    if content not in CONTENTS:
        raise BadRequest(f"content must be one of {', '.join(CONTENTS)}", expression="content")
    store = state_store(deps.settings)
    state = store.state(tenant, id_)
    last = state.events if state else 0
    since = _number(request, "eventsSinceNumber", 1)
    until = min(_number(request, "eventsUntilNumber", last), last)
    logged = store.events(tenant, id_, since=since, until=until, limit=MAX_EVENTS) if since <= until else []
    out: list[NotificationEvent] = []
    for event in logged:
        focus = None
        version = deps.store.version(tenant, event.resource_type, event.resource_id, event.version)
        judged = version
        if version is not None and version.deleted and version.version > 1:  # a deletion: what it deleted
            judged = deps.store.version(tenant, event.resource_type, event.resource_id, version.version - 1)
        if judged is not None and not deps.policy.visible(request, judged):
            # The owner's token of today may reach less than the subscription's events (another patient,
            # narrower scopes): it learns nothing of what it may not read, not even a focus reference.
            continue
        if content == "full-resource" and event.operation != "delete" and version is not None and version.body:
            focus = jsonio.loads(version.body)
        out.append(
            NotificationEvent(
                event.number, event.at_ms, event.resource_type, event.resource_id, event.version, event.operation, focus
            )
        )
    parameters = status_parameters(
        base_url=request.base_url,
        subscription_id=id_,
        topic=spec.topic,
        status=str(resource.get("status")),
        kind="query-event",
        events_since_start=last,
        events=out,
        content=content,
    )
    bundle = notification_bundle(
        parameters, base_url=request.base_url, events=out, content=content, now_ms=deps.clock.now_ms()
    )
    return FhirResponse(status=200, resource=bundle)
