"""``StepFunctionsWorkflowExecutor``: the bundle workflow on AWS Step Functions (``WorkflowExecutor``).

Two state machines are deployed from the one definition (infra/fhirflow_infra/transactions.py): an
Express one that the bundle service runs synchronously (``StartSyncExecution``, inside API
Gateway's time limit) and a Standard one for ``Prefer: respond-async``, started by name and
described by the status endpoint (Express executions cannot be described).

A synchronous run must fit API Gateway's 29 s and the bundle Lambda's own timeout, and must never
leave the client with an error while its transaction commits afterwards. So ``StartSyncExecution``
is sent once (no SDK retry could start a second execution of the same transaction), named by the
transaction id, with a read timeout longer than the Express machine's own ``TimeoutSeconds``
(:data:`SYNC_EXECUTION_SECONDS`, which the stack writes into the machine): the answer, not a
timeout, says how the execution ended, and the caller still has time to decide the outcome
(``ProtocolCommitter.settle``).
"""

from __future__ import annotations

import json
from typing import Any

from fhirflow.adapters.aws import clients
from fhirflow.ports import WorkflowResult

_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
SYNC_EXECUTION_SECONDS = 18
"""The Express machine's ``TimeoutSeconds``: what a synchronous transaction may spend in the
workflow, leaving the bundle Lambda (28 s) time to read and prepare the bundle before it and to
decide and answer after it."""
SYNC_READ_TIMEOUT_SECONDS = SYNC_EXECUTION_SECONDS + 4
"""Longer than any execution may last: ``StartSyncExecution`` answers (TIMED_OUT at worst) first."""


class StepFunctionsWorkflowExecutor:
    def __init__(
        self,
        sync_state_machine: str | None,
        async_state_machine: str | None,
        *,
        client: Any = None,
        sync_client: Any = None,
        region: str | None = None,
    ) -> None:
        self.sync_state_machine = sync_state_machine
        self.async_state_machine = async_state_machine
        # Starting a Standard execution by name is idempotent, so that client keeps the SDK's retries.
        self.client = client or clients.client("stepfunctions", region=region)
        self.sync_client = sync_client or client or sync_execution_client(region)

    def run(self, payload: dict[str, Any]) -> WorkflowResult:
        if not self.sync_state_machine:
            raise RuntimeError("no Express state machine is configured (FHIRFLOW_TRANSACTION_STATE_MACHINE)")
        with clients.translated("The transaction workflow"):
            reply = self.sync_client.start_sync_execution(
                stateMachineArn=self.sync_state_machine,
                name=execution_name(payload),
                input=json.dumps(payload, separators=(",", ":")),
            )
        return _result(reply)

    def start(self, name: str, payload: dict[str, Any]) -> None:
        if not self.async_state_machine:
            raise RuntimeError("no Standard state machine is configured (FHIRFLOW_TRANSACTION_ASYNC_STATE_MACHINE)")
        with clients.translated("The transaction workflow"):
            self.client.start_execution(
                stateMachineArn=self.async_state_machine, name=name, input=json.dumps(payload, separators=(",", ":"))
            )

    def describe(self, name: str) -> WorkflowResult | None:
        if not self.async_state_machine:
            return None
        arn = execution_arn(self.async_state_machine, name)
        try:
            with clients.translated("The transaction workflow"):
                reply = self.client.describe_execution(executionArn=arn)
        except self.client.exceptions.ExecutionDoesNotExist:
            return None
        return _result(reply)


def sync_execution_client(region: str | None) -> Any:
    """The client for ``StartSyncExecution``: one attempt, and it outwaits the execution."""
    return clients.client(
        "stepfunctions", region=region, config=clients.single_attempt(read_timeout=SYNC_READ_TIMEOUT_SECONDS)
    )


def execution_name(payload: dict[str, Any]) -> str:
    """The transaction id: one execution per transaction, and its logs name the transaction."""
    tx_id = payload.get("txId")
    if not isinstance(tx_id, str) or not tx_id:
        raise ValueError("a synchronous workflow run needs the transaction id (txId)")
    return tx_id


def execution_arn(state_machine_arn: str, name: str) -> str:
    """``arn:aws:states:region:account:stateMachine:M`` → ``...:execution:M:name``."""
    prefix, _, machine = state_machine_arn.rpartition(":stateMachine:")
    return f"{prefix}:execution:{machine}:{name}"


def _result(reply: dict[str, Any]) -> WorkflowResult:
    status = str(reply.get("status", "FAILED"))
    output = reply.get("output")
    return WorkflowResult(
        status if status in _STATUSES else "FAILED",  # type: ignore[arg-type]
        output=json.loads(output) if output else None,
        error=reply.get("error"),
        cause=reply.get("cause"),
    )
