"""The bundle workflow's task steps: plain functions of the state (a JSON object) to the next state.

In AWS each is one Lambda (:mod:`fhirflow_bundle.transaction.handlers` wraps them); in the embedded
mode the LocalRunner calls them. Each is idempotent, as Step Functions' Retry requires: the
protocol operations of :class:`~fhirflow.adapters.aws.dynamodb_transactions.DynamoDbTransactions`
are, and the job answers they store are overwritten with the same content.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fhirflow_bundle.transaction.commit import PreparingCommitter, aborted, conflict_for
from fhirflow_bundle.transaction.jobs import AsyncJobs

if TYPE_CHECKING:
    from fhirflow.adapters.aws.dynamodb_transactions import DynamoDbTransactions, SweepResult
    from fhirflow.authz.principal import Principal
    from fhirflow.http import Application
    from fhirflow.ports import ResourceStore

State = dict[str, Any]
AppFactory = Callable[[PreparingCommitter, str, "Principal | None"], "Application"]
"""Builds the bundle service's Application around a committer, for a server base URL, running as
the principal the stored request was authenticated as."""


class TransactionSteps:
    def __init__(
        self,
        *,
        store: ResourceStore,
        transactions: DynamoDbTransactions | None,
        jobs: AsyncJobs | None,
        app_factory: AppFactory | None,
        direct_max_items: int,
    ) -> None:
        self.store = store
        self.transactions = transactions
        self.jobs = jobs
        self.app_factory = app_factory
        self.direct_max_items = direct_max_items

    def tasks(self) -> dict[str, Callable[[State], State]]:
        """Task key → step, for the LocalRunner (the same keys the ASL resolves to Lambda ARNs)."""
        return {
            "prepare": self.prepare,
            "stage": self.stage,
            "lock": self.lock,
            "commit": self.commit,
            "apply": self.apply,
            "finish": self.finish,
            "rollback": self.rollback,
        }

    def _tx(self) -> DynamoDbTransactions:
        if self.transactions is None:
            raise RuntimeError("multi-batch transactions need the DynamoDB store")
        return self.transactions

    def _jobs(self) -> AsyncJobs:
        if self.jobs is None or self.app_factory is None:
            raise RuntimeError("asynchronous requests are not configured")
        return self.jobs

    # -- prepare (respond-async only) ------------------------------------------------------------

    def prepare(self, state: State) -> State:
        """Run the stored bundle. What fits one write commits here; a larger transaction is prepared
        and goes on through the workflow; any failure is the job's answer."""
        jobs = self._jobs()
        assert self.app_factory is not None
        job = str(state["job"])
        event, root, principal = jobs.request_event(job)
        committer = PreparingCommitter(self.store, self.transactions, direct_max_items=self.direct_max_items)
        answer = self.app_factory(committer, root, principal).resolve(event)
        if committer.prepared is not None:
            if int(answer.get("statusCode", 500)) < 300:
                jobs.save_prepared(job, answer, committer.labels)
                return {"status": "prepared", "job": job, **committer.prepared.workflow_input()}
            self._tx().rollback(committer.prepared.tx_id)  # prepared, then failed answering: undo at once
        jobs.save_answer(job, answer)
        return {"status": "answered", "job": job}

    # -- the protocol ------------------------------------------------------------------------------

    def stage(self, state: State) -> State:
        self._tx().stage(str(state["txId"]), int(state["batch"]))
        return state

    def lock(self, state: State) -> State:
        self._tx().lock(str(state["txId"]), int(state["batch"]))
        return state

    def commit(self, state: State) -> State:
        self._tx().commit(str(state["txId"]))
        if "job" in state:
            self._jobs().promote(str(state["job"]))
        return state

    def apply(self, state: State) -> State:
        self._tx().apply(str(state["txId"]), int(state["batch"]))
        return state

    def finish(self, state: State) -> State:
        self._tx().finish(str(state["txId"]))
        return state

    def rollback(self, state: State) -> State:
        decision = self._tx().rollback(str(state["txId"]))
        if decision == "aborted" and "job" in state:
            jobs = self._jobs()
            job = str(state["job"])
            jobs.save_failure(job, conflict_for(aborted(state.get("error")), jobs.labels(job)))
        elif decision == "committed" and "job" in state:
            self._jobs().promote(str(state["job"]))
        return {**state, "decision": decision}

    # -- the sweeper (an EventBridge schedule in AWS) ------------------------------------------------

    def sweep(self) -> list[SweepResult]:
        return self._tx().sweep()
