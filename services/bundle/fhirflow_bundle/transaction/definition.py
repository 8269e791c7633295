"""The bundle workflow, defined once: Step Functions runs its ASL in AWS (both the Express state
machine for ordinary transactions and the Standard one for ``Prefer: respond-async``), the
LocalRunner runs the same states in the embedded mode (DESIGN.md §3, §6).

::

    Route ─(txId given)─▶ Stage ─▶ Lock ─▶ Commit ─▶ Apply ─▶ Finish ─▶ Committed
      └─▶ Prepare ─▶ Prepared? ─(answered)─▶ Answered          ▲
                        └─(prepared)─▶ Stage                     │
    Stage, Lock, Commit ─(any error)─▶ Rollback ─▶ RolledBack? ──┘ (it had committed after all)
                                                      └─▶ Aborted

The synchronous path prepares in the bundle service (it already ran every entry) and starts at
``Stage``; the asynchronous one starts at ``Prepare``, which runs the bundle from the stored
request. After ``Commit`` the transaction has happened: a failing ``Apply`` or ``Finish`` still
ends in ``Committed`` (readers roll forward; the sweeper finishes the apply). Every task is
idempotent, so Retry may repeat any of them.
"""

from __future__ import annotations

from fhirflow.workflow import (
    ALL_ERRORS,
    And,
    Catch,
    Choice,
    Fail,
    IsPresent,
    Map,
    Pass,
    Retry,
    Rule,
    StringEquals,
    Succeed,
    Task,
    Workflow,
)

TASKS = ("prepare", "stage", "lock", "commit", "apply", "finish", "rollback")
"""The task keys: one Lambda each in AWS, one method of ``TransactionSteps`` locally."""

TRANSIENT_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "ServiceUnavailable",
)
"""Worth retrying: Lambda's own failures, and the data store's throttling (our 503)."""

DEFAULT_MAX_CONCURRENCY = 10


def _batches(name: str, task: str, *, retry: Retry) -> Workflow:
    """One task per batch, the Map's item processor."""
    return Workflow(start_at=f"{name}Batch", states=(Task(f"{name}Batch", task, retry=(retry,)),))


def transaction_workflow(
    *, max_concurrency: int = DEFAULT_MAX_CONCURRENCY, timeout_seconds: int | None = None
) -> Workflow:
    transient = Retry(TRANSIENT_ERRORS, max_attempts=4, interval_seconds=1, backoff_rate=2.0)
    persistent = Retry(TRANSIENT_ERRORS, max_attempts=8, interval_seconds=1, backoff_rate=2.0, max_delay_seconds=20)
    to_rollback = Catch((ALL_ERRORS,), "Rollback", "$.error")
    per_batch = {"txId.$": "$.txId", "batch.$": "$$.Map.Item.Value"}

    def batches(name: str, task: str, retry: Retry, *, then: str, catch: Catch, comment: str) -> Map:
        return Map(
            name,
            items_path="$.batches",
            processor=_batches(name, task, retry=retry),
            item_selector=per_batch,
            max_concurrency=max_concurrency,
            next=then,
            catch=(catch,),
            result_path=None,
            comment=comment,
        )

    states = (
        Choice(
            "Route",
            (Rule(IsPresent("$.txId"), "Stage"),),
            default="Prepare",
            comment="Prepared by the caller (synchronous), or to prepare from a stored request (respond-async)",
        ),
        Task(
            "Prepare",
            "prepare",
            next="Prepared",
            retry=(transient,),
            catch=(Catch((ALL_ERRORS,), "PrepareFailed"),),
            comment="Run the bundle's entries; answer at once when it fits one write or fails, else prepare",
        ),
        Choice(
            "Prepared",
            (Rule(And((IsPresent("$.status"), StringEquals("$.status", "prepared"))), "Stage"),),
            default="Answered",
        ),
        Succeed("Answered", comment="The response is stored; there is nothing to commit in batches"),
        Fail("PrepareFailed", "PrepareFailed", "The bundle could not be prepared; nothing was written"),
        batches("Stage", "stage", transient, then="Lock", catch=to_rollback, comment="Stage the new versions"),
        batches("Lock", "lock", transient, then="Commit", catch=to_rollback, comment="Lock every head"),
        Task(
            "Commit",
            "commit",
            next="Apply",
            retry=(transient,),
            catch=(to_rollback,),
            comment="The commit point: one conditional write, PREPARED → COMMITTED",
        ),
        batches(
            "Apply",
            "apply",
            persistent,
            then="Finish",
            catch=Catch((ALL_ERRORS,), "Committed", "$.applyError"),
            comment="Move the heads to the new versions; what is left, the sweeper finishes",
        ),
        Task(
            "Finish",
            "finish",
            next="Committed",
            retry=(persistent,),
            catch=(Catch((ALL_ERRORS,), "Committed", "$.finishError"),),
        ),
        Pass("Committed", result="committed", result_path="$.status"),
        Task(
            "Rollback",
            "rollback",
            next="RolledBack",
            retry=(persistent,),
            catch=(Catch((ALL_ERRORS,), "RollbackFailed", "$.rollbackError"),),
            comment="Decide ABORTED unless it committed, then delete staged versions and release locks",
        ),
        Choice(
            "RolledBack",
            (Rule(And((IsPresent("$.decision"), StringEquals("$.decision", "committed"))), "Apply"),),
            default="Aborted",
        ),
        Pass("Aborted", result="aborted", result_path="$.status"),
        Fail("RollbackFailed", "RollbackFailed", "The rollback did not finish; the sweeper will"),
    )
    return Workflow(
        start_at="Route",
        states=states,
        comment="fhirflow FHIR transaction: multi-batch commit protocol on DynamoDB (DESIGN.md §3)",
        timeout_seconds=timeout_seconds,
    )
