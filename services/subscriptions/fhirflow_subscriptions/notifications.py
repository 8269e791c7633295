"""What a notification looks like on the wire.

- R4 rest-hook (hl7.org/fhir/R4/subscription.html#channels): without ``channel.payload`` a
  ``POST`` to the endpoint with no body; with one, ``PUT {endpoint}/{type}/{id}`` with the resource.
- Topic-based (Backport IG 1.1.0, notifications.html): a ``history`` Bundle whose ``entry[0]`` is
  the SubscriptionStatus ``Parameters`` (profile backport-subscription-status-r4), then, for
  ``id-only`` and ``full-resource``, one entry per focus (``full-resource`` with the resource).
  The same Bundle shape answers ``$events`` (type ``query-event``) and ``$status`` uses the
  Parameters alone (type ``query-status``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhirflow import timefmt
from fhirflow.subscription_ports import LoggedNotificationEvent

STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"
NOTIFICATION_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4"
)
_METHODS = {"create": ("POST", "201"), "update": ("PUT", "200"), "delete": ("DELETE", "204")}


@dataclass(frozen=True, slots=True)
class NotificationEvent(LoggedNotificationEvent):
    """One event of a notification: what the event log keeps, with the focus resource."""

    resource: Mapping[str, Any] | None = None
    """The focus as it was at that version (``full-resource``); None otherwise or for a delete."""


def r4_request(endpoint: str, payload: str | None, resource: Mapping[str, Any] | None) -> tuple[str, str, bytes]:
    """(method, url, body) of an R4 rest-hook notification."""
    if payload is None or resource is None:
        return "POST", endpoint, b""
    from fhirflow import jsonio

    url = f"{endpoint.rstrip('/')}/{resource['resourceType']}/{resource['id']}"
    return "PUT", url, jsonio.dumps(dict(resource))


def status_parameters(
    *,
    base_url: str,
    subscription_id: str,
    topic: str | None,
    status: str,
    kind: str,
    events_since_start: int,
    events: Sequence[NotificationEvent] = (),
    content: str = "empty",
    errors: Sequence[str] = (),
    extra: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The SubscriptionStatus of the Backport IG as an R4 ``Parameters`` resource."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base_url}/Subscription/{subscription_id}"}},
    ]
    if topic:
        parameters.append({"name": "topic", "valueCanonical": topic})
    parameters += [
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for event in events:
        part: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": timefmt.instant(event.at_ms)},
        ]
        if content != "empty":
            part.append({"name": "focus", "valueReference": {"reference": _focus_url(base_url, event)}})
        parameters.append({"name": "notification-event", "part": part})
    for text in errors:
        parameters.append({"name": "error", "valueCodeableConcept": {"text": text}})
    parameters += extra
    return {
        "resourceType": "Parameters",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def notification_bundle(
    status: dict[str, Any], *, base_url: str, events: Sequence[NotificationEvent], content: str, now_ms: int
) -> dict[str, Any]:
    """The history Bundle: the status first, then the focus entries the payload content asks for."""
    subscription = status["parameter"][0]["valueReference"]["reference"]
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{status['id']}",
            "resource": status,
            "request": {"method": "GET", "url": f"{subscription}/$status"},
            "response": {"status": "200"},
        }
    ]
    if content != "empty":
        for event in events:
            method, code = _METHODS.get(event.operation, ("PUT", "200"))
            entry: dict[str, Any] = {"fullUrl": _focus_url(base_url, event)}
            if content == "full-resource" and event.resource is not None and event.operation != "delete":
                entry["resource"] = dict(event.resource)
            url = event.resource_type if method == "POST" else f"{event.resource_type}/{event.resource_id}"
            entry["request"] = {"method": method, "url": url}
            entry["response"] = {
                "status": code,
                "etag": f'W/"{event.version}"',
                "lastModified": timefmt.instant(event.at_ms),
            }
            entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": timefmt.instant(now_ms),
        "entry": entries,
    }


def _focus_url(base_url: str, event: NotificationEvent) -> str:
    return f"{base_url}/{event.resource_type}/{event.resource_id}"
