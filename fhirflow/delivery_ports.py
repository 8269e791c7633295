"""Ports of webhook delivery: the durable per-group FIFO queue and the record of one attempt.

A module of its own beside :mod:`fhirflow.ports` because only the subscriptions service uses it.
The queue is a table in the embedded database (``SqliteDeliveryQueue``); in AWS the same role is
played by an SQS FIFO queue whose message group is the subscription (DESIGN.md §3), so the
semantics here are FIFO's: one message in flight per group, in order, at least once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

Outcome = Literal["delivered", "retry", "gone", "refused"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one HTTP delivery attempt (the delivery log keeps these; never bodies)."""

    outcome: Outcome
    """``delivered`` (2xx) | ``retry`` (anything else that may pass) | ``gone`` (410) |
    ``refused`` (the endpoint is not allowed: SSRF policy, scheme, allow-list)."""
    status: int | None
    latency_ms: float
    error: str | None = None
    """A short reason: never a body, a header value or the endpoint's query string."""
    retry_after: float | None = None
    """Seconds, from ``Retry-After`` on 429/503."""


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One notification to deliver. ``group`` is the unit of order and isolation (a subscription:
    ``{tenant}/{id}``); ``job_id`` is stable across retries and enqueues are idempotent on it."""

    group: str
    job_id: str
    payload: bytes
    not_before_ms: int = 0


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """The head job of its group, leased to one deliverer until ``leased_until_ms``."""

    group: str
    job_id: str
    payload: bytes
    attempts: int
    """Attempts that ended before this one (0 on the first delivery)."""
    created_ms: int
    """When the job was first enqueued: the retry horizon counts from here."""
    leased_until_ms: int


class DeliveryQueue(Protocol):
    """A durable queue of notifications, FIFO per group, with at-least-once delivery: a job leaves
    the queue only when the deliverer says so; a crash lets its lease expire and the same job (same
    ``job_id``, hence the same ``webhook-id``) is delivered again."""

    def enqueue(self, jobs: list[DeliveryJob]) -> None:
        """Append jobs to their groups, durable on return; a ``job_id`` already queued (or recently
        completed) is ignored, so replaying the producer changes nothing."""
        ...

    def claim(self, *, now_ms: int, limit: int, lease_ms: int) -> list[ClaimedJob]:
        """Lease up to ``limit`` jobs: only the head of each group, if due and its group is not
        leased. A slow group thus holds back only itself."""
        ...

    def complete(self, job_id: str) -> None:
        """Remove a delivered (or abandoned) job; its group's next job becomes the head."""
        ...

    def retry(self, job_id: str, *, not_before_ms: int, attempts: int, leased_until_ms: int | None = None) -> None:
        """Keep the job at the head of its group, due again at ``not_before_ms``; ends the lease.
        With ``leased_until_ms`` (the claim's), nothing changes if that lease is no longer the
        group's: a deliverer that overran its lease must not reschedule another's delivery."""
        ...

    def drop_group(self, group: str) -> int:
        """Remove every job of the group (410 Gone, subscription off); the number removed."""
        ...

    def log_attempt(self, group: str, job_id: str, attempt: Attempt, at_ms: int) -> None:
        """Append one attempt to the group's delivery log (time, status, latency, error)."""
        ...

    def attempts(self, group: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The group's latest attempts, newest first (for ``$status``)."""
        ...

    def prune(self, *, older_than_ms: int) -> None:
        """Forget log entries and completed job ids older than the retention."""
        ...

    def next_due_ms(self) -> int | None:
        """When the earliest group becomes claimable (lets a dispatcher sleep instead of poll)."""
        ...
