"""``StepFunctionsWorkflowExecutor``: the bundle workflow on AWS Step Functions (``WorkflowExecutor``).

Two state machines are deployed from the one definition (infra/fhirflow_infra/transactions.py): an
Express one that the bundle service runs synchronously (``StartSyncExecution``, inside API
Gateway's time limit) and a Standard one for ``Prefer: respond-async``, started by name and
described by the status endpoint (Express executions cannot be described).
"""

from __future__ import annotations

import json
from typing import Any

from fhirflow.adapters.aws import clients
from fhirflow.ports import WorkflowResult

_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


class StepFunctionsWorkflowExecutor:
    def __init__(
        self,
        sync_state_machine: str | None,
        async_state_machine: str | None,
        *,
        client: Any = None,
        region: str | None = None,
    ) -> None:
        self.sync_state_machine = sync_state_machine
        self.async_state_machine = async_state_machine
        self.client = client or clients.client("stepfunctions", region=region)

    def run(self, payload: dict[str, Any]) -> WorkflowResult:
        if not self.sync_state_machine:
            raise RuntimeError("no Express state machine is configured (FHIRFLOW_TRANSACTION_STATE_MACHINE)")
        with clients.translated("The transaction workflow"):
            reply = self.client.start_sync_execution(
                stateMachineArn=self.sync_state_machine, input=json.dumps(payload, separators=(",", ":"))
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
