"""A unit of work over a ResourceStore: the changes of a whole FHIR transaction, committed at once.

The bundle service runs each transaction entry through the ordinary CRUD use cases with this
store in place of the real one. Their commits are buffered (and checked against what the
transaction itself already wrote, so entries see each other's results), and ``flush`` hands
all of them to the real store in one atomic ``commit``: the real store re-checks every
expected version there, so a concurrent writer makes the whole transaction fail, never half.
"""

from __future__ import annotations

from collections.abc import Sequence

from fhirflow.ports import (
    Change,
    ClaimTaken,
    HistoryPage,
    HistoryQuery,
    ResourceStore,
    ResourceVersion,
    VersionConflict,
)


class UnitOfWork:
    def __init__(self, store: ResourceStore) -> None:
        self.store = store
        self.changes: list[Change] = []
        self._latest: dict[tuple[str, str, str], ResourceVersion] = {}
        self._claims: dict[tuple[str, str, str], str] = {}

    def current(self, tenant: str, type_: str, id_: str) -> ResourceVersion | None:
        key = (tenant, type_, id_)
        if key in self._latest:
            return self._latest[key]
        return self.store.current(tenant, type_, id_)

    def version(self, tenant: str, type_: str, id_: str, version: int) -> ResourceVersion | None:
        latest = self._latest.get((tenant, type_, id_))
        if latest is not None and latest.version == version:
            return latest
        return self.store.version(tenant, type_, id_, version)

    def claim_owner(self, tenant: str, type_: str, key: str) -> str | None:
        claimed = self._claims.get((tenant, type_, key))
        return claimed if claimed is not None else self.store.claim_owner(tenant, type_, key)

    def commit(self, changes: Sequence[Change]) -> None:
        """Buffer changes; the expected-version check runs now against the transaction's own view
        (and so does a claim: one transaction cannot take one uniqueness key twice)."""
        for index, change in enumerate(changes):
            new = change.new
            head = self.current(new.tenant, new.type, new.id)
            current = head.version if head else None
            if current != change.expected_version:
                raise VersionConflict(index, current)
            claimed = self._claims.get((new.tenant, new.type, change.claim.key)) if change.claim else None
            if claimed is not None:
                raise ClaimTaken(index, claimed)
        for change in changes:
            self.changes.append(change)
            self._latest[(change.new.tenant, change.new.type, change.new.id)] = change.new
            if change.claim is not None:
                self._claims[(change.new.tenant, change.new.type, change.claim.key)] = change.new.id

    def history(self, query: HistoryQuery) -> HistoryPage:
        return self.store.history(query)

    def flush(self) -> None:
        """Commit everything buffered, atomically (VersionConflict names the failing change)."""
        if self.changes:
            self.store.commit(self.changes)
        self.changes = []
        self._latest = {}
        self._claims = {}
