"""Committers: how a transaction's unit of work reaches the store (the ``TransactionCommitter`` port).

- :class:`StoreCommitter`: the store's own atomic ``commit`` (SQLite: one SQL transaction at any size).
- :class:`ProtocolCommitter` (DynamoDB): one TransactWriteItems when the changes fit in it, else
  the multi-batch protocol, prepared here and run by the bundle workflow (Step Functions' Express
  state machine in AWS, the LocalRunner in the embedded mode).
- :class:`PreparingCommitter`: the asynchronous path's ``Prepare`` step: commits what fits at once,
  only prepares the rest, and lets the workflow that is already running carry it on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fhirflow.errors import Conflict, FhirError, PayloadTooLarge, ServiceUnavailable
from fhirflow.ports import Change, ClaimTaken, ResourceStore, VersionConflict, WorkflowExecutor, WorkflowResult

if TYPE_CHECKING:
    # The DynamoDB side (botocore) loads only where DynamoDB is the store: not in the embedded mode.
    from fhirflow.adapters.aws.dynamodb_transactions import DynamoDbTransactions, PreparedTransaction

logger = logging.getLogger("fhirflow.bundle")

DIRECT_MAX_ITEMS = 100
"""TransactWriteItems' own limit: a head per resource plus a version per change."""


def transaction_items(changes: Sequence[Change]) -> int:
    """The TransactWriteItems items a direct commit needs: one version per change, one head per
    resource, one uniqueness item per claim (conditional creates)."""
    claims = sum(1 for c in changes if c.claim is not None)
    return len(changes) + len({(c.new.tenant, c.new.type, c.new.id) for c in changes}) + claims


class StoreCommitter:
    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    def commit(self, changes: Sequence[Change], *, labels: Sequence[str] = ()) -> None:
        self.store.commit(changes)


class ProtocolCommitter:
    def __init__(
        self,
        store: ResourceStore,
        transactions: DynamoDbTransactions,
        executor: WorkflowExecutor,
        *,
        direct_max_items: int = DIRECT_MAX_ITEMS,
        sync_max_items: int | None = None,
    ) -> None:
        self.store = store
        self.transactions = transactions
        self.executor = executor
        self.direct_max_items = min(direct_max_items, DIRECT_MAX_ITEMS)
        self.sync_max_items = sync_max_items
        """Where the workflow runs under a deadline (Step Functions behind API Gateway): the most
        items a synchronous transaction may need; None: no limit (the in-process runner)."""

    def commit(self, changes: Sequence[Change], *, labels: Sequence[str] = ()) -> None:
        needed = transaction_items(changes)
        if needed <= self.direct_max_items:
            self.store.commit(changes)
            return
        if self.sync_max_items is not None and needed > self.sync_max_items:
            # Refused before anything is written: a transaction that cannot finish in time would
            # leave the client a timeout while it commits (or not) afterwards.
            raise PayloadTooLarge(
                f"This transaction needs {needed} writes, more than the {self.sync_max_items} a synchronous "
                "transaction may make here; nothing was written. Send it again with the header "
                "'Prefer: respond-async' (http://hl7.org/fhir/R4/async.html) and poll for its answer.",
                expression="Bundle.entry",
            )
        prepared = self.transactions.prepare(changes, request_id=changes[0].request_id)
        try:
            result = self.executor.run(prepared.workflow_input())
        except Exception as exc:  # whatever the start did, settle decides the outcome
            # The execution may or may not have started (a lost connection, a throttled or failed
            # start): decide it now, so that a transaction this client is told failed never commits.
            result = WorkflowResult("FAILED", error=type(exc).__name__, cause="the workflow could not be run")
        self.settle(prepared, result)

    def settle(self, prepared: PreparedTransaction, result: WorkflowResult) -> None:
        """Return when the transaction committed; raise what the client is told otherwise."""
        output: Mapping[str, Any] = result.output if isinstance(result.output, dict) else {}
        if result.status == "SUCCEEDED" and output.get("status") == "committed":
            return
        if result.status == "SUCCEEDED" and output.get("status") == "aborted":
            raise aborted(output.get("error"))
        # The workflow itself failed (a rollback that could not finish, a timeout): make sure the
        # outcome is decided before answering. If it had committed, it has happened.
        logger.error(
            "transaction workflow ended without an outcome",
            extra={"tx": prepared.tx_id, "status": result.status, "error": result.error},
        )
        from fhirflow.adapters.aws.dynamodb_transactions import COMMITTED_STATES

        if self.transactions.decide_abort(prepared.tx_id) in COMMITTED_STATES:
            return
        raise ServiceUnavailable(
            "The transaction could not be completed and was rolled back; nothing was written. Retry shortly.",
            headers={"Retry-After": "1"},
        )


class PreparingCommitter:
    def __init__(
        self,
        store: ResourceStore,
        transactions: DynamoDbTransactions | None,
        *,
        direct_max_items: int = DIRECT_MAX_ITEMS,
    ) -> None:
        self.store = store
        self.transactions = transactions
        self.direct_max_items = min(direct_max_items, DIRECT_MAX_ITEMS)
        self.prepared: PreparedTransaction | None = None
        self.labels: list[str] = []

    def commit(self, changes: Sequence[Change], *, labels: Sequence[str] = ()) -> None:
        if self.transactions is None or transaction_items(changes) <= self.direct_max_items:
            self.store.commit(changes)
            return
        self.prepared = self.transactions.prepare(changes, request_id=changes[0].request_id)
        self.labels = list(labels)


def aborted(error: Any) -> Exception:
    """Why an aborted transaction failed, from the workflow's ``{"Error", "Cause"}``: a conflict on
    a change (``VersionConflict``, which the bundle names by entry) or a 503 to retry."""
    from fhirflow.adapters.aws.dynamodb_transactions import TransactionConflict

    name = error.get("Error") if isinstance(error, dict) else None
    if name == "TransactionConflict":
        message = _error_message(error.get("Cause"))
        taken = TransactionConflict.parse_claim(message)
        if taken is not None:
            return ClaimTaken(*taken)
        conflict = TransactionConflict.parse(message)
        if conflict is not None:
            return VersionConflict(*conflict)
    if name == "TransactionAborted":
        return ServiceUnavailable(
            "The transaction took longer than this server allows and was rolled back; nothing was written",
            headers={"Retry-After": "1"},
        )
    return ServiceUnavailable(
        "The transaction failed and was rolled back; nothing was written. Retry shortly.",
        headers={"Retry-After": "1"},
    )


def conflict_for(failure: Exception, labels: Sequence[str]) -> FhirError:
    """The client's answer for a failure of the commit, as the bundle service words it."""
    if isinstance(failure, ClaimTaken):
        where = labels[failure.index] if failure.index < len(labels) else "Bundle"
        return Conflict(
            f"{where}: another request created a resource matching this entry's conditional criteria while "
            "this transaction ran; nothing was written. Retry: the entry will then find that resource.",
            expression=where,
        )
    if isinstance(failure, VersionConflict):
        where = labels[failure.index] if failure.index < len(labels) else "Bundle"
        return Conflict(
            f"{where}: the resource was changed by another request while this transaction ran; nothing was written",
            expression=where,
        )
    if isinstance(failure, FhirError):
        return failure
    return ServiceUnavailable("The transaction failed; nothing was written", headers={"Retry-After": "1"})


def _error_message(cause: Any) -> str:
    """Lambda (and the LocalRunner) report an exception as ``{"errorMessage", "errorType", ...}``."""
    if not isinstance(cause, str):
        return ""
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause
    return str(parsed.get("errorMessage", "")) if isinstance(parsed, dict) else cause
