"""The template's state machines, run: moto stores them but cannot run their Lambda tasks
(no Docker here) and has no ``StartSyncExecution``. Inside the moto server (a thread of the test
process) this runs an execution the way Step Functions would: the workflow definition the
template was synthesized from (fhirflow_bundle.transaction.definition), each ``Task`` invoking
the function the template substitutes for it, in that function's own process — so the steps'
calls are recorded and checked like any other function's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from tests.support.stack.provision import ExecutedStack


def _task_functions(stack: ExecutedStack, machine_arn: str) -> dict[str, str]:
    """Task name → the logical id of the function the template substitutes for it."""
    for logical_id, resource in stack.cloud.of_type("AWS::StepFunctions::StateMachine").items():
        if stack.cloud.attributes[(logical_id, "Arn")] != machine_arn:
            continue
        found: dict[str, str] = {}
        for key, value in resource["Properties"].get("DefinitionSubstitutions", {}).items():
            if key.endswith("FunctionArn") and "Fn::GetAtt" in value:
                found[key.removesuffix("FunctionArn").lower()] = value["Fn::GetAtt"][0]
        return found
    raise KeyError(f"no state machine {machine_arn} in the template")


def _failure(error_type: str, message: str) -> Exception:
    """An exception named as the function's error, which is what Retry and Catch match on."""
    return type(error_type, (Exception,), {})(message)


def runner(stack: ExecutedStack, machine_arn: str) -> Any:
    from fhirflow.workflow import LocalRunner
    from fhirflow_bundle.transaction.definition import transaction_workflow

    functions = _task_functions(stack, machine_arn)

    def task(name: str) -> Callable[[Any], Any]:
        def invoke(data: Any) -> Any:
            answer = stack.invoke(functions[name], data)
            if "errorType" in answer:
                raise _failure(answer["errorType"], answer["errorMessage"])
            return answer["result"]

        return invoke

    workflow = transaction_workflow()
    return LocalRunner(workflow, {name: task(name) for name in workflow.tasks()}, sleep=lambda _: None)


@contextmanager
def executing(stack: ExecutedStack) -> Iterator[None]:
    from moto.core.responses import ActionResult
    from moto.stepfunctions.models import StepFunctionBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    lock = threading.Lock()  # one execution at a time: the function processes serve one call each
    failures = stack.workflow_failures

    def start_sync_execution(self: Any) -> Any:
        arn = self._get_param("stateMachineArn")
        data = json.loads(self._get_param("input", if_none="{}"))
        with lock:
            execution = runner(stack, arn).run(data)
        now = datetime.now(UTC)
        response: dict[str, Any] = {
            "executionArn": arn.replace(":stateMachine:", ":express:") + ":sync",
            "stateMachineArn": arn,
            "startDate": now,
            "stopDate": now,
            "status": execution.status,
        }
        if execution.status == "SUCCEEDED":
            response["output"] = json.dumps(execution.output)
        else:
            response.update(error=execution.error, cause=execution.cause)
            failures.append(f"{arn}: {execution.error}: {execution.cause}")
        return ActionResult(response)

    original_start = StepFunctionBackend.start_execution

    def start_execution(self: Any, state_machine_arn: str, name: str, execution_input: str) -> Any:
        execution = original_start(self, state_machine_arn, name, execution_input)

        def run() -> None:
            with lock:
                result = runner(stack, state_machine_arn).run(json.loads(execution_input))
            execution.output = json.dumps(result.output) if result.status == "SUCCEEDED" else None
            execution.error, execution.cause = result.error, result.cause
            execution.stop_date = datetime.now(UTC)
            execution.status = result.status
            if result.status != "SUCCEEDED":
                failures.append(f"{state_machine_arn}: {result.error}: {result.cause}")

        threading.Thread(target=run, daemon=True).start()
        return execution

    StepFunctionResponse.start_sync_execution = start_sync_execution  # type: ignore[attr-defined]
    StepFunctionBackend.start_execution = start_execution  # type: ignore[method-assign]
    try:
        yield
    finally:
        del StepFunctionResponse.start_sync_execution  # type: ignore[attr-defined]
        StepFunctionBackend.start_execution = original_start  # type: ignore[method-assign]
