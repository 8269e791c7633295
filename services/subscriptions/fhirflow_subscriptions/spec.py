"""What a Subscription resource asks for, read and checked once at write time.

Two flavours share the resource (docs/subscriptions.md):

- **R4** (hl7.org/fhir/R4/subscription.html): ``criteria`` is a search (``Observation?code=x``);
  ``channel.payload`` absent → a body-less POST, present → ``PUT {endpoint}/{type}/{id}``.
- **Topic-based**, R5 Backport IG 1.1.0 (hl7.org/fhir/uv/subscriptions-backport): ``criteria``
  is a topic canonical, filters sit in ``_criteria.extension`` (``backport-filter-criteria``), the
  payload content (``empty | id-only | full-resource``), heartbeat period, timeout and max count in
  extensions on ``channel``.

:func:`read_subscription` refuses what this server does not support with a 400 whose expression
names the element, so that a subscription that is accepted is one the service can honour.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhirflow.errors import BadRequest, FhirError
from fhirflow.timefmt import datetime_range

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
FILTER_CRITERIA = f"{BACKPORT}/backport-filter-criteria"
PAYLOAD_CONTENT = f"{BACKPORT}/backport-payload-content"
HEARTBEAT_PERIOD = f"{BACKPORT}/backport-heartbeat-period"
TIMEOUT = f"{BACKPORT}/backport-timeout"
MAX_COUNT = f"{BACKPORT}/backport-max-count"
SIGNING_SECRET = "https://fhirflow.dev/fhir/StructureDefinition/subscription-signing-secret"  # noqa: S105 (a URL)
"""On ``Subscription.channel``: the Standard Webhooks secret (``whsec_...``), shown once on create."""
TOPIC_BASE = "https://fhirflow.dev/fhir/SubscriptionTopic/"
"""Built-in topics: ``{TOPIC_BASE}{ResourceType}``, create/update/delete of that type."""

CLIENT_STATUSES = frozenset({"requested", "off"})
CONTENTS = ("empty", "id-only", "full-resource")
JSON_TYPES = frozenset({"application/fhir+json", "application/json"})
REDACTED = "*****"


class NotSupported(FhirError):
    """400 ``not-supported``: a well-formed request for something this server does not do
    (the Backport IG: a server SHALL reject channels, payloads or topics it does not support)."""

    status, code = 400, "not-supported"


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    kind: str
    """``r4`` or ``topic``."""
    resource_type: str
    queries: tuple[str, ...]
    """Search queries (without the type), ANDed; empty: every resource of the type."""
    interactions: frozenset[str]
    endpoint: str
    payload: str | None
    """``channel.payload`` (mime type) or None."""
    content: str
    """Topic-based payload content; ``r4`` subscriptions use ``full-resource`` if payload else ``empty``."""
    topic: str | None = None
    heartbeat_seconds: int | None = None
    timeout_seconds: int | None = None
    max_count: int | None = None
    end_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resource_type": self.resource_type,
            "queries": list(self.queries),
            "interactions": sorted(self.interactions),
            "endpoint": self.endpoint,
            "payload": self.payload,
            "content": self.content,
            "topic": self.topic,
            "heartbeat_seconds": self.heartbeat_seconds,
            "timeout_seconds": self.timeout_seconds,
            "max_count": self.max_count,
            "end_ms": self.end_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SubscriptionSpec:
        return cls(
            kind=data["kind"],
            resource_type=data["resource_type"],
            queries=tuple(data["queries"]),
            interactions=frozenset(data["interactions"]),
            endpoint=data["endpoint"],
            payload=data.get("payload"),
            content=data["content"],
            topic=data.get("topic"),
            heartbeat_seconds=data.get("heartbeat_seconds"),
            timeout_seconds=data.get("timeout_seconds"),
            max_count=data.get("max_count"),
            end_ms=data.get("end_ms"),
        )


def topic_url(resource_type: str) -> str:
    return TOPIC_BASE + resource_type


def _extensions(element: object, url: str) -> list[tuple[int, dict[str, Any]]]:
    if not isinstance(element, dict):
        return []
    found = element.get("extension")
    if not isinstance(found, list):
        return []
    return [(i, e) for i, e in enumerate(found) if isinstance(e, dict) and e.get("url") == url]


def _one_int(channel: dict[str, Any], url: str, name: str, *, minimum: int) -> int | None:
    found = _extensions(channel, url)
    if not found:
        return None
    index, ext = found[0]
    value = next((v for k, v in ext.items() if k.startswith("value")), None)
    expression = f"Subscription.channel.extension[{index}]"
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadRequest(f"{name} must be an integer of at least {minimum}", expression=expression)
    return value


def read_subscription(
    resource: Mapping[str, Any],
    *,
    tenant: str = "default",
    now_ms: int | None = None,
    catalog: Any = None,
    base_url: str = "",
) -> SubscriptionSpec:
    """The subscription's channel, criteria and options; 400 naming the element for anything this
    server cannot honour. Criteria are compiled with the tenant's search parameters (a parameter
    unknown for the type, or one that cannot be evaluated on one resource, is refused); the
    endpoint is checked by the caller against the SSRF policy (:mod:`fhirflow_subscriptions.hook`)."""
    status = resource.get("status")
    if status not in CLIENT_STATUSES:
        raise BadRequest(
            f"A client may set Subscription.status only to 'requested' or 'off', not '{status}': the server "
            "moves it to 'active' or 'error' (subscription.html#status)",
            expression="Subscription.status",
        )
    channel = resource.get("channel")
    if not isinstance(channel, dict):
        raise BadRequest("Subscription.channel is required", expression="Subscription.channel")
    if channel.get("type") != "rest-hook":
        raise NotSupported(
            f"Channel type '{channel.get('type')}' is not supported; this server delivers 'rest-hook' only",
            expression="Subscription.channel.type",
        )
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise BadRequest("A rest-hook subscription needs channel.endpoint", expression="Subscription.channel.endpoint")
    payload = channel.get("payload")
    if payload is not None:
        mime = str(payload).split(";", 1)[0].strip().lower()
        if mime not in JSON_TYPES:
            raise NotSupported(
                f"channel.payload '{payload}' is not supported; use application/fhir+json or application/json",
                expression="Subscription.channel.payload",
            )
    end_ms = _end(resource, now_ms)
    criteria = resource.get("criteria")
    if not isinstance(criteria, str) or not criteria.strip():
        raise BadRequest("Subscription.criteria is required", expression="Subscription.criteria")
    if criteria.startswith(("http://", "https://")):
        return _topic_spec(resource, channel, criteria, endpoint, payload, end_ms, tenant, catalog, base_url)
    from fhirflow_subscriptions.criteria import compile_criteria, parse_r4_criteria

    rtype, query = parse_r4_criteria(criteria)
    if query:
        compile_criteria(
            rtype, query, tenant=tenant, expression="Subscription.criteria", catalog=catalog, base_url=base_url
        )
    return SubscriptionSpec(
        kind="r4",
        resource_type=rtype,
        queries=(query,) if query else (),
        interactions=frozenset({"create", "update"}),  # R4 notifies no deletes
        endpoint=endpoint,
        payload=payload,
        content="full-resource" if payload else "empty",
        end_ms=end_ms,
    )


def _end(resource: Mapping[str, Any], now_ms: int | None) -> int | None:
    end = resource.get("end")
    if end is None:
        return None
    if not isinstance(end, str):
        raise BadRequest("Subscription.end must be an instant", expression="Subscription.end")
    _, high = datetime_range(end, name="Subscription.end")
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    if high <= now:
        raise BadRequest(f"Subscription.end ({end}) is in the past", expression="Subscription.end")
    return high


def _topic_spec(
    resource: Mapping[str, Any],
    channel: dict[str, Any],
    criteria: str,
    endpoint: str,
    payload: str | None,
    end_ms: int | None,
    tenant: str,
    catalog: Any,
    base_url: str,
) -> SubscriptionSpec:
    from fhirflow.validation import is_resource_type
    from fhirflow_subscriptions.criteria import compile_criteria

    rtype = criteria[len(TOPIC_BASE) :] if criteria.startswith(TOPIC_BASE) else ""
    if not rtype or not is_resource_type(rtype):
        raise NotSupported(
            f"Topic '{criteria[:200]}' is not one this server offers; its topics are {TOPIC_BASE}{{ResourceType}} "
            "(see the CapabilityStatement)",
            expression="Subscription.criteria",
        )
    if payload is None:
        raise BadRequest(
            "A topic-based subscription needs channel.payload (Backport IG: 1..1)",
            expression="Subscription.channel.payload",
        )
    queries: list[str] = []
    for index, ext in _extensions(resource.get("_criteria"), FILTER_CRITERIA):
        value = ext.get("valueString")
        expression = f"Subscription.criteria.extension[{index}]"
        if not isinstance(value, str) or not value.strip():
            raise BadRequest("backport-filter-criteria needs a valueString", expression=expression)
        query = value.strip()
        if "?" in query:
            head, query = query.split("?", 1)
            if head != rtype:
                raise BadRequest(
                    f"The filter '{value[:200]}' is for '{head}', not the topic's type {rtype}", expression=expression
                )
        compile_criteria(rtype, query, tenant=tenant, expression=expression, catalog=catalog, base_url=base_url)
        queries.append(query)
    content = "id-only"
    found = _extensions(channel.get("_payload"), PAYLOAD_CONTENT)
    if found:
        content = found[0][1].get("valueCode", "")
        if content not in CONTENTS:
            raise NotSupported(
                f"Payload content '{content}' is not supported; use one of {', '.join(CONTENTS)}",
                expression="Subscription.channel.payload.extension[0]",
            )
    return SubscriptionSpec(
        kind="topic",
        resource_type=rtype,
        queries=tuple(queries),
        interactions=frozenset({"create", "update", "delete"}),
        endpoint=endpoint,
        payload=payload,
        content=content,
        topic=criteria,
        heartbeat_seconds=_one_int(channel, HEARTBEAT_PERIOD, "backport-heartbeat-period", minimum=1),
        timeout_seconds=_one_int(channel, TIMEOUT, "backport-timeout", minimum=1),
        max_count=_one_int(channel, MAX_COUNT, "backport-max-count", minimum=1),
        end_ms=end_ms,
    )
