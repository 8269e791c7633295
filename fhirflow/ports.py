"""Ports: what the use cases need from the outside world, as ``typing.Protocol``s.

Every port has an embedded adapter (SQLite, files) and an AWS adapter; both pass the same
contract tests. Domain code receives adapters; it never chooses one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    # Type-only: importing the pydantic contracts here would slow every handler's cold start.
    from fhirflow.model import FhirRequest
    from fhirflow_contracts import ResourceChanged

Operation = Literal["create", "update", "delete"]
Method = Literal["POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True, slots=True)
class ResourceVersion:
    """One version of one resource, as stored (http://hl7.org/fhir/R4/resource.html#versions).

    ``body`` is the resource's JSON with ``meta.versionId`` and ``meta.lastUpdated`` set, or
    None for a deletion marker. ``last_updated`` is milliseconds since the epoch (UTC).
    """

    tenant: str
    type: str
    id: str
    version: int
    last_updated: int
    deleted: bool
    method: Method
    body: bytes | None
    created: bool = False
    """This version brought the resource into existence: a create, or an update of a deleted
    resource (http.html#update answers 201 for it, and history and events say "create")."""
    resource: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    """``body`` already parsed, when the writer has it at hand (the embedded index then need
    not parse it again). Equal to ``body``'s JSON and never mutated; None means "parse body"."""

    @property
    def operation(self) -> Operation:
        if self.deleted:
            return "delete"
        return "create" if self.created or self.version == 1 or self.method == "POST" else "update"


@dataclass(frozen=True, slots=True)
class Change:
    """A new version to commit, guarded by the version the writer saw.

    ``expected_version`` None means the resource must not exist yet (create); an int means the
    current version must be exactly that (optimistic concurrency, which is also ``If-Match``).
    """

    new: ResourceVersion
    expected_version: int | None
    request_id: str = ""
    claim: Claim | None = None
    """A uniqueness key this change's resource takes (conditional create and update-as-create)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A uniqueness claim on conditional criteria (http.html#ccreate), committed with its change.

    ``key`` is the SHA-256 of the normalised criteria (:mod:`fhirflow.conditional`); the change's
    resource becomes its owner in the same atomic commit. ``replaces`` None: the key must be free;
    an id: the key must still name that owner, whom the writer found deleted or no longer matching
    (a compare-and-set, so that of two writers replacing one stale owner only one wins)."""

    key: str
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Instance (type and id), type (type only) or system history (neither); newest first."""

    tenant: str
    type: str | None = None
    id: str | None = None
    since: int | None = None
    """Only versions with last_updated >= since (ms)."""
    at: tuple[int, int] | None = None
    """Only versions current at some point in [low, high) (ms): http.html#history ``_at``."""
    count: int = 50
    after: str | None = None
    """Keyset cursor from a previous page's ``next``: only versions older than that page's last.
    Opaque to the use cases (the adapter's own position encoding); signed before it reaches a client."""


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[ResourceVersion]
    next: str | None
    """The position after this page's last entry, or None at the end."""


class VersionConflict(Exception):
    """A change's expected version did not hold. ``index`` is the change's place in the commit."""

    def __init__(self, index: int, current_version: int | None) -> None:
        super().__init__(f"change {index}: current version is {current_version}")
        self.index = index
        self.current_version = current_version


class ClaimTaken(VersionConflict):
    """A change's :class:`Claim` did not hold: the key has another owner (``owner``, None when it
    is held by a transaction that has not decided yet). Someone else's conditional write won."""

    def __init__(self, index: int, owner: str | None) -> None:
        super().__init__(index, None)
        self.owner = owner


class ResourceStore(Protocol):
    """The system of record: versions of resources, per tenant (DESIGN.md §3)."""

    def current(self, tenant: str, type_: str, id_: str) -> ResourceVersion | None:
        """The latest version (possibly a deletion marker), or None if the resource never existed."""
        ...

    def version(self, tenant: str, type_: str, id_: str, version: int) -> ResourceVersion | None:
        """One version for vread (http.html#vread), or None."""
        ...

    def commit(self, changes: Sequence[Change]) -> None:
        """Write all changes atomically or none (raises VersionConflict naming the first failing one,
        ClaimTaken when a change's claim did not hold)."""
        ...

    def claim_owner(self, tenant: str, type_: str, key: str) -> str | None:
        """The id of the resource holding a uniqueness key (http.html#ccreate), or None. The owner
        may since have been deleted or changed: the caller checks it still matches."""
        ...

    def history(self, query: HistoryQuery) -> HistoryPage:
        """http.html#history: versions newest first, with keyset paging."""
        ...


class Authenticator(Protocol):
    """Who is calling: a bearer token (or other credential) → a principal (DESIGN.md §5).

    Raises ``Unauthorized`` (401 with ``WWW-Authenticate``) when the credential is missing or bad.
    """

    def authenticate(self, request: FhirRequest) -> object: ...


class AccessPolicy(Protocol):
    """What the principal on ``request.principal`` may do (SMART scopes, compartments, RBAC, tenancy).

    The use cases call it at fixed points; the policy raises ``Forbidden``/``NotFound``/``Unauthorized``.
    ``interaction`` is a code of http://hl7.org/fhir/R4/valueset-type-restful-interaction.html.
    """

    def authorize(self, request: FhirRequest, interaction: str, resource_type: str | None) -> None:
        """Before any work: may this principal perform this interaction on this type at all?"""
        ...

    def check_read(self, request: FhirRequest, version: ResourceVersion) -> None:
        """Before a stored resource is returned (read, vread, and resources in bundles)."""
        ...

    def visible(self, request: FhirRequest, version: ResourceVersion) -> bool:
        """Whether one version may appear in a history or other listing."""
        ...

    def knows(self, request: FhirRequest, version: ResourceVersion) -> bool:
        """Whether the principal may learn that this version exists at all: it may read it, or do to
        it what the request does. A write aimed at a resource it may not know answers exactly as for
        an id that does not exist (no value, no existence, no version)."""
        ...

    def check_write(
        self,
        request: FhirRequest,
        resource_type: str,
        id_: str,
        new: dict[str, Any] | None,
        current: ResourceVersion | None,
    ) -> None:
        """Before a write commits: the current version and the new one (None for delete) must be allowed."""
        ...

    def knows_holder(self, request: FhirRequest, resource_type: str, id_: str) -> bool:
        """Whether the principal would know whatever resource held ``resource_type/id_``, whatever its
        content (may read it, or do to it what the request does): then that id is never held by a
        resource hidden from it. Only then is update-as-create of that id open to it by default
        (``Settings.update_create_limited``): otherwise an id a hidden resource holds would answer
        differently from an unused one."""
        ...


class AllowAll:
    """The policy when authorization is off (the embedded mode on loopback)."""

    def authorize(self, request: FhirRequest, interaction: str, resource_type: str | None) -> None:
        return None

    def check_read(self, request: FhirRequest, version: ResourceVersion) -> None:
        return None

    def visible(self, request: FhirRequest, version: ResourceVersion) -> bool:
        return True

    def knows(self, request: FhirRequest, version: ResourceVersion) -> bool:
        return True

    def check_write(
        self,
        request: FhirRequest,
        resource_type: str,
        id_: str,
        new: dict[str, Any] | None,
        current: ResourceVersion | None,
    ) -> None:
        return None

    def knows_holder(self, request: FhirRequest, resource_type: str, id_: str) -> bool:
        return True


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        import time

        return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class CommittedChange:
    """A change as the asynchronous side sees it after commit: the DynamoDB stream's version
    record in AWS, an outbox row in the embedded mode (DESIGN.md §3)."""

    stored: ResourceVersion
    request_id: str = ""


class BlobNotFound(KeyError):
    """No blob under that key."""


class BlobStore(Protocol):
    """Large objects by key: resource bodies over the item-size threshold, export files (DESIGN.md §3)."""

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key``, replacing what was there; durable when it returns."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; BlobNotFound when there are none."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...


@dataclass(frozen=True, slots=True)
class IndexWrite:
    """One version for the search index, as :meth:`SearchIndex.apply` takes it."""

    tenant: str
    type: str
    id: str
    version: int
    last_updated: int
    resource: dict[str, Any] | None
    """None: the resource was deleted at ``version``."""


class IndexWriteSkipped(Exception):
    """A write of a batch that was not attempted because an earlier one failed; it comes again
    with the retried batch."""


class SearchIndex(Protocol):
    """The search side's copy of each resource's current version (DESIGN.md §4).

    Writes are idempotent and ordered by version, so the stream consumer may replay and reorder:
    an older version never overwrites a newer one. The query side (http.html#search) is the
    search service's ``SearchEngine`` port (:mod:`fhirflow.search_ports`).
    """

    def apply(
        self, tenant: str, type_: str, id_: str, version: int, last_updated: int, resource: dict[str, Any] | None
    ) -> bool:
        """Index ``version`` (``resource`` None: the resource was deleted at that version).
        False, and nothing changes, when an equal or newer version is already indexed."""
        ...

    def indexed_version(self, tenant: str, type_: str, id_: str) -> int | None:
        """The version the index holds for the resource (deleted or not), or None."""
        ...

    def apply_batch(self, writes: Sequence[IndexWrite]) -> list[bool | Exception]:
        """Each write as :meth:`apply` would make it, in order, in as few round trips as the
        backend allows (one bulk request on OpenSearch). One result per write: True (indexed),
        False (an equal or newer version was there, nothing changed) or the exception that failed
        it. A failed write never undoes the others; an adapter may stop at the first failure and
        answer :class:`IndexWriteSkipped` for the writes after it."""
        ...


def apply_each(index: SearchIndex, writes: Sequence[IndexWrite]) -> list[bool | Exception]:
    """``apply_batch`` for a backend without a bulk call: each write through ``index.apply``, in
    order, stopping at the first failure (the rest are :class:`IndexWriteSkipped`)."""
    results: list[bool | Exception] = []
    for write in writes:
        if results and isinstance(results[-1], Exception):
            results.append(IndexWriteSkipped())
            continue
        try:
            results.append(
                index.apply(write.tenant, write.type, write.id, write.version, write.last_updated, write.resource)
            )
        except Exception as exc:  # reported per write, as the port says
            results.append(exc)
    return results


class EventPublisher(Protocol):
    """Where change events go: the EventBridge bus in AWS, a local event log in the embedded mode."""

    def publish(self, events: Sequence[ResourceChanged]) -> None:
        """Publish all events or raise (at least once: the caller retries what raised)."""
        ...


class EventLedger(Protocol):
    """Which change events have already been published, by event id.

    The stream is delivered at least once and batches may be retried out of order; the ledger is
    what lets the consumer emit exactly one event per committed change across replays. It is a
    record separate from the search index because a version too old to index (a newer one is
    already there) must still be announced once.
    """

    def published(self, events: Sequence[ResourceChanged]) -> set[str]:
        """The ``metadata.eventId``s of those ``events`` already recorded as published."""
        ...

    def record(self, events: Sequence[ResourceChanged]) -> None:
        """Remember these events as published (idempotent)."""
        ...


class TransactionCommitter(Protocol):
    """How a FHIR transaction's changes reach the store: all of them atomically, or none
    (http://hl7.org/fhir/R4/http.html#trules). SQLite commits any number in one SQL transaction;
    DynamoDB commits small ones in one TransactWriteItems and larger ones through the multi-batch
    protocol (DESIGN.md §3). The composition root chooses.

    ``labels`` name each change for error messages (``Bundle.entry[3]``); a failed precondition is a
    ``VersionConflict`` carrying the failing change's index."""

    def commit(self, changes: Sequence[Change], *, labels: Sequence[str] = ()) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkflowResult:
    """An execution of a workflow as Step Functions reports it."""

    status: Literal["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"]
    output: Any = None
    error: str | None = None
    cause: str | None = None


class WorkflowExecutor(Protocol):
    """Runs the bundle workflow (fhirflow_bundle.transaction.definition): Step Functions in AWS,
    the in-process LocalRunner in the embedded mode."""

    def run(self, payload: dict[str, Any]) -> WorkflowResult:
        """Run to the end and return how it ended (an Express workflow's StartSyncExecution)."""
        ...

    def start(self, name: str, payload: dict[str, Any]) -> None:
        """Start in the background under a unique ``name`` (a Standard workflow's StartExecution)."""
        ...

    def describe(self, name: str) -> WorkflowResult | None:
        """How a started execution stands, or None when there is none by that name."""
        ...
