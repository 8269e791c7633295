"""``LocalWorkflowExecutor``: the embedded mode's Step Functions (the ``WorkflowExecutor`` port).

``run`` executes a workflow in the calling thread (an Express workflow's synchronous start);
``start`` runs it on a background thread under a name (a Standard workflow's execution), and
``describe`` reports on it while this process lives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from fhirflow.ports import WorkflowResult
from fhirflow.workflow.runner import Execution, LocalRunner

logger = logging.getLogger("fhirflow.workflow")


def result_of(execution: Execution) -> WorkflowResult:
    if execution.status == "SUCCEEDED":
        return WorkflowResult("SUCCEEDED", output=execution.output)
    return WorkflowResult("FAILED", error=execution.error, cause=execution.cause)


class LocalWorkflowExecutor:
    def __init__(self, runner: LocalRunner | Callable[[], LocalRunner]) -> None:
        self._runner = runner
        self._executions: dict[str, WorkflowResult] = {}
        self._lock = threading.Lock()

    @property
    def runner(self) -> LocalRunner:
        if not isinstance(self._runner, LocalRunner):
            self._runner = self._runner()  # built on first use: its tasks may need this executor
        return self._runner

    def run(self, payload: dict[str, Any]) -> WorkflowResult:
        return result_of(self.runner.run(payload))

    def start(self, name: str, payload: dict[str, Any]) -> None:
        with self._lock:
            if name in self._executions:
                raise ValueError(f"an execution named {name} exists already")
            self._executions[name] = WorkflowResult("RUNNING")
        thread = threading.Thread(target=self._background, args=(name, payload), name=f"workflow-{name[:8]}")
        thread.daemon = True
        thread.start()

    def _background(self, name: str, payload: dict[str, Any]) -> None:
        try:
            result = self.run(payload)
        except Exception as exc:  # an error outside any task: the execution fails, like Step Functions'
            logger.exception("workflow execution failed", extra={"execution": name})
            result = WorkflowResult("FAILED", error=type(exc).__name__, cause=str(exc))
        with self._lock:
            self._executions[name] = result

    def describe(self, name: str) -> WorkflowResult | None:
        with self._lock:
            return self._executions.get(name)
