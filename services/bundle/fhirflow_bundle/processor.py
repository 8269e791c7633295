"""batch and transaction (http://hl7.org/fhir/R4/http.html#transaction, bundle.html#transaction).

The bundle code owns ordering, identity assignment, reference rewriting and the response
bundle; each entry runs through the same use cases as a direct request (STYLE.md rule 7).
A transaction runs its entries against a :class:`UnitOfWork` and commits once at the end,
through the committer the composition root chose: in the embedded mode one SQL transaction; on
DynamoDB one TransactWriteItems when it fits, else the multi-batch protocol (DESIGN.md §3).
With ``Prefer: respond-async`` the bundle is checked, stored and answered 202; the bundle
workflow runs it (:mod:`fhirflow_bundle.transaction.jobs`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

import orjson

from fhirflow import jsonio
from fhirflow.conditional import Resolution
from fhirflow.errors import (
    BadRequest,
    Conflict,
    FhirError,
    Issue,
    NotFound,
    NotModified,
    ServiceUnavailable,
    outcome_for,
)
from fhirflow.http import prefer_return
from fhirflow.ids import new_resource_id
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.pathparams import check_path_params
from fhirflow.ports import Change, ClaimTaken, ResourceStore, ResourceVersion, TransactionCommitter, VersionConflict
from fhirflow.routes import ROUTE_TABLE, RouteTable
from fhirflow.runtime import Dependencies
from fhirflow.unit_of_work import UnitOfWork
from fhirflow_bundle import references
from fhirflow_bundle.conditional import TransactionPlan, entry_criteria, plan_transaction, resolve_references
from fhirflow_bundle.entries import ORDER, Entry, entry_failure, entry_request, parse_bundle
from fhirflow_bundle.transaction.commit import StoreCommitter
from fhirflow_bundle.transaction.jobs import AsyncJobs, wants_async

UseCase = Callable[..., FhirResponse]

_INTERACTIONS = {"POST": "create", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}
TRANSACTION_ATTEMPTS = 20
"""Runs of a transaction that lost a race: a uniqueness key to a concurrent conditional create (that
create committed, so the next run finds its resource), or a resource it writes to a concurrent
write (the next run starts from the new version, as a single PUT without If-Match retries; an
entry with ``ifMatch`` then fails its precondition with 412 as it would have alone)."""


class _LostRace(Exception):
    """A resource this transaction writes changed before it committed; nothing was written."""

    def __init__(self, conflict: Conflict) -> None:
        super().__init__(conflict.diagnostics)
        self.conflict = conflict


class _TransactionWork(UnitOfWork):
    """The transaction's unit of work. A resource whose id this transaction has just minted (a
    fresh UUID) cannot exist in the store, so its create is checked without reading the store:
    on DynamoDB that saves a read per created resource."""

    def __init__(self, store: ResourceStore, minted: set[tuple[str, str, str]]) -> None:
        super().__init__(store)
        self._unwritten = set(minted)

    def current(self, tenant: str, type_: str, id_: str) -> ResourceVersion | None:
        if (tenant, type_, id_) in self._unwritten:
            return None
        return super().current(tenant, type_, id_)

    def commit(self, changes: Sequence[Change]) -> None:
        super().commit(changes)
        self._unwritten.difference_update((c.new.tenant, c.new.type, c.new.id) for c in changes)


class BundleProcessor:
    def __init__(
        self,
        deps: Dependencies,
        use_cases: dict[str, UseCase],
        routes: RouteTable = ROUTE_TABLE,
        *,
        committer: TransactionCommitter | None = None,
        jobs: AsyncJobs | None = None,
    ) -> None:
        self.deps = deps
        self.use_cases = use_cases
        self.routes = routes
        self.committer = committer or StoreCommitter(deps.store)
        self.jobs = jobs

    def process(self, request: FhirRequest) -> FhirResponse:
        body = jsonio.loads(request.body) if request.body.strip() else None
        kind, entries = parse_bundle(body, max_entries=self.deps.settings.max_bundle_entries)
        if self.jobs is not None and wants_async(request):
            # Checked above: a malformed bundle is refused at once. The entries are authorized one by
            # one when the job runs them, as here; the tenant is checked now.
            self.deps.policy.authorize(request, kind, None)
            return self.jobs.submit(request)
        if kind == "batch":
            responses = [self._batch_entry(entry, request) for entry in entries]
        else:
            responses = self._transaction(entries, request)
        bundle = {"resourceType": "Bundle", "type": f"{kind}-response", "entry": responses}
        return FhirResponse(status=200, resource=bundle)

    def status(self, request: FhirRequest) -> FhirResponse:
        """``GET [base]/_async/{job}``: 202 while the job runs, then its answer (async.html)."""
        if self.jobs is None:
            raise NotFound("This server runs no asynchronous requests")
        self.deps.policy.authorize(request, "transaction", None)  # the tenant must be the token's
        return self.jobs.status(request)

    # -- batch: every entry on its own -------------------------------------------------------

    def _batch_entry(self, entry: Entry, outer: FhirRequest) -> dict[str, Any]:
        try:
            body = entry.resource
            if body is not None and references.local_references(body):
                raise BadRequest(
                    f"{entry.where}: a batch entry cannot refer to other entries "
                    "(urn:uuid/urn:oid references resolve only in a transaction)",
                    expression=f"{entry.where}.resource",
                )
            found = references.conditional_references(body) if body is not None else []
            if found:
                mapping = resolve_references(self.deps, outer, entry, found)
                body = references.rewrite(body, mapping, where=entry.where)
            entry_criteria(entry)  # bad criteria are refused naming the entry's element; the use case resolves them
            response = self._run(entry, outer, self.deps, body)
        except FhirError as error:
            return _error_entry(error, entry)
        return _response_entry(response, outer)

    # -- transaction: all or nothing ---------------------------------------------------------

    def _transaction(self, entries: list[Entry], outer: FhirRequest) -> list[dict[str, Any]]:
        lost: Conflict | None = None
        for attempt in range(TRANSACTION_ATTEMPTS):
            if attempt:
                # Losers of a race that run again at once tend to meet again: a short random pause,
                # growing with the attempts, spreads them out (at most ~0.1 s in all, on average).
                time.sleep(random.uniform(0, 0.001 * attempt))  # noqa: S311 - jitter, not a secret
            try:
                return self._transaction_once(entries, outer)
            except ClaimTaken:
                # A concurrent conditional create took a uniqueness key this transaction claimed,
                # after this one looked and before it committed. Nothing was written: look again.
                continue
            except _LostRace as race:
                lost = race.conflict  # nothing was written: run again from the current versions
                continue
        if lost is not None:
            raise lost
        raise ServiceUnavailable(
            "Resources this transaction creates conditionally are being created by many writers at once; retry",
            headers={"Retry-After": "1"},
        )

    def _transaction_once(self, entries: list[Entry], outer: FhirRequest) -> list[dict[str, Any]]:
        plan = plan_transaction(self.deps, outer, entries)
        new_ids, mapping = self._identities(entries, plan)
        mapping.update(plan.references)
        # The references are rewritten in the entries themselves, and put back if this attempt
        # fails: a transaction that runs again starts from the entries as they came.
        undo: list[tuple[dict[str, Any], str]] = []
        try:
            for e in entries:
                if e.resource is not None:
                    references.rewrite_in_place(e.resource, mapping, where=e.where, undo=undo)
            return self._run_entries(entries, outer, plan, new_ids)
        except BaseException:
            references.restore(undo)
            raise

    def _run_entries(
        self, entries: list[Entry], outer: FhirRequest, plan: TransactionPlan, new_ids: dict[int, str]
    ) -> list[dict[str, Any]]:
        minted = {
            (outer.tenant, entry.resource_type, new_ids[entry.index]) for entry in entries if entry.index in new_ids
        }
        work = _TransactionWork(self.deps.store, minted)
        scoped = dataclasses.replace(self.deps, store=work)
        results: dict[int, dict[str, Any]] = {}
        owners: list[Entry] = []  # the entry that buffered each change, to name it if the commit fails
        for entry in sorted(entries, key=lambda e: (ORDER[e.method], e.index)):
            owners.extend([entry] * (len(work.changes) - len(owners)))
            try:
                response = self._run(
                    entry,
                    outer,
                    scoped,
                    entry.resource,
                    new_id=new_ids.get(entry.index),
                    resolution=plan.resolutions.get(entry.index),
                )
            except NotModified as not_modified:
                results[entry.index] = {"response": {"status": "304 Not Modified", **_etag(not_modified.headers)}}
                continue
            except FhirError as error:
                raise entry_failure(error, entry) from error
            results[entry.index] = _response_entry(response, outer)
            owners.extend([entry] * (len(work.changes) - len(owners)))
        try:
            if work.changes:
                self.committer.commit(work.changes, labels=[owner.where for owner in owners])
        except ClaimTaken:
            raise
        except VersionConflict as conflict:
            failed = owners[conflict.index].where if conflict.index < len(owners) else "Bundle"
            raise _LostRace(
                Conflict(
                    f"{failed}: the resource was changed by another request while this transaction ran; "
                    "nothing was written",
                    expression=failed,
                )
            ) from conflict
        return [results[e.index] for e in entries]

    def _identities(self, entries: list[Entry], plan: TransactionPlan) -> tuple[dict[int, str], dict[str, str]]:
        """Ids for created resources up front, and fullUrl → ``Type/id`` for every entry that has one
        (a conditional entry's: the resource its criteria found, or the one it creates)."""
        new_ids: dict[int, str] = {}
        mapping: dict[str, str] = {}
        targets: dict[str, int] = {}
        for entry in entries:
            resolution = plan.resolutions.get(entry.index)
            found = None
            if resolution is not None:
                try:
                    found = resolution.single(action=f"a conditional {_INTERACTIONS[entry.method]}")
                except FhirError as error:
                    raise entry_failure(error, entry) from error
            body_id = (entry.resource or {}).get("id")
            if found is not None:
                location = f"{entry.resource_type}/{found.id}"
                if entry.method == "POST":  # the conditional create found its resource: nothing is written
                    if entry.full_url:
                        mapping[entry.full_url] = location
                    continue
            elif entry.method == "POST" or (
                resolution is not None and entry.method == "PUT" and not isinstance(body_id, str)
            ):
                new_ids[entry.index] = new_resource_id()
                location = f"{entry.resource_type}/{new_ids[entry.index]}"
            elif resolution is not None and entry.method == "PUT":
                location = f"{entry.resource_type}/{body_id}"  # update as create with the body's id
            elif entry.method in ("PUT", "PATCH", "DELETE") and not entry.query and entry.path.count("/") == 2:
                location = entry.path.strip("/")
            else:
                continue
            if location in targets:
                raise BadRequest(
                    f"{entry.where} and Bundle.entry[{targets[location]}] both change {location}; "
                    "a transaction may change each resource once",
                    expression=entry.where,
                )
            targets[location] = entry.index
            if entry.full_url:
                mapping[entry.full_url] = location
        return new_ids, mapping

    # -- one entry through the ordinary use cases ----------------------------------------------

    def _run(
        self,
        entry: Entry,
        outer: FhirRequest,
        deps: Dependencies,
        body: Any,
        *,
        new_id: str | None = None,
        resolution: Resolution | None = None,
    ) -> FhirResponse:
        request = entry_request(entry, outer, body)
        method = "GET" if entry.method == "HEAD" else entry.method
        route, params = self.routes.match(method, entry.path)
        check_path_params(params)  # what the HTTP mapping checks of a request's path (fhirflow.pathparams)
        use_case = self.use_cases.get(route.interaction)
        if use_case is None:
            raise BadRequest(
                f"{entry.where}: {entry.method} {entry.url[:120]} is not supported inside a Bundle",
                expression=f"{entry.where}.request",
            )
        request.route = route.pattern
        request.path_params = params
        if route.interaction in ("create", "conditional-update") and (new_id is not None or resolution is not None):
            return use_case(deps, request, new_id=new_id, resolution=resolution)
        if route.interaction in ("conditional-delete", "conditional-patch") and resolution is not None:
            return use_case(deps, request, resolution=resolution)
        return use_case(deps, request)


def _status(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _etag(headers: dict[str, str]) -> dict[str, str]:
    out = {}
    if "ETag" in headers:
        out["etag"] = headers["ETag"]
    return out


def _response_entry(response: FhirResponse, outer: FhirRequest) -> dict[str, Any]:
    result: dict[str, Any] = {"status": _status(response.status)}
    headers = response.headers
    if "Location" in headers:
        result["location"] = headers["Location"]
    result.update(_etag(headers))
    entry: dict[str, Any] = {}
    if response.raw_json is not None:
        stored = response.parsed if response.parsed is not None else jsonio.loads(response.raw_json)
        result["lastModified"] = (stored.get("meta") or {}).get("lastUpdated")
        preference = prefer_return(outer) if response.honours_prefer_return else "representation"
        if preference == "representation":
            entry["fullUrl"] = f"{outer.base_url}/{stored.get('resourceType')}/{stored.get('id')}"
            entry["resource"] = orjson.Fragment(response.raw_json)  # the stored bytes, not re-serialised
        elif preference == "OperationOutcome":
            result["outcome"] = {
                "resourceType": "OperationOutcome",
                "issue": [Issue("informational", "ok", severity="information").to_json()],
            }
    elif response.resource is not None:
        entry["resource"] = response.resource
    entry["response"] = {k: v for k, v in result.items() if v is not None}
    return entry


def _error_entry(error: FhirError, entry: Entry) -> dict[str, Any]:
    outcome = outcome_for(entry_failure(error, entry))
    return {"response": {"status": _status(error.status), "outcome": outcome}}
