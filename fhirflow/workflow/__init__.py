"""State machines defined once in Python: rendered to ASL for Step Functions, run in-process by the
:class:`~fhirflow.workflow.runner.LocalRunner` (DESIGN.md §3, §6)."""

from fhirflow.workflow.dsl import (
    ALL_ERRORS,
    TASK_FAILED,
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
from fhirflow.workflow.runner import Execution, LocalRunner, StateFailure

__all__ = [
    "ALL_ERRORS",
    "TASK_FAILED",
    "And",
    "Catch",
    "Choice",
    "Execution",
    "Fail",
    "IsPresent",
    "LocalRunner",
    "Map",
    "Pass",
    "Retry",
    "Rule",
    "StateFailure",
    "StringEquals",
    "Succeed",
    "Task",
    "Workflow",
]
