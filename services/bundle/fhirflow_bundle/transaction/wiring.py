"""Which committer, executor and jobs a process uses, from its settings (part of the composition root).

- SQLite (embedded): the store commits a transaction of any size in one SQL transaction.
- DynamoDB: one TransactWriteItems when it fits, else the multi-batch protocol through the bundle
  workflow: Step Functions when the stack configured the state machines (AWS), else the same
  workflow in-process (``fhirflow serve --store dynamodb``, tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fhirflow.ports import TransactionCommitter, WorkflowExecutor
from fhirflow_bundle.transaction.commit import ProtocolCommitter, StoreCommitter
from fhirflow_bundle.transaction.jobs import AsyncJobs
from fhirflow_bundle.transaction.steps import AppFactory, TransactionSteps

if TYPE_CHECKING:
    from fhirflow.adapters.aws.dynamodb_transactions import DynamoDbTransactions
    from fhirflow.runtime import Dependencies
    from fhirflow.settings import Settings


SWEEP_INTERVAL_SECONDS = 60.0
"""How often the sweeper runs: the EventBridge schedule in AWS, the local worker's interval here."""


@dataclass
class TransactionParts:
    committer: TransactionCommitter
    executor: WorkflowExecutor
    jobs: AsyncJobs
    steps: TransactionSteps


def build_transactions(deps: Dependencies) -> DynamoDbTransactions | None:
    """The protocol's operations, where the store is DynamoDB."""
    if deps.settings.store != "dynamodb":
        return None
    from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore
    from fhirflow.adapters.aws.dynamodb_transactions import DynamoDbTransactions

    if not isinstance(deps.store, DynamoDbResourceStore):
        return None
    settings = deps.settings
    return DynamoDbTransactions(
        deps.store,
        batch_items=settings.transaction_batch_items,
        timeout_seconds=settings.transaction_timeout_seconds,
        apply_grace_seconds=settings.transaction_apply_grace_seconds,
    )


def build_executor(settings: Settings, steps: TransactionSteps) -> WorkflowExecutor:
    if settings.transaction_state_machine or settings.transaction_async_state_machine:
        from fhirflow.adapters.aws.stepfunctions import StepFunctionsWorkflowExecutor

        return StepFunctionsWorkflowExecutor(
            settings.transaction_state_machine, settings.transaction_async_state_machine, region=settings.aws_region
        )
    from fhirflow.workflow import LocalRunner
    from fhirflow.workflow.local import LocalWorkflowExecutor
    from fhirflow_bundle.transaction.definition import transaction_workflow

    concurrency = settings.transaction_max_concurrency
    workflow = transaction_workflow(max_concurrency=concurrency)
    return LocalWorkflowExecutor(lambda: LocalRunner(workflow, steps.tasks(), max_concurrency=concurrency))


def build_parts(deps: Dependencies, app_factory: AppFactory) -> TransactionParts:
    settings = deps.settings
    transactions = build_transactions(deps)
    steps = TransactionSteps(
        store=deps.store,
        transactions=transactions,
        jobs=None,
        app_factory=app_factory,
        direct_max_items=settings.transaction_direct_max_items,
    )
    executor = build_executor(settings, steps)
    steps.jobs = AsyncJobs(deps.blobs, executor)
    committer: TransactionCommitter
    if transactions is None:
        committer = StoreCommitter(deps.store)
    else:
        # Step Functions runs the workflow behind API Gateway's 29 s: large ones must go async.
        deadline = settings.transaction_state_machine is not None
        committer = ProtocolCommitter(
            deps.store,
            transactions,
            executor,
            direct_max_items=settings.transaction_direct_max_items,
            sync_max_items=settings.transaction_sync_max_items if deadline else None,
        )
    return TransactionParts(committer=committer, executor=executor, jobs=steps.jobs, steps=steps)


class LocalSweeper:
    """The sweeper's schedule in ``fhirflow serve --store dynamodb`` (a ``fhirflow.local.worker``
    drainer): finishes or rolls back multi-batch transactions left past due."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._transactions: DynamoDbTransactions | None = None
        self._built = False

    def drain(self) -> int:
        """One sweep; how many transactions it brought to an end."""
        if not self._built:
            from fhirflow.runtime import build_dependencies

            self._transactions = build_transactions(build_dependencies(self.settings))
            self._built = True
        return len(self._transactions.sweep()) if self._transactions is not None else 0
