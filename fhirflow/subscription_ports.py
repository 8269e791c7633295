"""The subscriptions state store port: runtime state that is not part of the Subscription resource.

A kernel module beside :mod:`fhirflow.delivery_ports` (not in the subscriptions service) because the
adapters implement it, and adapters never import use cases (docs/architecture.md, Layers).

The resource stays in the ResourceStore (CRUD, search, history as any resource); what the service
needs besides lives here, keyed by (tenant, subscription id) (docs/subscriptions.md):

- **secrets** per resource version: ``channel.header`` values and the Standard Webhooks signing
  secrets, which the stored resource shows as ``*****``, and the owner context (who wrote that
  version: scopes, launch context), written before the version commits (an orphan row of a write
  that failed is never read: lookups go by version);
- **state**: the compiled spec, status, last error, the event counter, last send time;
- **events**: the per-subscription event log (number → time, focus, operation), kept for a
  configurable time, for ``$events`` and gapless numbering: an event's number is allocated once per
  source event (``source``), so a replay after a crash gets the same number;
- a **cursor** of the consumer over the change events.

Adapters: :class:`fhirflow.adapters.sqlite.subscriptions.SqliteSubscriptionState` (embedded) and
:class:`fhirflow.adapters.aws.dynamodb_subscriptions.DynamoDbSubscriptionState`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Secrets:
    version: int
    headers: tuple[tuple[str, str], ...]
    """``channel.header`` as (name, value) pairs, in order."""
    signing: tuple[tuple[str, int | None], ...]
    """Signing secrets with the time (ms) after which each stops being used (None: current)."""
    owner: dict[str, Any] = field(default_factory=dict)

    def live_signing(self, now_ms: int) -> list[str]:
        return [secret for secret, until in self.signing if until is None or until > now_ms]


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    tenant: str
    id: str
    version: int
    """The resource version ``spec`` was read from."""
    spec: dict[str, Any]
    status: str
    error: str | None
    events: int
    """Events counted since the subscription started (the last event number)."""
    last_sent_ms: int
    """When the last notification of any kind was queued (heartbeats measure idleness from it)."""


@dataclass(frozen=True, slots=True)
class SubscriptionMetrics:
    """Counters kept with a subscription's state, each added to atomically (shown by ``$status``)."""

    matched: int = 0
    """Event notifications recorded for it (a change it matched, its owner allowed)."""
    delivered: int = 0
    """Event notifications its endpoint accepted (2xx)."""
    failed: int = 0
    """Delivery attempts of any kind that failed (each retry counts)."""
    last_latency_ms: float | None = None
    """The request time of the last delivered notification."""


@dataclass(frozen=True, slots=True)
class LoggedNotificationEvent:
    number: int
    at_ms: int
    resource_type: str
    resource_id: str
    version: int
    operation: str


class SubscriptionStateStore(Protocol):
    def note_write(self, tenant: str, id_: str, version: int, at_ms: int) -> None:
        """A client write of version ``version`` is about to commit (called by the write hook): where
        matchers cache the subscription list and may meet later changes before this one, they must
        learn of it from here."""
        ...

    def put_secrets(self, tenant: str, id_: str, secrets: Secrets) -> None: ...

    def secrets(self, tenant: str, id_: str, version: int | None = None) -> Secrets | None:
        """The secrets of ``version`` (None: the newest), or of the newest version before it."""
        ...

    def copy_secrets(self, tenant: str, id_: str, from_version: int, to_version: int) -> None: ...

    def put_state(self, tenant: str, id_: str, *, version: int, spec: dict[str, Any], status: str) -> None:
        """Create or replace the spec and status; counters and the event log stay."""
        ...

    def state(self, tenant: str, id_: str) -> SubscriptionState | None: ...

    def states(self) -> list[SubscriptionState]: ...

    def set_status(self, tenant: str, id_: str, status: str, error: str | None) -> None: ...

    def forget(self, tenant: str, id_: str) -> None:
        """The subscription was deleted: drop its state, secrets and events."""
        ...

    def record_event(
        self, tenant: str, id_: str, *, source: str, at_ms: int, focus: tuple[str, str, int], operation: str
    ) -> tuple[int, bool]:
        """The event's number for this subscription and whether it is new (atomic counter; a
        ``source`` seen before gets its old number)."""
        ...

    def events(self, tenant: str, id_: str, *, since: int, until: int, limit: int) -> list[LoggedNotificationEvent]: ...

    def mark_sent(self, tenant: str, id_: str, at_ms: int) -> None: ...

    def count(
        self,
        tenant: str,
        id_: str,
        *,
        matched: int = 0,
        delivered: int = 0,
        failed: int = 0,
        latency_ms: float | None = None,
    ) -> None:
        """Add to the counters in one atomic update (concurrent deliverers lose no count); ``latency_ms``
        replaces the last latency."""
        ...

    def metrics(self, tenant: str, id_: str) -> SubscriptionMetrics: ...

    def cursor(self, name: str) -> int: ...

    def advance(self, name: str, seq: int) -> None: ...

    def prune(self, *, events_older_than_ms: int) -> int: ...


def pairs(value: Sequence[Sequence[Any]]) -> tuple[tuple[Any, Any], ...]:
    return tuple((item[0], item[1]) for item in value)
